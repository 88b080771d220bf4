"""The decode loop (spec §6.1), written once for every backend, for one or many sequences at once.

    h = prefill(prompt embeddings)                  # hidden of the final [BEGIN_AUDIO] (after a cached prefix)
    for n = 0, 1, …:
        codes = flow(h, noise[n])                    # 37 codes, +2 offset (semantic: argmax or a sample)
        if codes[0] == END_AUDIO: stop               # never fed back, never turned into audio
        yield codes
        h = step(embed_codes(codes), P + n)          # no extra [AUDIO] step

"Decoding" here always means this autoregressive loop over the backbone; turning codes into audio
is the codec's (:mod:`.codec`). A :class:`Sequence` is one text part being generated;
:class:`FrameLoop` runs the loop for every sequence in flight, one frame each per
:meth:`FrameLoop.step`; the :mod:`.scheduler` decides what joins and when.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import END_AUDIO
from ..errors import CapacityError, VoxtralError
from .backend import Backend, PrefillItem, PrefixKV
from .constants import DEFAULT_MAX_FRAMES, FRAME_FLOOR, FRAMES_PER_CHARACTER
from .noise import NoiseSource
from .request import Request

#: why a sequence's frames ended: END_AUDIO, or its frame budget
FINISHED_END, FINISHED_LENGTH = "end", "length"

#: what bounded a sequence's frame budget
BOUND_MAX_FRAMES, BOUND_TEXT, BOUND_CAPACITY, BOUND_NOISE = "max_frames", "text length", "KV capacity", "noise rows"


def frame_budget(capacity: int, prompt_len: int, max_frames: int | None, noise: NoiseSource,
                 text_chars: int | None = None) -> tuple[int, str]:
    """How many frames a sequence may generate, and what bounds it: the request's cap (checked ≥ 1
    where the request's options were built), or without one ``DEFAULT_MAX_FRAMES`` and the budget
    of its text's length (``FRAME_FLOOR + FRAMES_PER_CHARACTER × text_chars``); bounded by the
    noise rows and the KV cache."""
    room = capacity - prompt_len + 1  # frame n is computed from position P−1+n
    if room < 1:
        raise CapacityError(
            f"the prompt has {prompt_len} tokens but the KV cache holds {capacity} positions; "
            "shorten the text or raise the capacity"
        )
    if max_frames is None:
        bounds = [(DEFAULT_MAX_FRAMES, BOUND_MAX_FRAMES), (room, BOUND_CAPACITY)]
        if text_chars is not None:
            bounds.append((FRAME_FLOOR + FRAMES_PER_CHARACTER * text_chars, BOUND_TEXT))
        if noise.rows_left is not None:
            bounds.append((noise.rows_left, BOUND_NOISE))
        return min(bounds)
    if max_frames > room:
        raise CapacityError(
            f"{max_frames} frames after a {prompt_len}-token prompt need {prompt_len + max_frames - 1} "
            f"positions; the KV cache holds {capacity}"
        )
    if noise.rows_left is not None and noise.rows_left < max_frames:
        raise VoxtralError(f"noise has {noise.rows_left} rows but max_frames is {max_frames}")
    return max_frames, BOUND_MAX_FRAMES


@dataclass(eq=False)
class Sequence:
    """One text part being generated — what the scheduler admits and the frame loop steps: its
    prompt (embeddings, and the ids for its result), noise and frame budget; once admitted, its
    KV-cache slot and hidden state, the codes of its frames so far and how many of them are audio."""

    embeds: np.ndarray
    noise: NoiseSource
    budget: int
    bound: str = BOUND_MAX_FRAMES  # what set the budget (reported when it ends the sequence)
    prefix: PrefixKV | None = None  # the keys/values of embeds[:prefix.length], until prefilled
    request: Request | None = None  # the request it is a part of (None: driven by hand)
    part: int = 0  # which part of the request
    prompt_ids: np.ndarray | None = None
    slot: int = -1
    codes: list[np.ndarray] = field(default_factory=list)  # each frame's codes [37], END_AUDIO not included
    emitted: int = 0  # frames already turned into audio
    hidden: np.ndarray | None = None
    finish_reason: str | None = None  # FINISHED_END or FINISHED_LENGTH once done

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def expressiveness(self) -> float | None:
        """The flow head's guidance scale of its frames (None: the checkpoint's)."""
        return None if self.request is None else self.request.expressiveness

    @property
    def next_position(self) -> int:
        """Where the last frame's codes are fed back: the prompt's length P plus that frame's index."""
        return self.embeds.shape[0] + len(self.codes) - 1


class FrameLoop:
    """The decode loop for every sequence in flight, one frame each per :meth:`step`.

    Sequences join with one prefill call into free cache slots (each after its prefix, if it has
    one). Each step runs one flow call for all active sequences (codes from each one's hidden and
    noise), then one backbone step for those that go on, each at its own position. A sequence
    leaves at END_AUDIO (that frame is not audio and never fed back) or at its frame budget, and
    its slot is free for the next.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self.free = list(range(backend.max_batch))
        self.active: list[Sequence] = []

    @property
    def has_room(self) -> bool:
        return bool(self.free)

    def join(self, *sequences: Sequence) -> None:
        """Prefill ``sequences`` into free slots in one backend call; a failed prefill takes no slot."""
        if len(sequences) > len(self.free):
            raise VoxtralError(f"{len(sequences)} sequences to start, {len(self.free)} free decoding slot(s)")
        slots = self.free[: len(sequences)]
        items = [PrefillItem(s.embeds[0 if s.prefix is None else s.prefix.length:], slot, s.prefix)
                 for s, slot in zip(sequences, slots)]
        hidden = self.backend.prefill_many(items)
        for sequence, slot, h in zip(sequences, slots, hidden):
            sequence.hidden, sequence.slot, sequence.prefix = h, slot, None
            self.free.remove(slot)
            self.active.append(sequence)

    def leave(self, sequence: Sequence) -> None:
        if sequence in self.active:
            self.active.remove(sequence)
            self.free.append(sequence.slot)
            self.free.sort()

    def step(self) -> list[tuple[Sequence, np.ndarray | None]]:
        """One frame for every active sequence: (sequence, codes [37]) — None at END_AUDIO. The codes
        are also appended to the sequence's own."""
        if not self.active:
            return []
        batch = list(self.active)
        hidden = np.stack([s.hidden for s in batch])
        draws = [s.noise.take() for s in batch]
        noise = np.stack([x0 for x0, _ in draws])
        semantic = None
        if any(sample is not None for _, sample in draws):  # zeros (greedy) for the rows not sampling
            semantic = np.zeros((len(batch), self.backend.config.audio.semantic_head_rows), np.float32)
            for row, (_, sample) in zip(semantic, draws):
                if sample is not None:
                    row[:] = sample
        scales = None  # every row at the checkpoint's guidance scale, unless one asked for another
        if any(s.expressiveness is not None for s in batch):
            default = self.backend.config.flow.cfg_alpha
            scales = np.array([default if s.expressiveness is None else s.expressiveness for s in batch])
        codes = self.backend.flow(hidden, noise, semantic, scales)
        events, going_on = [], []
        for sequence, frame in zip(batch, codes):
            if frame[0] == END_AUDIO:
                sequence.finish_reason = FINISHED_END
                self.leave(sequence)
                events.append((sequence, None))
                continue
            sequence.codes.append(frame)
            events.append((sequence, frame))
            if len(sequence.codes) >= sequence.budget:  # reported once, where the part's result is read
                sequence.finish_reason = FINISHED_LENGTH
                self.leave(sequence)
            else:
                going_on.append((sequence, frame))
        if going_on:
            embeds = self.backend.embed_codes(np.stack([frame for _, frame in going_on]))
            positions = [s.next_position for s, _ in going_on]
            slots = [s.slot for s, _ in going_on]
            for (sequence, _), h in zip(going_on, self.backend.step(embeds, positions, slots)):
                sequence.hidden = h
        return events
