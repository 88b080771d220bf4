"""The one request path: requests → text parts (sequences) → audio chunks.

Every caller drives this scheduler — ``TTS.generate`` / ``synthesize`` / ``stream``, the speech
server's worker, the GPU benchmark — so they all get the same admission, frame loop, codec
chunking, cancellation and errors (whisper's ``DecodingTask``, for speech, over many requests):

- :meth:`Scheduler.submit` queues a :class:`Request` (its text already split into parts);
- each :meth:`Scheduler.step`: drops cancelled requests, **admits** the next parts into free cache
  slots — prompt, frame budget, the voice prefix's keys/values from the :class:`.prefix_cache.
  PrefixCache` (where the backend can reuse them), and one prefill call for every part admitted
  (the rest of each prompt after its prefix) — runs one frame for every sequence in flight
  (:class:`.decoding.FrameLoop`, each part a :class:`.decoding.Sequence`), and turns frames into
  audio on the request's chunk schedule;
- it returns typed events (:mod:`.request`): :class:`AudioChunk`, :class:`PartFinished` (codes
  and finish reason), :class:`RequestFailed` (the error; :class:`Cancelled` when the caller
  cancelled), and :class:`RequestDone` (usage) — which :mod:`.results` turns into results. A
  failure is confined to the requests it concerns: a bad prompt or a codec error fails its own
  request, a backbone/flow failure every request in that frame.

**Parts side by side.** The parts of one request are admitted into free slots like separate
requests, each with its own noise (:meth:`.noise.NoiseSource.for_part`: from the request's seed
and the part's index), so a result does not depend on how many slots there are or who else is
running. A request's events still come out strictly in order: a later part's audio chunks and
:class:`PartFinished` are held here until every earlier part's are out (and a part starts at most
``PARTS_AHEAD_PER_SLOT × max_batch`` parts after the one whose events go out next, so what is held
stays bounded). A request with explicit
noise rows runs its parts one after another instead, each taking the rows after the previous
part's (the rows are one stream).

**Fairness.** Each free slot goes to the waiting request (one with a part not yet started) that
holds the fewest slots, the earliest submitted among equals. A request alone takes every free
slot; once others wait, it gets no further slot before each of them holds as many as it does, so
a short request arriving behind a long text starts at the next slot that frees (running parts are
never stopped for it).

**Open requests.** A request may be open (``TTS.stream_text``, the realtime server): its parts
are appended while it runs, and it is done once it is closed and its last part is out. Its next
part starts only once the part being heard has its first audio out, so that a later part's
prefill never delays that audio (the parts still overlap, from their second chunk on). While it
waits for text the scheduler may have nothing to do (:attr:`Scheduler.idle`); whoever drives it
then waits for a change (:meth:`.request.Request.listen`) instead of stepping.

Streamed audio follows the scheduler's chunk schedule (:func:`.codec.stream_chunk_frames`: 2
frames, 3 more, then 5s up to 25, then 25s by default). The per-part frame budget is
:func:`.decoding.frame_budget`. A failed or cancelled request takes all its running parts out.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..tokenizer import PREFIX_OVERHEAD, PROMPT_OVERHEAD
from ..voices import Voice
from .backend import Backend
from .codec import codec_audio, codec_span, stream_chunk_frames
from .constants import STREAM_CHUNKS
from .decoding import FrameLoop, Sequence, frame_budget
from .prefix_cache import PrefixCache
from .request import AudioChunk, Cancelled, Event, PartFinished, Request, RequestDone, RequestFailed, Usage

log = logging.getLogger(__name__)

#: how far a request's parts may run ahead of the part whose events go out next, in parts per
#: decoding slot: a long first part does not make the scheduler hold the audio of every later one
PARTS_AHEAD_PER_SLOT = 4

#: how often :meth:`Scheduler.run` polls its ``cancelled`` while it waits for an open request's text
IDLE_POLL_S = 0.05

#: a request's text → (token ids [P], prompt embeddings [P, D])
PromptBuilder = Callable[[str, Voice], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class SchedulerLoad:
    """The scheduler's state for a server's gauges: requests with a part started (``in_flight``) and
    not yet started (``waiting``), parts decoding (``running``) and free decoding slots."""

    in_flight: int
    waiting: int
    running: int
    free_slots: int


@dataclass(eq=False)
class _Flight:
    """A request inside the scheduler: its next part to start, its parts running, and the events of
    parts after the one whose events go out now (``out``), held until it is done."""

    request: Request
    next_part: int = 0
    running: int = 0
    out: int = 0
    held: dict[int, list[Event]] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)  # parts whose PartFinished is held
    audible: set[int] = field(default_factory=set)  # parts from ``out`` on with audio out or held
    paced: bool = False  # submitted open: its parts start as the part being heard has audio (see waiting)

    @property
    def complete(self) -> bool:
        """Closed, and every part's events are out (``open`` read before the parts: an append happens
        before the close)."""
        return not self.request.open and self.out == len(self.request.parts)

    def waiting(self, ahead: int) -> bool:
        """A part may start now: one is left, fewer than ``ahead`` parts after the one whose events
        go out have started (what is held stays bounded), (explicit noise rows) none is running,
        and (a request submitted open) the part whose events go out has its first audio out: its
        text arrives while it is spoken, and a later part's prefill must not delay the first audio
        of the part being heard, even once the text is complete."""
        if self.next_part >= len(self.request.parts) or self.next_part - self.out >= ahead:
            return False
        if self.paced and self.next_part > self.out and self.out not in self.audible:
            return False
        return not (self.request.noise.explicit and self.running)


class Scheduler:
    """``prefix_cache``: the voice-prefix cache (None: every prompt is prefilled whole; also when
    the backend cannot reuse a prefix). ``stream_chunks``: frames per streamed chunk, the last
    repeating (checked where the TTS's options are built: :class:`.load_options.TTSOptions`)."""

    def __init__(self, backend: Backend, prompt: PromptBuilder, prefix_cache: PrefixCache | None = None,
                 stream_chunks: tuple[int, ...] = STREAM_CHUNKS):
        self.backend = backend
        self._prompt = prompt
        self.prefix_cache = prefix_cache if backend.prefix_identity is not None else None
        if prefix_cache is not None and self.prefix_cache is None:
            log.info("the %s backend cannot reuse a voice prefix: every prompt is prefilled whole", backend.name)
        self.stream_chunks = tuple(stream_chunks)
        self._loop = FrameLoop(backend)
        self._flights: dict[Request, _Flight] = {}  # submitted and not done, in submission order
        self._running: list[Sequence] = []  # admitted and not finished, in admission order
        self.frame_rows = 0  # sequences in the latest step's frame (0: no frame ran)

    @property
    def idle(self) -> bool:
        """Nothing to do until something changes: nothing in flight, no part that may start, no
        request cancelled or finished (an open request waiting for text leaves the scheduler idle)."""
        if self._running:
            return False
        ahead = PARTS_AHEAD_PER_SLOT * self.backend.max_batch
        return not any(f.request.cancelled or f.complete or f.waiting(ahead) for f in self._flights.values())

    def submit(self, request: Request) -> None:
        self._flights[request] = _Flight(request, paced=request.open)

    def load(self) -> SchedulerLoad:
        """What the scheduler holds now (read it on the thread that steps it)."""
        started = sum(1 for flight in self._flights.values() if flight.next_part)
        return SchedulerLoad(started, len(self._flights) - started, len(self._running), len(self._loop.free))

    def step(self) -> list[Event]:
        """Drop cancelled requests, admit parts into free slots, run one frame for everything in flight."""
        events: list[Event] = []
        self._drop_cancelled(events)
        self._finish_closed(events)
        self._admit(events)
        self.frame_rows = len(self._running)
        if self._running:
            self._frame(events)
        return events

    def run(self, request: Request, cancelled: Callable[[], bool] | None = None) -> Iterator[Event]:
        """Submit ``request`` and yield its events until it is done or failed, stepping the whole
        scheduler. ``cancelled`` is polled before each step. A caller that stops early (or an
        exception) takes the request out of the scheduler. While the scheduler has nothing to do (an
        open request waiting for its next part) it waits for the request to change."""
        changed = threading.Event()
        request.listen(changed.set)
        self.submit(request)
        try:
            while True:
                if cancelled is not None and cancelled():
                    request.cancel()
                if self.idle:
                    changed.wait(IDLE_POLL_S)
                    changed.clear()
                for event in self.step():
                    if event.request is request:
                        yield event
                        if isinstance(event, (RequestDone, RequestFailed)):
                            return
        finally:
            self.abort(request)

    def abort(self, request: Request) -> None:
        """Take ``request`` out at once (no event): its parts not started, its slots and held events."""
        self._flights.pop(request, None)
        for sequence in [s for s in self._running if s.request is request]:
            self._remove(sequence)

    def _remove(self, sequence: Sequence) -> None:
        self._loop.leave(sequence)
        self._running.remove(sequence)

    def _fail(self, request: Request, error: Exception, events: list[Event]) -> None:
        """``request`` fails: out with all its parts, and one RequestFailed (once)."""
        if request in self._flights:
            self.abort(request)
            events.append(RequestFailed(request, error))

    # --- the phases of a step ---------------------------------------------------------------------
    def _drop_cancelled(self, events: list[Event]) -> None:
        for flight in [f for f in self._flights.values() if f.request.cancelled]:
            request = flight.request
            if request.error is not None:
                error = request.error
            elif flight.next_part == 0:
                error = Cancelled("cancelled before generation started")
            else:
                log.info("request cancelled after %d frames", request.usage.frames,
                         extra={"request_id": request.log_id} if request.log_id else None)
                error = Cancelled(f"generation cancelled after {request.usage.frames} frames")
            self._fail(request, error, events)

    def _finish_closed(self, events: list[Event]) -> None:
        """An open request closed after its last part was out (or with none) is done now."""
        for flight in [f for f in self._flights.values() if f.complete]:
            del self._flights[flight.request]
            events.append(RequestDone(flight.request, flight.request.usage))

    def _choose(self) -> _Flight | None:
        """The request the next free slot goes to (the module's fairness rule), or None."""
        ahead = PARTS_AHEAD_PER_SLOT * self.backend.max_batch
        waiting = [f for f in self._flights.values() if f.waiting(ahead)]
        return min(waiting, key=lambda f: f.running, default=None)  # min keeps the earliest among equals

    def _admit(self, events: list[Event]) -> None:
        """Start parts in free slots: prompt, frame budget, noise and voice prefix for each, then
        one prefill call for all of them (the backend batches them where it can)."""
        admitted: list[Sequence] = []
        while len(admitted) < len(self._loop.free) and (flight := self._choose()) is not None:
            request, part = flight.request, flight.next_part
            try:
                ids, embeds = self._prompt(request.parts[part], request.voice)
                noise = request.noise.for_part(part)
                budget, bound = frame_budget(self.backend.capacity, len(ids), request.max_frames, noise,
                                             len(request.parts[part]))
                prefix = None
                if self.prefix_cache is not None:
                    prefix = self.prefix_cache.get(
                        self.backend, embeds[: request.voice.n_audio_tokens + PREFIX_OVERHEAD]
                    )
            except Exception as exc:  # this request only
                admitted = [s for s in admitted if s.request is not request]
                self._fail(request, exc, events)
                continue
            admitted.append(Sequence(embeds, noise, budget, bound, prefix, request, part, ids))
            flight.next_part += 1
            flight.running += 1
        if not admitted:
            return
        try:
            self._loop.join(*admitted)
        except Exception as exc:  # the backend failed: the requests of this prefill fail
            log.error("prefill failed: %s: %s", type(exc).__name__, exc)
            for sequence in admitted:
                self._fail(sequence.request, exc, events)
            return
        for sequence in admitted:
            request = sequence.request
            text_tokens = len(sequence.prompt_ids) - request.voice.n_audio_tokens - PROMPT_OVERHEAD
            request.usage = Usage(request.usage.text_tokens + text_tokens, request.usage.frames)
            self._running.append(sequence)

    def _frame(self, events: list[Event]) -> None:
        try:
            stepped = self._loop.step()
        except Exception as exc:  # the backend failed: every request in this frame fails
            log.error("decoding step failed: %s: %s", type(exc).__name__, exc)
            for sequence in list(self._running):
                self._fail(sequence.request, exc, events)
            return
        for sequence, codes in stepped:
            if sequence.request not in self._flights:  # failed by an earlier part's codec error
                continue
            try:
                self._take_frame(sequence, codes, events)
            except Exception as exc:  # a codec failure: this request only
                self._fail(sequence.request, exc, events)

    # --- frames to audio, in order ------------------------------------------------------------------
    def _take_frame(self, sequence: Sequence, codes: np.ndarray | None, events: list[Event]) -> None:
        request = sequence.request
        if codes is not None:
            request.usage = Usage(request.usage.text_tokens, request.usage.frames + 1)
            waiting = len(sequence.codes) - sequence.emitted
            if request.streaming and waiting >= stream_chunk_frames(sequence.emitted, self.stream_chunks):
                self._emit(AudioChunk(request, sequence.part, self._audio(sequence)), events)
        if not sequence.done:
            return
        self._running.remove(sequence)
        self._flights[request].running -= 1
        if request.streaming:
            if len(sequence.codes) > sequence.emitted:
                self._emit(AudioChunk(request, sequence.part, self._audio(sequence)), events)
        elif sequence.codes:
            spf = self.backend.config.samples_per_frame
            self._emit(
                AudioChunk(request, sequence.part, codec_audio(self.backend.codec, np.stack(sequence.codes), spf)),
                events,
            )
        codes_array = np.stack(sequence.codes) if sequence.codes else \
            np.zeros((0, self.backend.config.audio.num_codebooks), np.int64)
        self._emit(PartFinished(request, sequence.part, request.parts[sequence.part], sequence.prompt_ids,
                                codes_array, sequence.finish_reason, sequence.bound), events)

    def _emit(self, event: AudioChunk | PartFinished, events: list[Event]) -> None:
        """Pass a part's event on if every earlier part's are out, else hold it; a part finishing
        lets the held events of the parts after it out, and the last one ends the request."""
        flight = self._flights[event.request]
        if isinstance(event, AudioChunk):
            flight.audible.add(event.part)
        if event.part != flight.out:
            flight.held.setdefault(event.part, []).append(event)
            if isinstance(event, PartFinished):
                flight.finished.add(event.part)
            return
        events.append(event)
        if not isinstance(event, PartFinished):
            return
        flight.out += 1
        while flight.out in flight.held or flight.out in flight.finished:
            events.extend(flight.held.pop(flight.out, []))
            if flight.out not in flight.finished:
                break
            flight.finished.discard(flight.out)
            flight.out += 1
        flight.audible = {part for part in flight.audible if part >= flight.out}
        if flight.complete:
            del self._flights[flight.request]
            events.append(RequestDone(flight.request, flight.request.usage))

    def _audio(self, sequence: Sequence) -> np.ndarray:
        """The audio of the sequence's frames not yet emitted (one codec call with left context)."""
        audio = codec_span(self.backend.codec, sequence.codes, sequence.emitted, len(sequence.codes),
                           self.backend.config.samples_per_frame)
        sequence.emitted = len(sequence.codes)
        return audio
