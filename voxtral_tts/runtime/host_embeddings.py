"""The embedding lookups every engine backend does on the host, from an engine's ``.npy`` tables.

The text table (131072 × 3072 at full size) is memory-mapped and only the prompt's rows are read;
the codebook table (9088 rows) is loaded once in float32, and a frame's feedback embedding is the
float32 sum of its 37 rows (spec §6.4). Torch-free.
"""

from __future__ import annotations

import numpy as np

from ..engine import Engine
from ..tensors import bf16_to_float32


def code_embedding(codebooks: np.ndarray, offsets: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """One frame's codes [37] (+2 offset) → the float32 sum of their rows of the codebook table."""
    return codebooks[offsets + np.asarray(codes, dtype=np.int64)].sum(axis=0, dtype=np.float32)


class HostEmbeddings:
    def __init__(self, engine: Engine):
        tokens, dtype = engine.embedding("tokens")
        self._tokens = np.load(tokens, mmap_mode="r")
        self._tokens_bf16 = dtype == "bf16"
        codebooks, dtype = engine.embedding("codebooks")
        table = np.load(codebooks)
        self._codebooks = bf16_to_float32(table) if dtype == "bf16" else table.astype(np.float32)
        self._offsets = np.asarray(engine.config.audio.codebook_offsets, dtype=np.int64)

    def tokens(self, ids: np.ndarray) -> np.ndarray:
        """Text-table rows for token ids [P] → float32 [P, D]."""
        rows = np.asarray(self._tokens[np.asarray(ids, dtype=np.int64)])
        return bf16_to_float32(rows) if self._tokens_bf16 else rows.astype(np.float32)

    def codes(self, codes: np.ndarray) -> np.ndarray:
        """One frame's codes [37] (+2 offset) → the summed code embedding float32 [D]."""
        return code_embedding(self._codebooks, self._offsets, codes)
