"""The decode loop (spec §6.1), written once for every backend, for one or many utterances at once.

    h = prefill(prompt embeddings)                  # hidden of the final [BEGIN_AUDIO] (after a cached prefix)
    for n = 0, 1, …:
        codes = flow(h, noise[n])                    # 37 codes, +2 offset (semantic: argmax or a sample)
        if codes[0] == END_AUDIO: stop               # never fed back, never turned into audio
        yield codes
        h = step(embed_codes(codes), P + n)          # no extra [AUDIO] step

"Decoding" here always means this autoregressive loop over the backbone; turning codes into audio
is the codec's (:mod:`.codec`). :class:`FrameLoop` runs it for every utterance in flight, one
frame each per :meth:`FrameLoop.step`; the :mod:`.scheduler` decides what joins and when.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from ..config import END_AUDIO
from ..errors import CapacityError, VoxtralError
from .backend import Backend, PrefillItem, PrefixKV
from .constants import DEFAULT_MAX_FRAMES, FRAME_FLOOR, FRAMES_PER_CHARACTER, MAX_TEMPERATURE

log = logging.getLogger(__name__)

#: why an utterance's frames ended: END_AUDIO, or its frame budget
FINISHED_END, FINISHED_LENGTH = "end", "length"


class NoiseSource:
    """The randomness of each frame: x0 (rows of an explicit array, or draws from a seeded
    generator) and, at a temperature above 0, the semantic code's sampling noise.

    With a seed, x0 of frame n equals ``default_rng(seed).standard_normal((M, 36))[n]`` for any
    M ≥ n+1, the fixture's contract, so explicit noise and a seed are interchangeable. Sampling
    adds ``temperature × Gumbel(0, 1)`` to the masked semantic logits before the argmax (the
    Gumbel-max trick: a draw from softmax(logits / temperature)); the Gumbel draws come from a
    stream of their own (``SeedSequence(seed, spawn_key=(1,))``), so the x0 rows are the seed's
    at every temperature. With explicit noise, that stream's seed is derived from the array's
    bytes: the same array gives the same samples.
    """

    def __init__(self, width: int, seed: int | None = None, noise: np.ndarray | None = None,
                 temperature: float = 0.0, logits: int = 0):
        self.width = width
        self.seed: int | None = None
        self.temperature = check_temperature(temperature)
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float32)
            if noise.ndim != 2 or noise.shape[1] != width:
                raise VoxtralError(f"noise must be float32 [frames, {width}], got shape {list(noise.shape)}")
            self._rows, self._rng = noise, None
        else:
            if seed is not None and not 0 <= int(seed) < 2**63:
                raise VoxtralError(f"seed must be between 0 and 2^63 - 1, got {seed}")
            self.seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
            self._rows, self._rng = None, np.random.default_rng(self.seed)
        self._logits = logits
        self._sampler = None
        if self.temperature > 0:
            if logits < 1:
                raise VoxtralError("sampling needs the width of the semantic logits")
            sampling_seed = self.seed if noise is None else int.from_bytes(
                hashlib.blake2b(noise.tobytes(), digest_size=8).digest(), "little")
            self._sampler = np.random.default_rng(np.random.SeedSequence(sampling_seed, spawn_key=(1,)))
        self._next = 0

    @property
    def limit(self) -> int | None:
        """Frames this source can supply (None: unlimited)."""
        return None if self._rows is None else self._rows.shape[0] - self._next

    def take(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The next frame's x0 [36] and semantic sampling noise [logits] (None: greedy)."""
        if self._rows is not None:
            if self._next >= self._rows.shape[0]:
                raise VoxtralError(f"noise has {self._rows.shape[0]} rows; more frames were needed")
            row = self._rows[self._next]
        else:
            row = self._rng.standard_normal(self.width).astype(np.float32)
        self._next += 1
        if self._sampler is None:
            return row, None
        return row, (self.temperature * self._sampler.gumbel(size=self._logits)).astype(np.float32)


def check_temperature(temperature) -> float:
    """The temperature as a float in [0, MAX_TEMPERATURE], or a one-line error."""
    number = isinstance(temperature, (int, float, np.integer, np.floating)) and not isinstance(temperature, bool)
    value = float(temperature) if number else float("nan")
    if not 0.0 <= value <= MAX_TEMPERATURE:  # NaN fails too
        raise VoxtralError(f"temperature must be a number from 0 (greedy) to {MAX_TEMPERATURE:g}, got {temperature!r}")
    return value


#: what bounded an utterance's frame budget
LIMIT_MAX_FRAMES, LIMIT_TEXT, LIMIT_CAPACITY, LIMIT_NOISE = "max_frames", "text length", "KV capacity", "noise rows"


def frame_budget(capacity: int, prompt_len: int, max_frames: int | None, noise: NoiseSource,
                 text_chars: int | None = None) -> tuple[int, str]:
    """How many frames an utterance may generate, and which limit that is: the request's cap, or
    without one ``DEFAULT_MAX_FRAMES`` and the budget of its text's length (``FRAME_FLOOR +
    FRAMES_PER_CHARACTER × text_chars``); bounded by the noise rows and the KV cache."""
    room = capacity - prompt_len + 1  # frame n is computed from position P−1+n
    if room < 1:
        raise CapacityError(
            f"the prompt has {prompt_len} tokens but the KV cache holds {capacity} positions; "
            "shorten the text or raise the capacity"
        )
    if max_frames is None:
        limits = [(DEFAULT_MAX_FRAMES, LIMIT_MAX_FRAMES), (room, LIMIT_CAPACITY)]
        if text_chars is not None:
            limits.append((FRAME_FLOOR + FRAMES_PER_CHARACTER * text_chars, LIMIT_TEXT))
        if noise.limit is not None:
            limits.append((noise.limit, LIMIT_NOISE))
        return min(limits)
    if max_frames < 1:
        raise VoxtralError(f"max_frames must be at least 1, got {max_frames}")
    if max_frames > room:
        raise CapacityError(
            f"{max_frames} frames after a {prompt_len}-token prompt need {prompt_len + max_frames - 1} "
            f"positions; the KV cache holds {capacity}"
        )
    if noise.limit is not None and noise.limit < max_frames:
        raise VoxtralError(f"noise has {noise.limit} rows but max_frames is {max_frames}")
    return max_frames, LIMIT_MAX_FRAMES


@dataclass(eq=False)
class Utterance:
    """One prompt being generated: its embeddings, noise and frame budget, and where it stands."""

    embeds: np.ndarray
    noise: NoiseSource
    budget: int
    limit: str = LIMIT_MAX_FRAMES  # what set the budget (reported when it ends the utterance)
    prefix: PrefixKV | None = None  # the keys/values of embeds[:prefix.length], until prefilled
    slot: int = -1
    frames: int = 0
    hidden: np.ndarray | None = None
    finish_reason: str | None = None  # FINISHED_END or FINISHED_LENGTH once done

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def next_position(self) -> int:
        return self.embeds.shape[0] + self.frames - 1


class FrameLoop:
    """The decode loop for every utterance in flight, one frame each per :meth:`step`.

    Utterances join with one prefill call into free cache slots (each after its prefix, if it has
    one). Each step runs one flow call for all
    active utterances (codes from each one's hidden and noise), then one backbone step for those
    that go on, each at its own position. An utterance leaves at END_AUDIO (that frame is not
    audio and never fed back) or at its frame budget, and its slot is free for the next.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self.free = list(range(backend.max_batch))
        self.active: list[Utterance] = []

    @property
    def has_room(self) -> bool:
        return bool(self.free)

    def join(self, *utterances: Utterance) -> None:
        """Prefill ``utterances`` into free slots in one backend call; a failed prefill takes no slot."""
        if len(utterances) > len(self.free):
            raise VoxtralError(f"{len(utterances)} utterances to start, {len(self.free)} free decoding slot(s)")
        slots = self.free[: len(utterances)]
        items = [PrefillItem(u.embeds[0 if u.prefix is None else u.prefix.length:], slot, u.prefix)
                 for u, slot in zip(utterances, slots)]
        hidden = self.backend.prefill_many(items)
        for utterance, slot, h in zip(utterances, slots, hidden):
            utterance.hidden, utterance.slot, utterance.prefix = h, slot, None
            self.free.remove(slot)
            self.active.append(utterance)

    def leave(self, utterance: Utterance) -> None:
        if utterance in self.active:
            self.active.remove(utterance)
            self.free.append(utterance.slot)
            self.free.sort()

    def step(self) -> list[tuple[Utterance, np.ndarray | None]]:
        """One frame for every active utterance: (utterance, codes [37]) — None at END_AUDIO."""
        if not self.active:
            return []
        batch = list(self.active)
        hidden = np.stack([u.hidden for u in batch])
        draws = [u.noise.take() for u in batch]
        noise = np.stack([x0 for x0, _ in draws])
        semantic = None
        if any(sample is not None for _, sample in draws):  # zeros (greedy) for the rows not sampling
            semantic = np.zeros((len(batch), self.backend.config.audio.semantic_head_rows), np.float32)
            for row, (_, sample) in zip(semantic, draws):
                if sample is not None:
                    row[:] = sample
        codes = self.backend.flow(hidden, noise, semantic)
        events, going_on = [], []
        for utterance, frame in zip(batch, codes):
            if frame[0] == END_AUDIO:
                utterance.finish_reason = FINISHED_END
                self.leave(utterance)
                events.append((utterance, None))
                continue
            utterance.frames += 1
            events.append((utterance, frame))
            if utterance.frames >= utterance.budget:
                log.info("frame cap reached: %d frames, the %s limit", utterance.budget, utterance.limit)
                utterance.finish_reason = FINISHED_LENGTH
                self.leave(utterance)
            else:
                going_on.append((utterance, frame))
        if going_on:
            embeds = self.backend.embed_codes(np.stack([frame for _, frame in going_on]))
            positions = [u.next_position for u, _ in going_on]
            slots = [u.slot for u, _ in going_on]
            for (utterance, _), h in zip(going_on, self.backend.step(embeds, positions, slots)):
                utterance.hidden = h
        return events
