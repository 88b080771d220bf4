"""The decode loop, written once for every backend (spec §6.1).

A backend implements :class:`Inference` — it only runs graphs: embed, prefill, decode step,
flow frame, code embedding, codec chunk — on numpy arrays. :func:`generate_frames` owns the loop:

    h = prefill(prompt embeddings)                  # hidden of the final [BEGIN_AUDIO]
    for n = 0, 1, …:
        codes = flow_frame(h, noise[n])              # 37 codes, +2 offset
        if codes[0] == END_AUDIO: stop               # never fed back, never decoded
        yield codes
        h = decode_step(embed_codes(codes), P + n)   # no extra [AUDIO] step

:func:`decode_codes` turns codes into audio in chunks, each decoded with left context so that
the result equals a one-shot decode (the codec is causal with a ~21-frame receptive field, §7.7);
streaming uses the same chunking.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..config import END_AUDIO, ModelConfig
from ..errors import CapacityError, VoxtralError

log = logging.getLogger(__name__)

#: Generated-frame cap when none is given (the reference deploy config's max_tokens).
DEFAULT_MAX_FRAMES = 2048
#: Codec chunking: new frames per chunk and frames of left context (≥ the 21-frame receptive field).
CODEC_CHUNK_FRAMES = 50
CODEC_CONTEXT_FRAMES = 25
#: The longest codec call the runtime makes: the fixed input of a fixed-shape codec (TensorRT, Core ML).
CODEC_FRAMES = CODEC_CHUNK_FRAMES + CODEC_CONTEXT_FRAMES
#: Streaming: audio after the first 5 frames, then every 5 frames up to 25, then every 25.
STREAM_FIRST_FRAMES = 5
STREAM_CHUNK_FRAMES = 25


class Inference(ABC):
    """What a backend provides. Arrays are numpy float32 / int64; one sequence at a time."""

    config: ModelConfig

    @property
    @abstractmethod
    def capacity(self) -> int:
        """Positions the KV cache holds (prompt + frames − 1 must fit)."""

    @abstractmethod
    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        """Text-table rows for token ids [P] → [P, D]."""

    @abstractmethod
    def prefill(self, embeds: np.ndarray, slot: int = 0) -> np.ndarray:
        """Start a sequence in cache ``slot``: prompt embeddings [P, D] at positions 0..P−1 →
        hidden of position P−1 [D]."""

    @abstractmethod
    def decode_step(self, embed: np.ndarray, position: int) -> np.ndarray:
        """One backbone step of the sequence in slot 0: input [D] at ``position`` → hidden [D]."""

    @abstractmethod
    def flow_frame(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """hidden [D], x0 noise [36] → codes [37] (int64, +2 offset)."""

    # batching: backends that run several sequences per call override these three
    @property
    def max_batch(self) -> int:
        """Sequences that can be decoded together (cache slots)."""
        return 1

    def decode_steps(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """One backbone step for several sequences: inputs [n, D] at their own positions [n] in
        their cache slots [n] → hiddens [n, D]."""
        assert len(slots) == 1 and slots[0] == 0, "this backend decodes one sequence at a time"
        return self.decode_step(embeds[0], int(positions[0]))[None]

    def flow_frames(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Frames of several sequences: hiddens [n, D], noise [n, 36] → codes [n, 37]."""
        return np.stack([self.flow_frame(h, x) for h, x in zip(hidden, noise)])

    @abstractmethod
    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        """codes [37] → the summed code embedding [D] fed back to the backbone."""

    @abstractmethod
    def decode_audio(self, codes: np.ndarray) -> np.ndarray:
        """codes [T, 37] → waveform [T · samples_per_frame] (one codec call, no chunking)."""


class Forwarding(Inference):
    """Forwards the single-sequence calls to ``inner``: a base for wrappers that change one call
    (tests, benchmarks). Batching stays off (``max_batch`` 1) unless a subclass forwards it too."""

    def __init__(self, inner: Inference):
        self.inner, self.config = inner, inner.config

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        return self.inner.embed_tokens(ids)

    def prefill(self, embeds: np.ndarray, slot: int = 0) -> np.ndarray:
        return self.inner.prefill(embeds, slot)

    def decode_step(self, embed: np.ndarray, position: int) -> np.ndarray:
        return self.inner.decode_step(embed, position)

    def flow_frame(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.inner.flow_frame(hidden, noise)

    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        return self.inner.embed_codes(codes)

    def decode_audio(self, codes: np.ndarray) -> np.ndarray:
        return self.inner.decode_audio(codes)


class NoiseSource:
    """x0 of each frame: rows of an explicit array, or draws from a seeded generator.

    With a seed, row n equals ``default_rng(seed).standard_normal((M, 36))[n]`` for any M ≥ n+1,
    the fixture's contract, so explicit noise and a seed are interchangeable.
    """

    def __init__(self, width: int, seed: int | None = None, noise: np.ndarray | None = None):
        self.width = width
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float32)
            if noise.ndim != 2 or noise.shape[1] != width:
                raise VoxtralError(f"noise must be float32 [frames, {width}], got shape {list(noise.shape)}")
            self._rows, self._rng = noise, None
        else:
            self.seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
            self._rows, self._rng = None, np.random.default_rng(self.seed)
        self._next = 0

    @property
    def limit(self) -> int | None:
        """Frames this source can supply (None: unlimited)."""
        return None if self._rows is None else self._rows.shape[0] - self._next

    def take(self) -> np.ndarray:
        if self._rows is not None:
            if self._next >= self._rows.shape[0]:
                raise VoxtralError(f"noise has {self._rows.shape[0]} rows; more frames were needed")
            row = self._rows[self._next]
        else:
            row = self._rng.standard_normal(self.width).astype(np.float32)
        self._next += 1
        return row


def frame_budget(model: Inference, prompt_len: int, max_frames: int | None, noise: NoiseSource) -> int:
    """How many frames may be generated: the request's cap, bounded by noise rows and the cache."""
    room = model.capacity - prompt_len + 1  # frame n is computed from position P−1+n
    if room < 1:
        raise CapacityError(
            f"the prompt has {prompt_len} tokens but the KV cache holds {model.capacity} positions; "
            "shorten the text or raise the capacity"
        )
    if max_frames is None:
        budget = min(DEFAULT_MAX_FRAMES, room)
        if noise.limit is not None:
            budget = min(budget, noise.limit)
        return budget
    if max_frames < 1:
        raise VoxtralError(f"max_frames must be at least 1, got {max_frames}")
    if max_frames > room:
        raise CapacityError(
            f"{max_frames} frames after a {prompt_len}-token prompt need {prompt_len + max_frames - 1} "
            f"positions; the KV cache holds {model.capacity}"
        )
    if noise.limit is not None and noise.limit < max_frames:
        raise VoxtralError(f"noise has {noise.limit} rows but max_frames is {max_frames}")
    return max_frames


class Cancelled(VoxtralError):
    """Generation was stopped by its caller (a client that went away)."""


@dataclass(eq=False)
class Sequence:
    """One utterance being generated: its prompt, noise and frame budget, and where it stands."""

    embeds: np.ndarray
    noise: NoiseSource
    budget: int
    tag: object = None  # the caller's handle
    slot: int = -1
    frames: int = 0
    hidden: np.ndarray | None = None
    done: bool = False

    @property
    def next_position(self) -> int:
        return self.embeds.shape[0] + self.frames - 1


class BatchDecoder:
    """The decode loop (spec §6.1) for one or several sequences per graph call.

    A sequence joins with a prefill into a free cache slot. Each :meth:`step` runs one flow call
    for all active sequences (codes from each one's hidden and noise), then one backbone step for
    those that go on, each at its own position. A sequence leaves at END_AUDIO (that frame is not
    audio, never fed back) or at its frame budget, and its slot is free for the next. There is
    no extra ``[AUDIO]`` step: frame 0 comes from the prompt's last position.
    """

    def __init__(self, model: Inference):
        self.model = model
        self.free = list(range(model.max_batch))
        self.active: list[Sequence] = []

    @property
    def has_room(self) -> bool:
        return bool(self.free)

    def join(self, seq: Sequence) -> None:
        if not self.free:
            raise VoxtralError("no free decoding slot")
        seq.hidden = self.model.prefill(seq.embeds, self.free[0])  # a failed prefill keeps the slot free
        seq.slot = self.free.pop(0)
        self.active.append(seq)

    def leave(self, seq: Sequence) -> None:
        if seq in self.active:
            self.active.remove(seq)
            self.free.append(seq.slot)
            self.free.sort()
        seq.done = True

    def step(self) -> list[tuple[Sequence, np.ndarray | None]]:
        """One frame for every active sequence: (sequence, codes [37]) — codes None at END_AUDIO."""
        if not self.active:
            return []
        batch = list(self.active)
        hidden = np.stack([s.hidden for s in batch])
        noise = np.stack([s.noise.take() for s in batch])
        codes = self.model.flow_frames(hidden, noise)
        events, going_on = [], []
        for seq, frame in zip(batch, codes):
            if frame[0] == END_AUDIO:
                self.leave(seq)
                events.append((seq, None))
                continue
            seq.frames += 1
            events.append((seq, frame))
            if seq.frames >= seq.budget:
                log.info("frame cap reached (%d frames): audio truncated", seq.budget)
                self.leave(seq)
            else:
                going_on.append((seq, frame))
        if going_on:
            embeds = np.stack([self.model.embed_codes(frame) for _, frame in going_on])
            positions = np.array([s.next_position for s, _ in going_on], dtype=np.int64)
            slots = np.array([s.slot for s, _ in going_on], dtype=np.int64)
            for (seq, _), h in zip(going_on, self.model.decode_steps(embeds, positions, slots)):
                seq.hidden = h
        return events


def generate_frames(
    model: Inference, embeds: np.ndarray, noise: NoiseSource, max_frames: int,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the codes [37] of each audio frame of one sequence until END_AUDIO or ``max_frames``.
    ``cancelled`` is polled before each frame; when it returns True, :class:`Cancelled` is raised."""
    decoder = BatchDecoder(model)
    seq = Sequence(embeds, noise, max_frames)
    decoder.join(seq)
    while not seq.done:
        if cancelled is not None and cancelled():
            decoder.leave(seq)
            raise Cancelled(f"generation cancelled after {seq.frames} frames")
        for _, codes in decoder.step():
            if codes is not None:
                yield codes


def pad_codec_chunk(codes: np.ndarray, frames: int = CODEC_FRAMES, dtype=np.int64) -> np.ndarray:
    """codes [T, 37], 1 ≤ T ≤ frames → [1, frames, 37], the last frame repeated to the end: the
    input of a fixed-shape codec. The codec is causal, so the audio of the T real frames does not
    change; the caller keeps only theirs."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or not 1 <= codes.shape[0] <= frames:
        raise VoxtralError(f"a codec chunk is 1 to {frames} frames of codes, got shape {list(codes.shape)}")
    padded = np.empty((1, frames, codes.shape[1]), dtype)
    padded[0, : len(codes)] = codes
    padded[0, len(codes):] = codes[-1]
    return padded


def chunk_bounds(n_frames: int, chunk: int = CODEC_CHUNK_FRAMES) -> list[tuple[int, int]]:
    """[first, stop) of each codec call's new frames."""
    return [(first, min(n_frames, first + chunk)) for first in range(0, n_frames, chunk)]


def decode_span(decode_chunk: Callable[[np.ndarray], np.ndarray], codes, first: int, stop: int,
                samples_per_frame: int, context: int = CODEC_CONTEXT_FRAMES) -> np.ndarray:
    """Audio of frames [first, stop): decoded with up to ``context`` frames before ``first``,
    whose audio is dropped. ``codes`` is any sequence of [37] frames (an array or a list)."""
    start = max(0, first - context)
    audio = decode_chunk(np.asarray(codes[start:stop], dtype=np.int64))
    return np.asarray(audio[(first - start) * samples_per_frame :], dtype=np.float32)


def decode_codes(
    decode_chunk: Callable[[np.ndarray], np.ndarray], codes: np.ndarray, samples_per_frame: int,
    chunk: int = CODEC_CHUNK_FRAMES, context: int = CODEC_CONTEXT_FRAMES,
) -> np.ndarray:
    """Codes [T, 37] → waveform [T · samples_per_frame], chunk by chunk with left context."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    pieces = [decode_span(decode_chunk, codes, first, stop, samples_per_frame, context)
              for first, stop in chunk_bounds(codes.shape[0], chunk)]
    return np.concatenate(pieces)


def stream_chunk_frames(emitted: int) -> int:
    """New frames in the next streamed chunk: 5 until 25 frames are out, then 25 (the reference)."""
    return STREAM_FIRST_FRAMES if emitted + STREAM_FIRST_FRAMES <= STREAM_CHUNK_FRAMES else STREAM_CHUNK_FRAMES
