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
    schedule) instead of one piece per part. ``open``: more parts may still come
    (:meth:`append`, from any thread, while the request runs) until :meth:`close` — the request is
    done once it is closed and its last part is out. Thread-safe :meth:`cancel`, :meth:`append`,
    :meth:`close`; each tells the :meth:`listen` callbacks (whoever drives the scheduler and waits
    while it has nothing to do). ``expressiveness``: the flow head's guidance scale for this
    request's frames (None: the checkpoint's)."""

    text: str  # the whole text, checked (of an open request: its parts so far)
    parts: tuple[str, ...]
    voice: Voice
    noise: NoiseSource
    max_frames: int | None = None
    streaming: bool = True
    expressiveness: float | None = None
    log_id: str | None = None  # its caller's id for it (a server's request id): on the scheduler's log lines about it
    open: bool = False
    usage: Usage = field(default_factory=Usage, init=False)  # so far; final in RequestDone
    error: Exception | None = field(default=None, init=False)  # why it was stopped (None: by its caller)
    _cancel: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _listeners: list = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def cancel(self, error: Exception | None = None) -> None:
        """Stop generating: the request leaves at the scheduler's next step (any thread), failed
        with ``error`` (None: :class:`Cancelled`)."""
        if error is not None and not self._cancel.is_set():
            self.error = error
        self._cancel.set()
        self._changed()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def append(self, part: str) -> None:
        """One more part, after the others (an open request only)."""
        with self._lock:
            if not self.open:
                raise VoxtralError("parts can be appended only to an open request, before it is closed")
            self.parts = (*self.parts, part)
            self.text = f"{self.text} {part}" if self.text else part
        self._changed()

    def close(self) -> None:
        """No more parts: the request is done once those it has are out."""
        with self._lock:
            self.open = False
        self._changed()

    def listen(self, callback) -> None:
        """Call ``callback()`` (from the thread that changes the request) after each append, close
        or cancel."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in list(self._listeners):
            callback()


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
