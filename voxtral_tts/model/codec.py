"""Block 3: the codec decoder — codes [T, 37] to a 24 kHz waveform [T·1920] (spec §7).

Dequantise (semantic codebook row ++ FSQ values) → CausalConv1d k3 (replicate pad) →
[ALiBi transformer (window 2) → transposed conv ×2] ×3 → transformer (window 16) →
CausalConv1d k7 (reflect pad) → unpatch 240 samples per step.

Everything is causal: output sample t depends only on codes up to its frame, and on about 21
frames before it, which is what makes chunked decoding with left context exact (§7.7).
Weight norm is folded at load time (:mod:`.loading`); these modules hold plain conv weights.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..config import N_AUDIO_SPECIAL, CodecArgs
from .layers import FeedForward, Linear, RMSNorm, attend


class CausalConv1d(nn.Module):
    """Left-padded convolution (pad k − s, ``replicate`` or ``reflect``), output length L for s = 1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, pad_mode: str):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, bias=False)
        self.kernel, self.stride, self.pad_mode = kernel, stride, pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel, self.stride
        length = x.shape[-1]
        left = k - s
        right = (math.ceil((length - k + left) / s + 1) - 1) * s + (k - left) - length if s > 1 else 0
        if self.pad_mode == "reflect" and length <= left:
            # reflect needs more samples than the pad: extend with zeros, trimmed after (reference)
            extra = left - length + 1
            x = F.pad(x, (0, extra))
            y = self.conv(F.pad(x, (left, right), mode="reflect"))
            return y[..., : y.shape[-1] - extra]
        return self.conv(F.pad(x, (left, right), mode=self.pad_mode))


class CausalConvTranspose1d(nn.Module):
    """Full transposed convolution, then ``k − s`` samples trimmed on the right: length L·s."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_ch, out_ch, kernel, stride=stride, bias=False)
        self.trim = kernel - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y[..., : y.shape[-1] - self.trim] if self.trim else y


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """r^h for h = 0..n−1 with r = 2^(−8/n): 1, 1/2, …, 1/128 for 8 heads (spec §9.1 verdict)."""
    r = 2.0 ** (-8.0 / n_heads)
    return torch.tensor([r**h for h in range(n_heads)], dtype=torch.float32)


def windowed_alibi_bias(length: int, window: int, slopes: torch.Tensor, device=None) -> torch.Tensor:
    """Additive attention bias [H, L, L]: slope·(j − i) for i − W ≤ j ≤ i, −inf elsewhere."""
    pos = torch.arange(length, device=device)
    rel = (pos[None, :] - pos[:, None]).float()  # j − i
    allowed = (rel <= 0) & (rel >= -window)
    bias = slopes.to(device)[:, None, None] * rel[None]
    return bias.masked_fill(~allowed[None], float("-inf"))


#: queries per block of :func:`banded_attend`
BAND_BLOCK = 64


def banded_alibi_bias(length: int, window: int, slopes: torch.Tensor, device=None) -> torch.Tensor:
    """:func:`windowed_alibi_bias` cut into the blocks :func:`banded_attend` computes: [H, n, K, K + W]
    for n = ⌈L / K⌉ blocks of K = :data:`BAND_BLOCK` queries, each against its K + W keys (from W
    before the block's first query); −inf outside the window and before the sequence's start."""
    block = BAND_BLOCK
    n = -(-length // block)
    query = torch.arange(n * block, device=device).view(n, block, 1)
    key = (torch.arange(n, device=device) * block - window).view(n, 1, 1) + torch.arange(block + window, device=device)
    rel = (key - query).float()  # j − i
    allowed = (rel <= 0) & (rel >= -window) & (key >= 0)
    bias = slopes.to(device)[:, None, None, None] * rel[None]
    return bias.masked_fill(~allowed[None], float("-inf"))


def banded_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, band: torch.Tensor, scale: float) -> torch.Tensor:
    """Sliding-window attention computed block by block: q [B, H, L, hd], k and v [B, Hkv, L, hd],
    ``band`` from :func:`banded_alibi_bias`. The same softmax as :func:`.layers.attend` with the full
    [L, L] bias, at O(L·(K + W)) instead of O(L²): what makes differentiating long decodes cheap."""
    B, H, L, hd = q.shape
    _, n, block, width = band.shape
    window = width - block
    rep = H // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    pad = n * block - L
    queries = F.pad(q.float() * scale, (0, 0, 0, pad)).view(B, H, n, block, hd)
    keys = F.pad(k.float(), (0, 0, window, pad)).unfold(2, width, block)  # [B, H, n, hd, K + W]
    values = F.pad(v.float(), (0, 0, window, pad)).unfold(2, width, block).transpose(-1, -2)
    probs = torch.softmax(queries @ keys + band, dim=-1)  # [B, H, n, K, K + W]
    return (probs @ values).reshape(B, H, n * block, hd)[:, :, :L].to(q.dtype)


class CodecAttention(nn.Module):
    def __init__(self, args: CodecArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        q_width, kv_width = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
        self.wq = Linear(args.dim, q_width)
        self.wk = Linear(args.dim, kv_width)
        self.wv = Linear(args.dim, kv_width)
        self.wo = Linear(q_width, args.dim)
        self.qk_norm = args.qk_norm
        if args.qk_norm:  # over the full width, before splitting heads
            self.q_norm = RMSNorm(q_width, args.qk_norm_eps)
            self.k_norm = RMSNorm(kv_width, args.qk_norm_eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``bias``: [H, L, L] from :func:`windowed_alibi_bias`, or its blocks [H, n, K, K + W] from
        :func:`banded_alibi_bias` (then attention is computed on the band: :func:`banded_attend`)."""
        B, L, _ = x.shape
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        scale = 1.0 / math.sqrt(self.head_dim)
        out = banded_attend(q, k, v, bias, scale) if bias.dim() == 4 else attend(q, [(k, v, bias)], scale)
        return self.wo(out.transpose(1, 2).reshape(B, L, -1))


class CodecLayer(nn.Module):
    """Pre-norm layer with QK-norm, ALiBi and LayerScale; norms use the codec's eps (0.01)."""

    def __init__(self, args: CodecArgs):
        super().__init__()
        self.attention = CodecAttention(args)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.layer_scale = args.layer_scale
        if args.layer_scale:
            self.attention_scale = nn.Parameter(torch.ones(args.dim))
            self.ffn_scale = nn.Parameter(torch.ones(args.dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        a = self.attention(self.attention_norm(x), bias)
        x = x + (self.attention_scale.float() * a if self.layer_scale else a)
        f = self.feed_forward(self.ffn_norm(x))
        return x + (self.ffn_scale.float() * f if self.layer_scale else f)


class CodecTransformer(nn.Module):
    """Sliding-window layers. ``banded`` (off by default, and in every export) computes attention on
    blocks of queries against their K + W keys instead of the full masked [L, L] scores: the same result, far
    less work on long sequences (codec inversion turns it on: :func:`banded_attention`)."""

    banded = False

    def __init__(self, args: CodecArgs, n_layers: int, window: int):
        super().__init__()
        self.window = window
        self.layers = nn.ModuleList(CodecLayer(args) for _ in range(n_layers))
        self.n_heads = args.n_heads
        self.init_buffers()

    def init_buffers(self) -> None:
        self.register_buffer("slopes", alibi_slopes(self.n_heads), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, L] (conv layout) → [B, C, L]."""
        h = x.transpose(1, 2)
        make_bias = banded_alibi_bias if self.banded else windowed_alibi_bias
        bias = make_bias(h.shape[1], self.window, self.slopes, device=h.device)
        for layer in self.layers:
            h = layer(h, bias)
        return h.transpose(1, 2)


@contextmanager
def banded_attention(decoder: nn.Module):
    """Within the block, every :class:`CodecTransformer` of ``decoder`` computes banded attention."""
    stages = [m for m in decoder.modules() if isinstance(m, CodecTransformer)]
    before = [m.banded for m in stages]
    for m in stages:
        m.banded = True
    try:
        yield decoder
    finally:
        for m, was in zip(stages, before):
            m.banded = was


class CodecDecoder(nn.Module):
    """``audio_tokenizer`` of the checkpoint: its decoder and the quantizer's decode side."""

    def __init__(self, args: CodecArgs):
        super().__init__()
        self.args = args
        blocks: list[nn.Module] = []
        stages = zip(args.decoder_transformer_lengths, args.decoder_convs_kernels, args.decoder_convs_strides)
        for stage, ((n_layers, kernel, stride), window) in enumerate(zip(stages, args.decoder_windows)):
            if stage == 0:
                blocks.append(CausalConv1d(args.latent_dim, args.dim, kernel, stride, "replicate"))
            elif stride > 1:
                blocks.append(CausalConvTranspose1d(args.dim, args.dim, kernel, stride))
            else:
                blocks.append(CausalConv1d(args.dim, args.dim, kernel, stride, "replicate"))
            blocks.append(CodecTransformer(args, n_layers, window))
        self.decoder_blocks = nn.ModuleList(blocks)
        self.output_proj = CausalConv1d(args.dim, args.patch_size, args.patch_proj_kernel_size, 1, "reflect")
        # embedding_sum / clamp(cluster_usage, 1e-5), computed in float32 at load (spec §7.1)
        self.register_buffer(
            "semantic_codebook", torch.zeros(args.semantic_codebook_size, args.semantic_dim), persistent=False
        )

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T, 37] with the +2 offset → latent [B, T, semantic_dim + acoustic_dim]."""
        levels = codes - N_AUDIO_SPECIAL
        semantic = self.semantic_codebook[levels[..., 0]]
        acoustic = levels[..., 1:].float() * (2.0 / (self.args.acoustic_codebook_size - 1)) - 1.0
        return torch.cat((semantic, acoustic), dim=-1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T, 37] → waveform [B, T · samples_per_frame], float32, unclipped."""
        x = self.dequantize(codes).transpose(1, 2)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.output_proj(x)  # [B, patch, 8T]
        return x.transpose(1, 2).reshape(x.shape[0], -1)
