"""The one request path: requests → text parts (sequences) → audio chunks.

Every caller drives this scheduler — ``TTS.generate`` / ``synthesize`` / ``stream``, the speech
server's worker, the GPU benchmark — so they all get the same admission, frame loop, codec
chunking, cancellation and errors (whisper's ``DecodingTask``, for speech, over many requests):

- :meth:`Scheduler.submit` queues a :class:`Request` (its text already split into parts);
- each :meth:`Scheduler.step`: drops cancelled requests, **admits** the next parts into free cache
  slots — prompt, frame budget, the voice prefix's keys/values from the :class:`.prefix_cache.
  PrefixCache` (where the backend can reuse them), and one prefill call for every part admitted
  (the rest of each prompt after its prefix) — runs one frame for every utterance in flight
  (:class:`.decoding.FrameLoop`, each part a :class:`.decoding.Sequence`), and turns frames into audio on the request's chunk schedule;
- it returns typed events (:mod:`.request`): :class:`AudioChunk`, :class:`PartFinished` (codes
  and finish reason), :class:`RequestFailed` (the error; :class:`Cancelled` when the caller
  cancelled), and :class:`RequestDone` (usage) — which :mod:`.results` turns into results. A failure is confined to the requests it concerns: a bad prompt or
  a codec error fails its own request, a backbone/flow failure every request in that frame.

Parts of a request run one after another (the noise continues across them); parts of requests in
flight are admitted ahead of new requests. Streamed audio follows the scheduler's chunk schedule
(:func:`.codec.stream_chunk_frames`: 2 frames, 3 more, then 5s up to 25, then 25s by default). The
per-part frame budget is :func:`.decoding.frame_budget`.
"""

from __future__ import annotations

import logging
from collections import deque
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

#: a request's text → (token ids [P], prompt embeddings [P, D])
PromptBuilder = Callable[[str, Voice], "tuple[np.ndarray, np.ndarray]"]


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
        self._new: deque[Request] = deque()  # submitted, not started
        self._next: deque[Request] = deque()  # in flight, next part to start (ahead of new requests)
        self._running: list[Sequence] = []  # admitted and not finished, in admission order

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not (self._new or self._next or self._running)

    def submit(self, request: Request) -> None:
        self._new.append(request)

    def step(self) -> list[Event]:
        """Drop cancelled requests, admit parts into free slots, run one frame for everything in flight."""
        events: list[Event] = []
        self._drop_cancelled(events)
        self._admit(events)
        if self._running:
            self._frame(events)
        return events

    def run(self, request: Request, cancelled: Callable[[], bool] | None = None) -> Iterator[Event]:
        """Submit ``request`` and yield its events until it is done or failed, stepping the whole
        scheduler. ``cancelled`` is polled before each step. A caller that stops early (or an
        exception) takes the request out of the scheduler."""
        self.submit(request)
        try:
            while True:
                if cancelled is not None and cancelled():
                    request.cancel()
                for event in self.step():
                    if event.request is request:
                        yield event
                        if isinstance(event, (RequestDone, RequestFailed)):
                            return
        finally:
            self.abort(request)

    def abort(self, request: Request) -> None:
        """Take ``request`` out at once (no event): its queued parts and its slot."""
        for queue in (self._new, self._next):
            if request in queue:
                queue.remove(request)
        for sequence in [s for s in self._running if s.request is request]:
            self._remove(sequence)

    def _remove(self, sequence: Sequence) -> None:
        self._loop.leave(sequence)
        self._running.remove(sequence)

    # --- the three phases of a step ---------------------------------------------------------------
    def _drop_cancelled(self, events: list[Event]) -> None:
        for queue in (self._new, self._next):
            for request in [r for r in queue if r.cancelled]:
                queue.remove(request)
                events.append(RequestFailed(request, Cancelled("cancelled before generation started")))
        for sequence in [s for s in self._running if s.request.cancelled]:
            request = sequence.request
            log.info("request cancelled after %d frames", request.usage.frames)
            self._remove(sequence)
            events.append(RequestFailed(request, Cancelled(f"generation cancelled after {request.usage.frames} frames")))

    def _admit(self, events: list[Event]) -> None:
        """Start the next parts in free slots: prompt, frame budget and voice prefix for each, then
        one prefill call for all of them (the backend batches them where it can)."""
        admitted: list[Sequence] = []
        while len(admitted) < len(self._loop.free) and (self._next or self._new):
            request = (self._next or self._new).popleft()
            part = request.next_part
            try:
                ids, embeds = self._prompt(request.parts[part], request.voice)
                budget, bound = frame_budget(self.backend.capacity, len(ids), request.max_frames, request.noise,
                                             len(request.parts[part]))
                prefix = None
                if self.prefix_cache is not None:
                    prefix = self.prefix_cache.get(self.backend, embeds[: request.voice.n_audio_tokens + PREFIX_OVERHEAD])
                admitted.append(Sequence(embeds, request.noise, budget, bound, prefix, request, part, ids))
            except Exception as exc:  # this request only
                events.append(RequestFailed(request, exc))
        if not admitted:
            return
        try:
            self._loop.join(*admitted)
        except Exception as exc:  # the backend failed: the requests of this prefill fail
            log.error("prefill failed: %s: %s", type(exc).__name__, exc)
            events.extend(RequestFailed(sequence.request, exc) for sequence in admitted)
            return
        for sequence in admitted:
            request = sequence.request
            request.next_part += 1
            text_tokens = len(sequence.prompt_ids) - request.voice.n_audio_tokens - PROMPT_OVERHEAD
            request.usage = Usage(request.usage.text_tokens + text_tokens, request.usage.frames)
            self._running.append(sequence)

    def _frame(self, events: list[Event]) -> None:
        try:
            stepped = self._loop.step()
        except Exception as exc:  # the backend failed: every request in this frame fails
            log.error("decoding step failed: %s: %s", type(exc).__name__, exc)
            for sequence in list(self._running):
                self._remove(sequence)
                events.append(RequestFailed(sequence.request, exc))
            return
        for sequence, codes in stepped:
            try:
                self._take_frame(sequence, codes, events)
            except Exception as exc:  # a codec failure: this request only
                if sequence in self._running:
                    self._remove(sequence)
                events.append(RequestFailed(sequence.request, exc))

    # --- frames to audio --------------------------------------------------------------------------
    def _take_frame(self, sequence: Sequence, codes: np.ndarray | None, events: list[Event]) -> None:
        request = sequence.request
        if codes is not None:
            request.usage = Usage(request.usage.text_tokens, request.usage.frames + 1)
            waiting = len(sequence.codes) - sequence.emitted
            if request.streaming and waiting >= stream_chunk_frames(sequence.emitted, self.stream_chunks):
                events.append(AudioChunk(request, sequence.part, self._audio(sequence)))
        if not sequence.done:
            return
        self._running.remove(sequence)
        if request.streaming:
            if len(sequence.codes) > sequence.emitted:
                events.append(AudioChunk(request, sequence.part, self._audio(sequence)))
        elif sequence.codes:
            spf = self.backend.config.samples_per_frame
            events.append(AudioChunk(request, sequence.part,
                                     codec_audio(self.backend.codec, np.stack(sequence.codes), spf)))
        codes_array = np.stack(sequence.codes) if sequence.codes else \
            np.zeros((0, self.backend.config.audio.num_codebooks), np.int64)
        events.append(PartFinished(request, sequence.part, request.parts[sequence.part], sequence.prompt_ids,
                                   codes_array, sequence.finish_reason, sequence.bound))
        if request.next_part < len(request.parts):
            self._next.append(request)
        else:
            events.append(RequestDone(request, request.usage))

    def _audio(self, sequence: Sequence) -> np.ndarray:
        """The audio of the sequence's frames not yet emitted (one codec call with left context)."""
        audio = codec_span(self.backend.codec, sequence.codes, sequence.emitted, len(sequence.codes),
                           self.backend.config.samples_per_frame)
        sequence.emitted = len(sequence.codes)
        return audio
