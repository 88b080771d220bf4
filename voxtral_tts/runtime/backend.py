"""The backend protocol: what the runtime asks of an inference engine (ONNX Runtime, TensorRT,
Core ML, PyTorch), and the checks every backend shares.

A backend runs four graphs on numpy arrays, nothing more — the loop, prompts, noise, chunking
and requests belong to the runtime above it (:mod:`.decoding`, :mod:`.scheduler`):

=================================  =========================================================
``prefill(embeds, slot)``          prompt embeddings [P, D] at positions 0..P−1 into KV-cache
                                   ``slot`` → hidden of position P−1 [D]
``step(embeds, positions, slots)`` one backbone step for n sequences, each at its own position
                                   in its own slot: [n, D] → hidden [n, D]
``flow(hidden, noise)``            n frames' codes: hidden [n, D], x0 noise [n, 36] → [n, 37]
``codec(codes)``                   one codec call: codes [T, 37], T ≤ ``CODEC_FRAMES`` → audio
``capacity``, ``max_batch``        KV positions per slot, slots (sequences decoded together)
``close()``                        release what the backend holds (also on garbage collection)
=================================  =========================================================

plus the host-side embedding lookups (``embed_tokens``, ``embed_codes``: the text table and the
codebook sum, from the engine's tables by default). :class:`Backend` checks every call's
arguments once — a prompt or position that does not fit the cache is a :class:`CapacityError`,
a slot out of range or a batch larger than ``max_batch`` a :class:`VoxtralError` — and hands the
checked, contiguous arrays to the subclass's ``_prefill`` / ``_step`` / ``_flow`` / ``_codec``.

Adding a backend is one module under :mod:`.backends` with a :class:`Backend` subclass that
implements those four methods and ``from_path``, registered by name in
:data:`voxtral_tts.runtime.backends.REGISTRY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import CapacityError, VoxtralError
from .constants import CODEC_FRAMES, MAX_BATCH


class Backend(ABC):
    #: the registry name (``torch``, ``onnxruntime``, ``tensorrt``, ``coreml``)
    name: str = ""

    def __init__(self, config: ModelConfig, capacity: int, max_batch: int = 1, embeddings=None):
        """``embeddings``: the host tables (:class:`.host_embeddings.HostEmbeddings`) behind the
        default ``embed_tokens`` / ``embed_codes``; a backend that looks them up itself overrides those."""
        capacity, max_batch = int(capacity), int(max_batch)
        if not 2 <= capacity <= config.backbone.max_seq_len:
            raise VoxtralError(f"capacity must be between 2 and the model's max_seq_len "
                               f"({config.backbone.max_seq_len}) positions, got {capacity}")
        if not 1 <= max_batch <= MAX_BATCH:
            raise VoxtralError(f"max_batch must be between 1 and {MAX_BATCH}, got {max_batch}")
        self.config = config
        self.capacity = capacity
        self.max_batch = max_batch
        self.embeddings = embeddings

    @classmethod
    @abstractmethod
    def from_path(cls, path: str | Path, **options) -> "Backend":
        """The backend for a model or engine directory; unknown or inapplicable options are one
        :class:`VoxtralError` line."""

    # --- host embeddings ---------------------------------------------------------------------------
    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        """Text-table rows for token ids [P] → float32 [P, D]."""
        return self.embeddings.tokens(ids)

    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        """Frames' codes [..., 37] (+2 offset) → the summed code embeddings fed back [..., D]."""
        return self.embeddings.codes(codes)

    # --- the four graph calls, checked -------------------------------------------------------------
    def prefill(self, embeds: np.ndarray, slot: int = 0) -> np.ndarray:
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if embeds.shape[0] > self.capacity:
            raise CapacityError(f"prompt of {embeds.shape[0]} tokens exceeds the KV cache ({self.capacity} positions)")
        self._check_slots([slot])
        return self._prefill(embeds, int(slot))

    def step(self, embeds: np.ndarray, positions, slots) -> np.ndarray:
        positions, slots = np.asarray(positions, np.int64), np.asarray(slots, np.int64)
        self._check_slots(slots)
        if positions.shape != slots.shape or len(embeds) != len(slots):
            raise VoxtralError(f"a step needs one embedding, position and slot per sequence, got "
                               f"{len(embeds)}, {positions.size} and {slots.size}")
        if positions.max() >= self.capacity:
            raise CapacityError(f"position {positions.max()} is beyond the KV cache ({self.capacity} positions)")
        return self._step(np.ascontiguousarray(embeds, dtype=np.float32), positions, slots)

    def flow(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if not 1 <= len(hidden) <= self.max_batch or len(noise) != len(hidden):
            raise VoxtralError(f"{len(hidden)} hidden states and {len(noise)} noise rows: a flow call takes "
                               f"1 to {self.max_batch} (max_batch) of each")
        return self._flow(np.ascontiguousarray(hidden, dtype=np.float32), np.ascontiguousarray(noise, dtype=np.float32))

    def codec(self, codes: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        n_codebooks = self.config.audio.num_codebooks
        if codes.ndim != 2 or codes.shape[1] != n_codebooks or not 1 <= codes.shape[0] <= CODEC_FRAMES:
            raise VoxtralError(f"a codec call takes 1 to {CODEC_FRAMES} frames of codes [T, {n_codebooks}], "
                               f"got shape {list(codes.shape)}")
        return self._codec(codes)

    def close(self) -> None:
        """Release what the backend holds (device memory, sessions); the default holds nothing."""

    def _check_slots(self, slots) -> None:
        slots = [int(s) for s in np.asarray(slots).reshape(-1)]
        if not slots or min(slots) < 0 or max(slots) >= self.max_batch or len(set(slots)) != len(slots):
            raise VoxtralError(f"slots {slots} are not distinct slots of 0..{self.max_batch - 1} (max_batch "
                               f"{self.max_batch})")

    # --- single-sequence helpers (tests, scripts) --------------------------------------------------
    def step_one(self, embed: np.ndarray, position: int, slot: int = 0) -> np.ndarray:
        """One backbone step of the sequence in ``slot``: embedding [D] at ``position`` → hidden [D]."""
        return self.step(np.asarray(embed)[None], [position], [slot])[0]

    def flow_one(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """One frame: hidden [D], noise [36] → codes [37]."""
        return self.flow(np.asarray(hidden)[None], np.asarray(noise)[None])[0]

    # --- what a backend implements -----------------------------------------------------------------
    @abstractmethod
    def _prefill(self, embeds: np.ndarray, slot: int) -> np.ndarray:
        """Checked: float32 [P, D] with P ≤ capacity, a valid slot → hidden [D]."""

    @abstractmethod
    def _step(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Checked: float32 [n, D], int64 positions [n] < capacity, distinct valid slots [n] → [n, D]."""

    @abstractmethod
    def _flow(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Checked: float32 [n, D] and [n, 36], 1 ≤ n ≤ max_batch → int64 codes [n, 37]."""

    @abstractmethod
    def _codec(self, codes: np.ndarray) -> np.ndarray:
        """Checked: int64 [T, 37], 1 ≤ T ≤ CODEC_FRAMES → float32 audio [T · samples_per_frame]."""


class Forwarding(Backend):
    """A backend that forwards every call to ``inner``: the base of wrappers that change one call
    (tests, benchmarks), which override the public method they change."""

    def __init__(self, inner: Backend):
        self.inner = inner
        super().__init__(inner.config, inner.capacity, inner.max_batch, inner.embeddings)
        self.name = inner.name

    @classmethod
    def from_path(cls, path, **options):
        raise VoxtralError("a forwarding backend wraps another backend")

    def embed_tokens(self, ids):
        return self.inner.embed_tokens(ids)

    def embed_codes(self, codes):
        return self.inner.embed_codes(codes)

    def _prefill(self, embeds, slot):
        return self.inner.prefill(embeds, slot)

    def _step(self, embeds, positions, slots):
        return self.inner.step(embeds, positions, slots)

    def _flow(self, hidden, noise):
        return self.inner.flow(hidden, noise)

    def _codec(self, codes):
        return self.inner.codec(codes)

    def close(self) -> None:
        self.inner.close()
