"""The backend protocol: what the runtime asks of an inference engine (ONNX Runtime, TensorRT,
Core ML, PyTorch), and the checks every backend shares.

A backend runs four graphs on numpy arrays, nothing more — the loop, prompts, noise, chunking
and requests belong to the runtime above it (:mod:`.decoding`, :mod:`.scheduler`):

=================================  =========================================================
``prefill(embeds, slot, prefix)``  prompt embeddings [P, D] at positions 0..P−1 into KV-cache
                                   ``slot`` → hidden of position P−1 [D]; with a ``prefix``
                                   (:class:`PrefixKV` of L positions) the embeddings are the rest
                                   of the prompt, at positions L..L+P−1, attending over the prefix
``prefill_many(items)``            several of those: one padded call where the backend can and
                                   :attr:`Backend.batch_prefill` is set, else one after another
``compute_prefix(embeds)``         the keys/values of a prompt's first L positions, kept by the
                                   caller (the voice-prefix cache) → :class:`PrefixKV`
``step(embeds, positions, slots)`` one backbone step for n sequences, each at its own position
                                   in its own slot: [n, D] → hidden [n, D]
``flow(hidden, noise, semantic,    n frames' codes: hidden [n, D], x0 noise [n, 36] → [n, 37];
expressiveness)``                  ``semantic`` [n, 8320] is added to the masked semantic logits
                                   before the argmax (temperature sampling; None: zeros, greedy);
                                   ``expressiveness`` [n]: each row's guidance scale α (None:
                                   the checkpoint's ``cfg_alpha`` for every row)
``codec(codes)``                   one codec call: codes [T, 37], T ≤ ``CODEC_FRAMES`` → audio
``capacity``, ``max_batch``        KV positions per slot, slots (sequences decoded together)
``close()``                        release what the backend holds (also on garbage collection)
=================================  =========================================================

``compute_prefix`` and prefill with a prefix are optional: a backend that cannot write its cache from
outside leaves :attr:`Backend.prefix_identity` None (the runtime then always prefills whole
prompts). A prefix is computed alone (positions 0..L−1, no slot), so a prompt prefilled as prefix +
rest gives the same numbers whether its prefix came from the cache or was just computed.

plus the host-side embedding lookups (``embed_tokens``, ``embed_codes``: the text table and the
codebook sum, from the engine's tables by default). :class:`Backend` checks every call's
arguments once — a prompt or position that does not fit the cache is a :class:`CapacityError`,
a slot out of range or a batch larger than ``max_batch`` a :class:`VoxtralError` — and hands the
checked, contiguous arrays to the subclass's ``_prefill`` / ``_step`` / ``_flow`` / ``_codec``.

Adding a backend is one module under :mod:`.backends` with a :class:`Backend` subclass that
implements those four methods and ``from_path(path, options)`` — its options a dataclass of
:mod:`.load_options` named by :attr:`Backend.options_type` —, registered by name in
:data:`voxtral_tts.runtime.backends.REGISTRY`. A backend of an engine directory starts from
:class:`.backends.engine_backend.EngineBackend`.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..config import ModelConfig
from ..errors import CapacityError, VoxtralError
from .constants import CODEC_FRAMES
from .guidance import check_expressiveness
from .load_options import LoadOptions


@dataclass(eq=False)
class PrefixKV:
    """The keys/values of a prompt's first ``length`` positions, computed by :meth:`Backend.compute_prefix`
    and usable only by a backend with the same :attr:`Backend.prefix_identity`. ``data`` is the
    backend's own (host arrays, device tensors or buffers); ``nbytes`` what it holds."""

    identity: tuple
    length: int
    nbytes: int
    data: Any  # freed with the last reference (a device buffer frees itself when collected)


class PrefillItem(NamedTuple):
    """One prompt to prefill: its embeddings (the rest after ``prefix``, or all of it), its slot."""

    embeds: np.ndarray
    slot: int
    prefix: PrefixKV | None = None

    @property
    def start(self) -> int:
        """The position of ``embeds[0]``: the prefix's length, or 0."""
        return 0 if self.prefix is None else self.prefix.length


class Backend(ABC):
    #: the registry name (``torch``, ``onnxruntime``, ``tensorrt``, ``coreml``)
    name: str = ""
    #: the type of the options :meth:`from_path` takes
    options_type: type[LoadOptions] = LoadOptions
    #: whether :meth:`prefill_many` can run several prompts as one padded call (what the backend
    #: can do; :attr:`batch_prefill` is what it is set to do)
    can_batch_prefill: bool = False

    def __init__(self, config: ModelConfig, capacity: int, max_batch: int = 1, embeddings=None):
        """``capacity`` and ``max_batch`` as resolved from the backend's options (``max_batch``
        checked there); ``embeddings``: the host tables (:class:`.host_embeddings.HostEmbeddings`)
        behind the default ``embed_tokens`` / ``embed_codes``; a backend that looks them up itself
        overrides those."""
        capacity = int(capacity)
        if not 2 <= capacity <= config.backbone.max_seq_len:
            raise VoxtralError(f"capacity must be between 2 and the model's max_seq_len "
                               f"({config.backbone.max_seq_len}) positions, got {capacity}")
        self.config = config
        self.capacity = capacity
        self.max_batch = int(max_batch)
        self.embeddings = embeddings
        self._batch_prefill = False
        self._instance = uuid.uuid4().hex[:12]

    @property
    def batch_prefill(self) -> bool:
        """Whether :meth:`prefill_many` runs several prompts as one padded call (False: one after
        another); each backend sets its default where that is faster (docs/performance.md has the figures)."""
        return self._batch_prefill

    @batch_prefill.setter
    def batch_prefill(self, value: bool) -> None:
        if value and not self.can_batch_prefill:
            raise VoxtralError(f"the {self.name} backend cannot prefill several prompts in one call")
        self._batch_prefill = bool(value)

    @property
    def prefix_identity(self) -> tuple | None:
        """What a :class:`PrefixKV` from this backend is valid for — (backend, this instance,
        precision, capacity, device); None when this backend cannot prefill after a prefix."""
        return None

    def _identity(self, precision: str, device: str) -> tuple:
        return (self.name, self._instance, precision, self.capacity, device)

    @classmethod
    @abstractmethod
    def from_path(cls, path: str | Path, options: LoadOptions | None = None) -> "Backend":
        """The backend for a model or engine directory with ``options`` (an :attr:`options_type`;
        None: its defaults); an unusable path is one :class:`VoxtralError` line."""

    # --- host embeddings ---------------------------------------------------------------------------
    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        """Text-table rows for token ids [P] → float32 [P, D]."""
        return self.embeddings.tokens(ids)

    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        """Frames' codes [..., 37] (+2 offset) → the summed code embeddings fed back [..., D]."""
        return self.embeddings.codes(codes)

    # --- the four graph calls, checked -------------------------------------------------------------
    def prefill(self, embeds: np.ndarray, slot: int = 0, prefix: PrefixKV | None = None) -> np.ndarray:
        return self.prefill_many([PrefillItem(embeds, slot, prefix)])[0]

    def prefill_many(self, items) -> list[np.ndarray]:
        """Prefill each :class:`PrefillItem` (distinct slots) → the hidden of each one's last
        position: one :meth:`_prefill` call for all where :attr:`batch_prefill`, else one each."""
        checked = []
        for item in items:
            item = PrefillItem(np.ascontiguousarray(item.embeds, dtype=np.float32), int(item.slot), item.prefix)
            if item.prefix is not None and item.prefix.identity != self.prefix_identity:
                raise VoxtralError(f"a prompt prefix computed by another backend {item.prefix.identity[:1]} (or "
                                   f"another precision, capacity or device) cannot be used by this one")
            if item.embeds.ndim != 2 or item.embeds.shape[0] < 1:
                raise VoxtralError(f"a prefill takes embeddings [P ≥ 1, D], got shape {list(item.embeds.shape)}")
            if item.start + item.embeds.shape[0] > self.capacity:
                raise CapacityError(f"prompt of {item.start + item.embeds.shape[0]} tokens exceeds the KV cache "
                                    f"({self.capacity} positions)")
            checked.append(item)
        self._check_slots([item.slot for item in checked])
        if self.batch_prefill:
            return self._prefill(checked)
        return [self._prefill([item])[0] for item in checked]

    def compute_prefix(self, embeds: np.ndarray) -> PrefixKV:
        """The keys/values of ``embeds`` [L, D] at positions 0..L−1, for later :meth:`prefill` calls."""
        if self.prefix_identity is None:
            raise VoxtralError(f"the {self.name} backend cannot reuse a prompt prefix")
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if not 1 <= embeds.shape[0] < self.capacity:
            raise CapacityError(f"a prefix of {embeds.shape[0]} positions does not fit the KV cache "
                                f"({self.capacity} positions) with a token after it")
        length, nbytes, data = self._prefix(embeds)
        return PrefixKV(self.prefix_identity, length, nbytes, data)

    def step(self, embeds: np.ndarray, positions, slots) -> np.ndarray:
        positions, slots = np.asarray(positions, np.int64), np.asarray(slots, np.int64)
        self._check_slots(slots)
        if positions.shape != slots.shape or len(embeds) != len(slots):
            raise VoxtralError(f"a step needs one embedding, position and slot per sequence, got "
                               f"{len(embeds)}, {positions.size} and {slots.size}")
        if positions.max() >= self.capacity:
            raise CapacityError(f"position {positions.max()} is beyond the KV cache ({self.capacity} positions)")
        return self._step(np.ascontiguousarray(embeds, dtype=np.float32), positions, slots)

    def check_guidance(self, scale: float) -> None:
        """Refuse, in one line, a guidance scale (``expressiveness``, checked) other than the
        checkpoint's that this backend cannot run; the default runs any."""

    def flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None = None,
             expressiveness=None) -> np.ndarray:
        if not 1 <= len(hidden) <= self.max_batch or len(noise) != len(hidden):
            raise VoxtralError(f"{len(hidden)} hidden states and {len(noise)} noise rows: a flow call takes "
                               f"1 to {self.max_batch} (max_batch) of each")
        if semantic is not None:
            rows = self.config.audio.semantic_head_rows
            if np.shape(semantic) != (len(hidden), rows):
                raise VoxtralError(
                    f"semantic sampling noise must be [{len(hidden)}, {rows}], got {list(np.shape(semantic))}"
                )
            semantic = np.ascontiguousarray(semantic, dtype=np.float32)
        default = self.config.flow.cfg_alpha
        if expressiveness is None:
            scales = np.full(len(hidden), default)
        else:
            scales = np.asarray(expressiveness, dtype=np.float64)
            if scales.shape != (len(hidden),):
                raise VoxtralError(f"expressiveness must be one scale per row [{len(hidden)}], got "
                                   f"{list(scales.shape)}")
            for scale in set(scales.tolist()):
                if scale != default:
                    check_expressiveness(scale)
                    self.check_guidance(scale)
        return self._flow(np.ascontiguousarray(hidden, dtype=np.float32), np.ascontiguousarray(noise, dtype=np.float32),
                          semantic, scales)

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

    # --- what a backend implements -----------------------------------------------------------------
    @abstractmethod
    def _prefill(self, items: list[PrefillItem]) -> list[np.ndarray]:
        """Checked items — float32 [P, D] after each one's ``prefix`` (None: at position 0),
        fitting the cache, distinct valid slots — → the hidden of each one's last position [D].
        Given one item at a time unless :attr:`batch_prefill`; a backend with
        :attr:`prefix_identity` None is never given a prefix."""

    def _prefix(self, embeds: np.ndarray) -> tuple[int, int, Any]:
        """Checked float32 [L, D] → (L, bytes held, the backend's keys/values of positions 0..L−1)."""
        raise VoxtralError(f"the {self.name} backend cannot reuse a prompt prefix")

    @abstractmethod
    def _step(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Checked: float32 [n, D], int64 positions [n] < capacity, distinct valid slots [n] → [n, D]."""

    @abstractmethod
    def _flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None,
              expressiveness: np.ndarray) -> np.ndarray:
        """Checked: float32 [n, D] and [n, 36], 1 ≤ n ≤ max_batch, float32 [n, semantic_head_rows]
        or None (zeros), and each row's guidance scale, float64 [n] (the default filled in; the
        graphs take :func:`.guidance.guidance_weights` of it) → int64 codes [n, 37]."""

    @abstractmethod
    def _codec(self, codes: np.ndarray) -> np.ndarray:
        """Checked: int64 [T, 37], 1 ≤ T ≤ CODEC_FRAMES → float32 audio [T · samples_per_frame]."""
