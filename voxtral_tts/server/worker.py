"""The model's worker: one :class:`Synthesizer` loads the model on its own thread, then runs every
request through the runtime's scheduler (:mod:`voxtral_tts.runtime.scheduler`, the same path as
``TTS.stream``) — the requests in flight together, one frame for all of them per step, as many as
the backend has decoding slots; the others wait in a bounded queue and get 503 beyond it. Each
request is a :class:`Job`: its scheduler events go to its handler's event loop, and a client that
goes away cancels its generation at the next frame (its handler then receives :data:`GONE`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..errors import VoxtralError
from ..runtime.request import Event, Request, RequestDone, RequestFailed
from ..runtime.results import Collector
from ..runtime.tts import TTS
from .errors import APIError
from .schemas import ServerOptions

log = logging.getLogger(__name__)

#: what a job's queue holds once its client has gone away
GONE = None
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

    def put(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, event)

    def watch(self, receive) -> None:
        """Listen on the connection (``receive``: the request's ASGI receive, its body already read)."""
        async def listen():
            while (await receive())["type"] != "http.disconnect":
                pass
            self.request.cancel()  # a no-op once the request is done (the response completed)
            self.out.put_nowait(GONE)

        self.watcher = asyncio.create_task(listen())

    def close(self) -> None:
        """The response is over: stop generating (if still running) and watching."""
        self.request.cancel()
        if self.watcher is not None:
            self.watcher.cancel()


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
        self._submitted: queue.Queue = queue.Queue()  # jobs, WAKE, and None to stop
        self._jobs: dict[Request, Job] = {}  # the worker thread's own
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="voxtral-synthesizer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._submitted.put(None)

    @property
    def ready(self) -> bool:
        return self.tts is not None

    @property
    def alive(self) -> bool:
        """The worker thread runs (False before start, after stop, and once the model failed to load)."""
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        in_flight = self.tts.backend.max_batch if self.tts else 1
        with self._lock:
            if self._pending >= self.options.max_queue + in_flight:
                raise APIError(503, f"the server is busy ({self._pending} requests in progress or queued); retry later",
                               "server_error", code="overloaded", headers={"Retry-After": "1"})
            self._pending += 1
        job.request.listen(self._wake)
        self._submitted.put(job)

    def _wake(self) -> None:
        self._submitted.put(WAKE)

    def _run(self) -> None:
        try:
            self.tts = self._load()
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
        while True:
            try:  # wait for work only when there is nothing to do
                job = self._submitted.get(block=scheduler.idle)
                while True:
                    if job is None:
                        return
                    if job is not WAKE:
                        self._jobs[job.request] = job
                        scheduler.submit(job.request)
                    job = self._submitted.get_nowait()
            except queue.Empty:
                pass
            for event in scheduler.step():
                job = self._jobs[event.request]
                if isinstance(event, (RequestDone, RequestFailed)):
                    del self._jobs[event.request]
                    with self._lock:  # counted out before its handler can answer: a client's next
                        self._pending -= 1  # request never finds its finished one still counted
                job.put(event)
