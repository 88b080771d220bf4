"""What the scheduler is given and what it gives back: a :class:`Request` (one text to speak, split
into parts) and its typed events — :class:`AudioChunk`, :class:`PartFinished`,
:class:`RequestFailed` (:class:`Cancelled` when its caller stopped it) and :class:`RequestDone`
(the :class:`Usage`). :mod:`.results` turns one request's events into results, files or responses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ..errors import VoxtralError
from ..voices import Voice
from .noise import NoiseSource


class Cancelled(VoxtralError):
    """Generation was stopped by its caller (a client that went away)."""


@dataclass(frozen=True)
class Usage:
    text_tokens: int = 0  # text tokens in the prompts (voice rows and control tokens not counted)
    frames: int = 0  # audio frames generated (80 ms each)


@dataclass(eq=False)
class Request:
    """One text to speak: its parts (each generated from a fresh prompt), voice, noise and
    per-part frame cap. ``streaming``: audio in chunks as frames arrive (the scheduler's stream
    schedule) instead of one piece per part. ``expressiveness``: the flow head's guidance scale for
    this request's frames (None: the checkpoint's). Thread-safe :meth:`cancel`."""

    text: str  # the whole text, checked
    parts: tuple[str, ...]
    voice: Voice
    noise: NoiseSource
    max_frames: int | None = None
    streaming: bool = True
    expressiveness: float | None = None
    log_id: str | None = None  # its caller's id for it (a server's request id): on the scheduler's log lines about it
    usage: Usage = field(default_factory=Usage, init=False)  # so far; final in RequestDone
    _cancel: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def cancel(self) -> None:
        """Stop generating: the request leaves at the scheduler's next step (any thread)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


@dataclass(frozen=True)
class AudioChunk:
    request: Request
    part: int
    audio: np.ndarray  # float32, unclipped


@dataclass(frozen=True)
class PartFinished:
    request: Request
    part: int
    text: str
    prompt_ids: np.ndarray  # int64 [P]
    codes: np.ndarray  # int64 [T, 37], +2 offset
    finish_reason: str  # "end" (END_AUDIO) or "length" (the frame budget)
    bound: str  # what set the frame budget: max_frames, text length, KV capacity or noise rows


@dataclass(frozen=True)
class RequestFailed:
    request: Request
    error: Exception


@dataclass(frozen=True)
class RequestDone:
    request: Request
    usage: Usage


Event = Union[AudioChunk, PartFinished, RequestFailed, RequestDone]
