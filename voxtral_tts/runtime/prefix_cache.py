"""The voice-prefix KV cache: the keys/values of a prompt's voice prefix, kept after first use.

Every prompt starts ``[BOS] [BEGIN_AUDIO] [AUDIO]×N [NEXT_AUDIO_TEXT]`` with the voice's N rows
(67–218) at the [AUDIO] positions — identical for every text spoken with that voice, and longer
than most sentences. The scheduler asks this cache for that prefix's keys/values
(:meth:`PrefixCache.get`) and prefills only the rest of the prompt after them.

- Keyed by content and by what computed it: a digest of the prefix's embeddings (the voice's rows
  and the control tokens' rows: a custom voice file is keyed by what it holds, not its name), its
  length, and the backend's :attr:`~.backend.Backend.prefix_identity` (backend, instance,
  precision, capacity, device). A prefix is never used by another backend, engine, precision or
  capacity.
- Bounded: least recently used entries are dropped past a byte budget (``budget_bytes``, default
  :data:`DEFAULT_PREFIX_CACHE_BYTES`); a prefix larger than the whole budget is used and not kept.
- A miss computes the prefix alone (:meth:`~.backend.Backend.compute_prefix`), so a prompt gives the same
  numbers whether its prefix came from the cache, was just computed, or was evicted and computed
  again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..reporting import bytes_text
from .backend import Backend, PrefixKV
from .constants import DEFAULT_PREFIX_CACHE_MB

log = logging.getLogger(__name__)

DEFAULT_PREFIX_CACHE_BYTES = DEFAULT_PREFIX_CACHE_MB << 20


@dataclass(frozen=True)
class PrefixCacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    budget_bytes: int


class PrefixCache:
    def __init__(self, budget_bytes: int = DEFAULT_PREFIX_CACHE_BYTES):
        if budget_bytes < 0:
            raise ValueError(f"the prefix cache's budget must be ≥ 0 bytes, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self._entries: OrderedDict[tuple, PrefixKV] = OrderedDict()
        self._bytes = self.hits = self.misses = self.evictions = 0

    @staticmethod
    def key(backend: Backend, prefix: np.ndarray) -> tuple:
        """What a prefix's keys/values depend on: the backend that computes them, and the content."""
        prefix = np.ascontiguousarray(prefix, dtype=np.float32)
        digest = hashlib.blake2b(prefix.tobytes(), digest_size=16).hexdigest()
        return (backend.prefix_identity, prefix.shape, digest)

    def get(self, backend: Backend, prefix: np.ndarray) -> PrefixKV:
        """The keys/values of ``prefix`` [L, D] (embeddings at positions 0..L−1) on ``backend``:
        from the cache, or computed now and kept."""
        key = self.key(backend, prefix)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        self.misses += 1
        entry = backend.compute_prefix(prefix)
        if entry.nbytes > self.budget_bytes:
            log.info("a %d-position prompt prefix takes %s, more than the prefix cache's budget (%s): used, not kept",
                     entry.length, bytes_text(entry.nbytes), bytes_text(self.budget_bytes))
            return entry
        while self._entries and self._bytes + entry.nbytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
            self.evictions += 1
            log.info("prefix cache: evicted a %d-position prefix (%s)", evicted.length, bytes_text(evicted.nbytes))
        self._entries[key] = entry
        self._bytes += entry.nbytes
        log.info("prefix cache: kept a %d-position voice prefix of %s (%d in the cache, %s of %s)", entry.length,
                 bytes_text(entry.nbytes), len(self._entries), bytes_text(self._bytes), bytes_text(self.budget_bytes))
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    @property
    def stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(self.hits, self.misses, self.evictions, len(self._entries), self._bytes,
                                self.budget_bytes)
