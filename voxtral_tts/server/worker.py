"""The model's worker: one :class:`Synthesizer` loads the model on its own thread, then runs every
request through the runtime's scheduler (:mod:`voxtral_tts.runtime.scheduler`, the same path as
``TTS.stream``) — the requests in flight together, one frame for all of them per step, as many as
the backend has decoding slots; the others wait in a bounded queue and get 503 beyond it. Each
request is a :class:`Job`: its scheduler events go to its handler's event loop, and a client that
goes away cancels its generation at the next frame (its handler then receives :data:`GONE`).

Admission: the requests admitted wait in submission order (the scheduler gives each free slot to
the earliest waiting request among those holding the fewest slots). A request beyond
``max_batch + max_queue`` is refused (503, code ``overloaded``) with a ``Retry-After`` from the
queue's state (:meth:`Synthesizer.retry_after`): the time until a place is likely free, measured as
the recent time between completions, and later for each client refused after it — so refused
clients come back one after another, in the order they were refused, instead of all at once.

Shutting down (:mod:`.shutdown`): :meth:`Synthesizer.drain` stops admitting (503, code
``shutting_down``; ``/ready`` 503); :meth:`Synthesizer.end_all` ends every request still in
progress with :class:`~.errors.ServerShuttingDown` (their clients see the error).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import VoxtralError
from ..runtime.request import Cancelled, Event, Request, RequestDone, RequestFailed
from ..runtime.results import Collector
from ..runtime.tts import TTS
from .access_log import RequestRecord, current_request
from .errors import APIError, ServerShuttingDown
from .schemas import ServerOptions

log = logging.getLogger(__name__)

#: what a job's queue holds once its client has gone away
GONE = None
#: the worker's queue item that ends every job in progress (:meth:`Synthesizer.end_all`)
_END_ALL = object()
#: the Retry-After of a refusal before any request has completed (seconds between completions)
DEFAULT_COMPLETION_GAP_S = 1.0
MAX_RETRY_AFTER_S = 120


@dataclass(frozen=True)
class Load:
    """The worker's state after its latest step: requests generating (``in_flight``) and admitted but
    not yet started (``queued``, those not yet handed to the scheduler included), free decoding slots."""

    in_flight: int = 0
    queued: int = 0
    free_slots: int = 0
#: what the worker's queue is given when a request it runs changed (an open request's text, a
#: cancel): the worker, waiting while it has nothing to do, looks again
WAKE = object()


@dataclass(eq=False)
class Job:
    """A request of this server: the scheduler's :class:`Request`, the :class:`Collector` its
    handler reads its events with (finish reason, usage, the cut-part warning), where its events go
    (the request handler's event loop), and a watch on the client's connection: when the client goes
    away (ASGI ``http.disconnect``) the request is cancelled — it leaves the scheduler at its next
    step — and the handler is woken with :data:`GONE`."""

    request: Request
    collector: Collector
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    watcher: asyncio.Task | None = None
    record: RequestRecord | None = field(default_factory=current_request)  # its access-log record
    submitted: float = field(default_factory=time.monotonic)
    gone: bool = False  # its client went away
    closed: bool = False

    def __post_init__(self):
        if self.record is not None:  # the worker thread's log lines about it carry its id too
            self.request.log_id = self.record.id

    def put(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, event)

    def watch(self, receive) -> None:
        """Listen on the connection (``receive``: the request's ASGI receive, its body already read)."""
        async def listen():
            while (await receive())["type"] != "http.disconnect":
                pass
            self.gone = True
            self.request.cancel()  # a no-op once the request is done (the response completed)
            self.out.put_nowait(GONE)

        self.watcher = asyncio.create_task(listen())

    def took(self, event) -> None:
        """The handler took ``event`` (from :func:`~.streaming.next_event`): the record's time to
        first audio and generation time."""
        if self.record is None:
            return
        if isinstance(event, RequestDone):
            self.record.generation = time.monotonic() - self.submitted
        elif not isinstance(event, RequestFailed):
            self.record.first_audio()

    def close(self) -> None:
        """The response is over: stop generating (if still running) and watching; the record gets
        the request's frames, audio and finish reason (end, length, cancelled or failed)."""
        self.request.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
        if self.closed:
            return
        self.closed = True
        collector = self.collector
        if collector.done:
            reason = collector.finish_reason
        elif collector.error is not None and not isinstance(collector.error, Cancelled):
            reason = "failed"
        else:  # its client went away, or its response was abandoned before the end
            reason = "cancelled"
        if self.record is not None:
            self.record.speech(frames=self.request.usage.frames, audio_seconds=collector.seconds,
                               finish_reason=reason)
            self.record.client_gone = self.record.client_gone or self.gone
            if isinstance(collector.error, ServerShuttingDown):
                self.record.error = "shutting_down"


class Synthesizer:
    """Loads the model on a worker thread, then runs the requests through the :class:`TTS`'s
    scheduler — as many together as the backend has decoding slots (``max_batch``): each frame is
    one flow call and one backbone step for every request in flight; requests join and leave
    between frames. Each request's events go to its handler."""

    def __init__(self, load: Callable[[], TTS], options: ServerOptions):
        self._load = load
        self.options = options
        self.tts: TTS | None = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.draining = False
        self._state = Load()  # the scheduler's, replaced by the worker thread after each step
        self.step_observers: list[Callable[[int], None]] = []  # called with each step's decode rows
        self._submitted: queue.Queue = queue.Queue()  # jobs, WAKE, _END_ALL, and None to stop
        self._jobs: dict[Request, Job] = {}  # the worker thread's own
        self._pending = 0
        self._lock = threading.Lock()
        self._gap = DEFAULT_COMPLETION_GAP_S  # recent time between completions while busy (moving average)
        self._last_done: float | None = None  # when the latest request completed with others left
        self._next_retry = 0.0  # the latest time a refused client was told to come back
        self._thread = threading.Thread(target=self._run, name="voxtral-synthesizer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._submitted.put(None)

    @property
    def load(self) -> Load:
        """In flight and free slots as of the latest step; queued: every admitted request not in flight, now."""
        state = self._state
        return Load(state.in_flight, max(self._pending - state.in_flight, 0), state.free_slots)

    @property
    def pending(self) -> int:
        """Requests admitted and not done."""
        return self._pending

    def drain(self) -> None:
        """Admit nothing more (shutting down): new requests and ``/ready`` get 503."""
        self.draining = True

    def end_all(self) -> None:
        """End every request in progress with :class:`~.errors.ServerShuttingDown` (its client sees
        the error: a 503, a stream's error event, a cut transfer), and any submitted later."""
        self.draining = True
        self._submitted.put(_END_ALL)

    def retry_after(self) -> float:
        """Seconds a refused client should wait (see the module's docstring); each call books a
        later time than the one before while the server stays full."""
        with self._lock:
            now = time.monotonic()
            at = max(now + self._gap, self._next_retry + self._gap)
            self._next_retry = at
            return min(at - now, MAX_RETRY_AFTER_S)

    @property
    def ready(self) -> bool:
        return self.tts is not None

    @property
    def alive(self) -> bool:
        """The worker thread runs (False before start, after stop, and once the model failed to load)."""
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        if self.draining:
            raise APIError(503, "the server is shutting down; retry on another instance", "server_error",
                           code="shutting_down", headers={"Retry-After": "1", "Connection": "close"})
        in_flight = self.tts.backend.max_batch if self.tts else 1
        with self._lock:
            full = self._pending >= self.options.max_queue + in_flight
            pending = self._pending
            if not full:
                self._pending += 1
        if full:
            wait = self.retry_after()
            raise APIError(503, f"the server is busy ({pending} requests in progress or queued); retry in "
                                f"{math.ceil(wait)} s", "server_error", code="overloaded",
                           headers={"Retry-After": str(max(1, math.ceil(wait))),
                                    "retry-after-ms": str(max(1, round(wait * 1000)))})
        job.request.listen(self._wake)
        self._submitted.put(job)

    def _wake(self) -> None:
        self._submitted.put(WAKE)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.tts = self._load()
            self.load_seconds = time.monotonic() - started
            log.info("model ready: %d voices, %d decoding slots", len(self.tts.voices), self.tts.backend.max_batch)
            for name in self.tts.voices:  # a preset file the server cannot read is its operator's to fix
                try:
                    self.tts.voice_bank.get(name)
                except VoxtralError as exc:
                    log.error("voice %s cannot be read (requests for it will fail with 500): %s", name, exc)
        except Exception as exc:  # reported by /ready and every request
            self.load_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, VoxtralError) else str(exc)
            log.error("model failed to load: %s", self.load_error)
            return
        scheduler = self.tts.scheduler
        self._state = Load(free_slots=self.tts.backend.max_batch)
        ending = False
        while True:
            try:  # wait for work only when there is nothing to do
                job = self._submitted.get(block=scheduler.idle)
                while True:
                    if job is None:
                        return
                    if job is _END_ALL:
                        ending = True
                    elif job is not WAKE:
                        self._jobs[job.request] = job
                        scheduler.submit(job.request)
                    job = self._submitted.get_nowait()
            except queue.Empty:
                pass
            if ending:
                self._end_jobs(scheduler)
            events = scheduler.step()
            for event in events:
                job = self._jobs[event.request]
                if isinstance(event, (RequestDone, RequestFailed)):
                    self._done(event.request)
                job.put(event)
            self._observe(scheduler)

    def _done(self, request: Request) -> None:
        del self._jobs[request]
        with self._lock:  # counted out before its handler can answer: a client's next
            self._pending -= 1  # request never finds its finished one still counted
            now = time.monotonic()
            if self._last_done is not None:  # the gap since a completion that left others waiting
                self._gap = 0.8 * self._gap + 0.2 * (now - self._last_done)
            self._last_done = now if self._pending else None

    def _end_jobs(self, scheduler) -> None:
        """Every job still here fails with ServerShuttingDown (the shutdown's deadline passed)."""
        for request, job in list(self._jobs.items()):
            scheduler.abort(request)
            self._done(request)
            job.put(RequestFailed(request, ServerShuttingDown("the server is shutting down: generation ended "
                                                              "before its end")))

    def _observe(self, scheduler) -> None:
        state = scheduler.load()
        self._state = Load(state.in_flight, state.waiting, state.free_slots)
        for observer in self.step_observers:
            observer(scheduler.frame_rows)
