"""Block 1: the backbone, a Mistral decoder over prompt and audio-frame embeddings (spec §5, §6.4).

Module names follow the checkpoint keys (``layers.{i}.…``, ``norm``, ``mm_audio_embeddings.…``)
so that weights load by name. The KV cache is static (:class:`KVCache`): ``forward`` writes the
given positions in place and attends over everything up to them — one function for prefill
(many positions) and for the decode step (one position).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AudioArgs, BackboneArgs
from .layers import KVCache, RMSNorm, TransformerBlock, rope_angles


class CodebookEmbeddings(nn.Module):
    """The 37 codebooks in one [9088, D] table; codebook k starts at row ``offsets[k]``."""

    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.embeddings = nn.Embedding(rows, dim)


class AudioEmbeddings(nn.Module):
    def __init__(self, args: BackboneArgs, audio: AudioArgs):
        super().__init__()
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.audio_codebook_embeddings = CodebookEmbeddings(audio.codebook_table_rows, args.dim)


class Backbone(nn.Module):
    def __init__(self, args: BackboneArgs, audio: AudioArgs):
        super().__init__()
        self.args = args
        self.mm_audio_embeddings = AudioEmbeddings(args, audio)
        self.layers = nn.ModuleList(
            TransformerBlock(args.dim, args.hidden_dim, args.n_heads, args.n_kv_heads, args.head_dim, args.norm_eps)
            for _ in range(args.n_layers)
        )
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.audio = audio
        self.compute_dtype = torch.float32  # the GPU backend sets bfloat16
        self.init_buffers()

    def init_buffers(self) -> None:
        offsets = torch.tensor(self.audio.codebook_offsets, dtype=torch.int64)
        self.register_buffer("codebook_offsets", offsets, persistent=False)

    # --- embeddings --------------------------------------------------------------------------------
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mm_audio_embeddings.tok_embeddings(ids).float()

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the 37 code embeddings of a frame ([..., 37] codes with the +2 offset) → [..., D]."""
        table = self.mm_audio_embeddings.audio_codebook_embeddings.embeddings
        return table(codes + self.codebook_offsets).float().sum(dim=-2)

    # --- the KV cache ------------------------------------------------------------------------------
    def setup_cache(self, batch: int, capacity: int, dtype: torch.dtype = torch.float32) -> None:
        a = self.args
        device = self.norm.weight.device
        for layer in self.layers:
            layer.attention.cache = KVCache(batch, a.n_kv_heads, capacity, a.head_dim, dtype).to(device)

    @property
    def cache_capacity(self) -> int:
        cache = self.layers[0].attention.cache
        return 0 if cache is None else cache.capacity

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, kv_len: int | None = None,
                slots: torch.Tensor | slice | None = None) -> torch.Tensor:
        """embeds [B, L, D] at absolute ``positions`` [L] → final-normed hidden states [B, L, D].

        With a cache set up, keys/values are written at ``positions`` and each query attends to
        cache positions ``j <= position`` (``kv_len`` optionally bounds the positions read).
        Without a cache, attention is causal within ``embeds``.

        With ``slots`` (a cache set up, ``kv_len`` given), each row is its own sequence: row b lives
        in cache slot ``slots[b]`` (a tensor [B], or a slice: rows 0..B−1 in slots 0..B−1) at its
        own ``positions[b]`` [B, L] — a batch of sequences of different lengths in one call.
        """
        if slots is not None:
            cos, sin = rope_angles(positions, self.args.head_dim, self.args.rope_theta)
            rope = (cos[:, None], sin[:, None])  # broadcast over heads
            mask = torch.arange(kv_len, device=positions.device)[None, None, :] <= positions[:, :, None]
        else:
            rope = rope_angles(positions, self.args.head_dim, self.args.rope_theta)
            if self.layers[0].attention.cache is not None:
                n = kv_len if kv_len is not None else self.cache_capacity
                mask = torch.arange(n, device=positions.device)[None, :] <= positions[:, None]
            else:
                mask = positions[None, :] <= positions[:, None]
        x = embeds.to(self.compute_dtype)
        for layer in self.layers:
            x = layer(x, rope=rope, mask=mask, positions=positions, kv_len=kv_len, slots=slots)
        return self.norm(x)

    def forward_past(self, embeds: torch.Tensor, positions: torch.Tensor, past_lengths: torch.Tensor,
                     past: list[tuple[torch.Tensor, torch.Tensor]]):
        """The same step with the cache outside, for a batch of sequences of different lengths:
        embeds [B, L, D] at ``positions`` [B, L]; ``past`` keys/values per layer [P, B, Hkv, hd]
        (position-major), of which sequence b sees the first ``past_lengths[b]`` → final-normed
        hidden [B, L, D] and the new keys and values [n_layers, L, B, Hkv, hd] to store."""
        cos, sin = rope_angles(positions, self.args.head_dim, self.args.rope_theta)
        rope = (cos[:, None], sin[:, None])  # broadcast over heads
        slots = torch.arange(past[0][0].shape[0], device=embeds.device)
        past_mask = (slots[None, :] < past_lengths[:, None])[:, None, :].expand(-1, embeds.shape[1], -1)
        x = embeds.float()
        new_k, new_v = [], []
        for layer, (past_k, past_v) in zip(self.layers, past):
            x, k, v = layer.forward_past(x, rope, past_k, past_v, past_mask)
            new_k.append(k)
            new_v.append(v)
        return self.norm(x), torch.stack(new_k), torch.stack(new_v)
