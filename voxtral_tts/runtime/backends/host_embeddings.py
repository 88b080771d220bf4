"""The embedding lookups every engine backend does on the host, from an engine's ``.npy`` tables.

The text table (131072 × 3072 at full size) is memory-mapped and only the prompt's rows are read;
the codebook table (9088 rows) is loaded once in float32, and a frame's feedback embedding is the
float32 sum of its 37 rows (spec §6.4). Torch-free.
"""

from __future__ import annotations

import numpy as np

from ...engine import Engine
from ...errors import EngineError
from ...tensors import bf16_to_float32


def code_embedding(codebooks: np.ndarray, offsets: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Frames' codes [..., 37] (+2 offset) → the float32 sum of their rows of the codebook table [..., D]."""
    return codebooks[offsets + np.asarray(codes, dtype=np.int64)].sum(axis=-2, dtype=np.float32)


def _load(path, mmap_mode=None) -> np.ndarray:
    """An engine's ``.npy`` table; a truncated or corrupt file is one error naming it."""
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (OSError, ValueError, EOFError) as exc:
        raise EngineError(f"{path}: cannot read this embedding table (truncated or corrupt? export the engine "
                          f"again): {exc}") from None


class HostEmbeddings:
    """The text table (rows read on demand; float32 or BF16 bits) and the codebook table (float32)."""

    def __init__(self, engine: Engine):
        tokens, dtype = engine.embedding("tokens")
        codebooks, codebooks_dtype = engine.embedding("codebooks")
        table = _load(codebooks)
        self._set(_load(tokens, mmap_mode="r"), dtype == "bf16",
                  bf16_to_float32(table) if codebooks_dtype == "bf16" else table.astype(np.float32),
                  engine.config.audio.codebook_offsets)

    @classmethod
    def from_tables(cls, tokens: np.ndarray | None, codebooks: np.ndarray, offsets) -> "HostEmbeddings":
        """From tables in memory (float32); ``tokens`` None when the text rows are looked up elsewhere."""
        self = cls.__new__(cls)
        self._set(tokens, False, np.asarray(codebooks, np.float32), offsets)
        return self

    def _set(self, tokens, tokens_bf16: bool, codebooks: np.ndarray, offsets) -> None:
        self._tokens, self._tokens_bf16 = tokens, tokens_bf16
        self._codebooks = codebooks
        self._offsets = np.asarray(offsets, dtype=np.int64)

    def tokens(self, ids: np.ndarray) -> np.ndarray:
        """Text-table rows for token ids [P] → float32 [P, D]."""
        rows = np.asarray(self._tokens[np.asarray(ids, dtype=np.int64)])
        return bf16_to_float32(rows) if self._tokens_bf16 else rows.astype(np.float32)

    def codes(self, codes: np.ndarray) -> np.ndarray:
        """Frames' codes [..., 37] (+2 offset) → the summed code embeddings float32 [..., D]."""
        return code_embedding(self._codebooks, self._offsets, codes)
