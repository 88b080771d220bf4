"""Block 1: the backbone, a Mistral decoder over prompt and audio-frame embeddings (spec §5, §6.4).

Module names follow the checkpoint keys (``layers.{i}.…``, ``norm``, ``mm_audio_embeddings.…``)
so that weights load by name. The modules hold no cache: ``forward`` takes the keys/values to
attend over from the caller (``kv``, :mod:`.kv`) — one function for prefill (many positions), the
decode step (one position), with or without a cache.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AudioArgs, BackboneArgs
from .kv import KV, Causal
from .layers import RMSNorm, TransformerBlock, rope_angles


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

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, kv: KV | None = None) -> torch.Tensor:
        """embeds [B, L, D] at absolute ``positions`` ([L], or [B, L]: each row its own sequence)
        → final-normed hidden states [B, L, D].

        Without ``kv``, attention is causal within ``embeds``. Otherwise each layer attends over
        what ``kv`` (owned by the caller) returns for its new keys/values: a :class:`.kv.StaticCache`
        (or one of its windows) written in place at ``positions``, or :class:`.kv.PastInputs`.
        """
        cos, sin = rope_angles(positions, self.args.head_dim, self.args.rope_theta)
        rope = (cos[:, None], sin[:, None]) if positions.dim() == 2 else (cos, sin)  # [B, L]: broadcast over heads
        views = kv.begin(positions) if kv is not None else [Causal(positions)] * len(self.layers)
        x = embeds.to(self.compute_dtype)
        for layer, view in zip(self.layers, views, strict=True):
            x = layer(x, rope, view)
        return self.norm(x)
