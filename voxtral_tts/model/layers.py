"""Building blocks shared by the backbone and the flow head (spec §5, §6.3.2).

Every block computes in its input's dtype. The reference computes in float32, with weights
optionally stored in bf16 to halve memory (linear layers upcast them on use, which is exact). The
GPU path feeds bf16 activations to bf16 weights (fp32 accumulation in the matmuls) while norms'
statistics, RoPE tables and softmax stay float32 (spec §9.2).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .kv import LayerKV


class Linear(nn.Linear):
    """A bias-free linear layer computing in the input's dtype whatever the weight's storage dtype."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = Linear(dim, hidden_dim)
        self.w2 = Linear(hidden_dim, dim)
        self.w3 = Linear(dim, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [..., head_dim/2] for absolute positions [...], in float32 (spec §5 step 3)."""
    steps = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device)
    inv_freq = 1.0 / (theta ** (steps / head_dim))
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (2j, 2j+1) — Mistral's native convention. x: [B, H, L, hd]."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).flatten(-2).to(x.dtype)


def attend(q: torch.Tensor, blocks, scale: float) -> torch.Tensor:
    """Softmax attention of q [B, H, L, hd] over one or more key/value blocks, in float32.

    Each block is ``(k, v, mask)`` with k, v [B, Hkv, S, hd] and mask None, bool [L, S] or
    [B, L, S] (True = attend) or an additive float bias [H, L, S]. Scores of all blocks share one softmax, so a
    cache block and the new tokens' block are attended together without concatenating the cache.
    Grouped-query: query head h reads kv head h // (H / Hkv); k and v are never repeated.
    """
    B, H, L, hd = q.shape
    n_kv = blocks[0][0].shape[1]
    rep = H // n_kv
    if q.dtype != torch.float32 and len(blocks) == 1 and (blocks[0][2] is None or blocks[0][2].dtype == torch.bool):
        return attend_fused(q, *blocks[0], scale)
    qg = q.float().reshape(B, n_kv, rep * L, hd) * scale
    scores = []
    for k, _v, mask in blocks:
        s = qg @ k.float().transpose(-1, -2)  # [B, Hkv, rep·L, S]
        if mask is not None:
            if mask.dtype == torch.bool and mask.dim() == 3:  # per sequence
                s = s.masked_fill(~mask.repeat(1, rep, 1)[:, None], float("-inf"))
            elif mask.dtype == torch.bool:
                s = s.masked_fill(~mask.repeat(rep, 1), float("-inf"))
            else:
                s = s + mask.reshape(n_kv, rep * L, -1)
        scores.append(s)
    probs = torch.softmax(torch.cat(scores, dim=-1) if len(scores) > 1 else scores[0], dim=-1)
    out, start = None, 0
    for k, v, _ in blocks:
        part = probs[..., start : start + k.shape[2]] @ v.float()
        out = part if out is None else out + part
        start += k.shape[2]
    return out.reshape(B, H, L, hd).to(q.dtype)


def attend_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float):
    """:func:`attend` for bf16/fp16 inputs, as one fused kernel (``scaled_dot_product_attention``:
    fp32 accumulation and softmax inside, no upcast copy of the cache). The query heads of each kv
    head are folded into its query rows, as in :func:`attend`, so k and v are never repeated."""
    B, H, L, hd = q.shape
    n_kv = k.shape[1]
    rep = H // n_kv
    qg = q.reshape(B, n_kv, rep * L, hd)
    if mask is not None:
        mask = mask.repeat(1, rep, 1)[:, None] if mask.dim() == 3 else mask.repeat(rep, 1)
    out = F.scaled_dot_product_attention(qg, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, scale=scale)
    return out.reshape(B, H, L, hd)


class Attention(nn.Module):
    """Grouped-query attention: query head h reads kv head h // (n_heads / n_kv_heads)."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.scale = 1.0 / math.sqrt(head_dim)
        self.wq = Linear(dim, n_heads * head_dim)
        self.wk = Linear(dim, n_kv_heads * head_dim)
        self.wv = Linear(dim, n_kv_heads * head_dim)
        self.wo = Linear(n_heads * head_dim, dim)

    def project(self, x: torch.Tensor, rope=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, H, L, hd], k and v [B, Hkv, L, hd], RoPE applied when given."""
        B, L, _ = x.shape
        q = self.wq(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def output(self, out: torch.Tensor) -> torch.Tensor:
        B, _, L, _ = out.shape
        return self.wo(out.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv: LayerKV | None = None) -> torch.Tensor:
        """Attention of ``x``'s queries over the blocks ``kv`` returns for its new keys/values (see
        :mod:`.kv`: causal, a static cache, given past inputs); without ``kv``, over ``x`` unmasked."""
        q, k, v = self.project(x, rope)
        blocks = [(k, v, None)] if kv is None else kv.blocks(k, v)
        return self.output(attend(q, blocks, self.scale))


class TransformerBlock(nn.Module):
    """Pre-norm decoder layer (no biases), the form of both the backbone and the flow head."""

    def __init__(self, dim: int, hidden_dim: int, n_heads: int, n_kv_heads: int, head_dim: int, eps: float):
        super().__init__()
        self.attention = Attention(dim, n_heads, n_kv_heads, head_dim)
        self.feed_forward = FeedForward(dim, hidden_dim)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_norm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                kv: LayerKV | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope, kv)
        return x + self.feed_forward(self.ffn_norm(x))
