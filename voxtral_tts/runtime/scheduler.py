"""The one request path: requests → text parts → utterances → audio chunks.

Every caller drives this scheduler — ``TTS.generate`` / ``synthesize`` / ``stream``, the speech
server's worker, the GPU benchmark — so they all get the same admission, frame loop, codec
chunking, cancellation and errors (whisper's ``DecodingTask``, for speech, over many requests):

- :meth:`Scheduler.submit` queues a :class:`Request` (its text already split into parts);
- each :meth:`Scheduler.step`: drops cancelled requests, **admits** the next parts into free cache
  slots — prompt, frame budget, the voice prefix's keys/values from the :class:`.prefix_cache.
  PrefixCache` (where the backend can reuse them), and one prefill call for every part admitted
  (the rest of each prompt after its prefix) — runs one frame for every utterance in flight
  (:class:`.decoding.FrameLoop`), and turns frames into audio on the request's chunk schedule;
- it returns typed events: :class:`AudioChunk`, :class:`PartFinished` (codes and finish reason),
  :class:`RequestFailed` (the error; :class:`Cancelled` when the caller cancelled), and
  :class:`RequestDone` (usage). A failure is confined to the requests it concerns: a bad prompt or
  a codec error fails its own request, a backbone/flow failure every request in that frame.

Parts of a request run one after another (the noise continues across them); parts of requests in
flight are admitted ahead of new requests. Streamed audio follows the scheduler's chunk schedule
(:func:`.codec.stream_chunk_frames`: 2 frames, 3 more, then 5s up to 25, then 25s by default). The
per-part frame budget is :func:`.decoding.frame_budget`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

import numpy as np

from ..errors import VoxtralError
from ..tokenizer import PREFIX_OVERHEAD, PROMPT_OVERHEAD
from ..voices import Voice
from .backend import Backend
from .codec import codec_audio, codec_span, parse_stream_chunks, stream_chunk_frames
from .constants import STREAM_CHUNKS
from .decoding import FrameLoop, NoiseSource, Utterance, frame_budget
from .prefix_cache import PrefixCache

log = logging.getLogger(__name__)

#: a request's text → (token ids [P], prompt embeddings [P, D])
PromptBuilder = Callable[[str, Voice], "tuple[np.ndarray, np.ndarray]"]


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
    schedule) instead of one piece per part. Thread-safe :meth:`cancel`."""

    text: str  # the whole text, checked
    parts: tuple[str, ...]
    voice: Voice
    noise: NoiseSource
    max_frames: int | None = None
    streaming: bool = True
    usage: Usage = field(default_factory=Usage, init=False)  # so far; final in RequestDone
    _next_part: int = field(default=0, init=False, repr=False)
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
    limit: str  # what set the frame budget: max_frames, text length, KV capacity or noise rows


@dataclass(frozen=True)
class RequestFailed:
    request: Request
    error: Exception


@dataclass(frozen=True)
class RequestDone:
    request: Request
    usage: Usage


Event = Union[AudioChunk, PartFinished, RequestFailed, RequestDone]


@dataclass(eq=False)
class _Part:
    """A part in flight: its request, prompt, frames so far and how many became audio."""

    request: Request
    index: int
    prompt_ids: np.ndarray
    utterance: Utterance
    frames: list[np.ndarray] = field(default_factory=list)
    emitted: int = 0


class Scheduler:
    """``prefix_cache``: the voice-prefix cache (None: every prompt is prefilled whole; also when
    the backend cannot reuse a prefix). ``stream_chunks``: frames per streamed chunk, the last
    repeating (:func:`.codec.parse_stream_chunks`)."""

    def __init__(self, backend: Backend, prompt: PromptBuilder, prefix_cache: PrefixCache | None = None,
                 stream_chunks=STREAM_CHUNKS):
        self.backend = backend
        self._prompt = prompt
        self.prefix_cache = prefix_cache if backend.prefix_identity is not None else None
        if prefix_cache is not None and self.prefix_cache is None:
            log.info("the %s backend cannot reuse a voice prefix: every prompt is prefilled whole", backend.name)
        self.stream_chunks = parse_stream_chunks(stream_chunks)
        self._loop = FrameLoop(backend)
        self._new: deque[Request] = deque()  # submitted, not started
        self._next: deque[Request] = deque()  # in flight, next part to start (ahead of new requests)
        self._parts: dict[Utterance, _Part] = {}

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not (self._new or self._next or self._parts)

    def submit(self, request: Request) -> None:
        self._new.append(request)

    def step(self) -> list[Event]:
        """Drop cancelled requests, admit parts into free slots, run one frame for everything in flight."""
        events: list[Event] = []
        self._drop_cancelled(events)
        self._admit(events)
        if self._parts:
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
        for utterance, part in list(self._parts.items()):
            if part.request is request:
                self._loop.leave(utterance)
                del self._parts[utterance]

    # --- the three phases of a step ---------------------------------------------------------------
    def _drop_cancelled(self, events: list[Event]) -> None:
        for queue in (self._new, self._next):
            for request in [r for r in queue if r.cancelled]:
                queue.remove(request)
                events.append(RequestFailed(request, Cancelled("cancelled before generation started")))
        for utterance, part in list(self._parts.items()):
            if part.request.cancelled:
                log.info("request cancelled after %d frames", part.request.usage.frames)
                self._loop.leave(utterance)
                del self._parts[utterance]
                events.append(RequestFailed(part.request, Cancelled(
                    f"generation cancelled after {part.request.usage.frames} frames")))

    def _admit(self, events: list[Event]) -> None:
        """Start the next parts in free slots: prompt, frame budget and voice prefix for each, then
        one prefill call for all of them (the backend batches them where it can)."""
        admitted: list[tuple[Request, int, np.ndarray, Utterance]] = []
        while len(admitted) < len(self._loop.free) and (self._next or self._new):
            request = (self._next or self._new).popleft()
            index = request._next_part
            try:
                ids, embeds = self._prompt(request.parts[index], request.voice)
                budget, limit = frame_budget(self.backend.capacity, len(ids), request.max_frames, request.noise,
                                             len(request.parts[index]))
                prefix = None
                if self.prefix_cache is not None:
                    prefix = self.prefix_cache.get(self.backend, embeds[: request.voice.n_audio_tokens + PREFIX_OVERHEAD])
                admitted.append((request, index, ids, Utterance(embeds, request.noise, budget, limit, prefix)))
            except Exception as exc:  # this request only
                events.append(RequestFailed(request, exc))
        if not admitted:
            return
        try:
            self._loop.join(*[utterance for *_, utterance in admitted])
        except Exception as exc:  # the backend failed: the requests of this prefill fail
            log.error("prefill failed: %s: %s", type(exc).__name__, exc)
            events.extend(RequestFailed(request, exc) for request, *_ in admitted)
            return
        for request, index, ids, utterance in admitted:
            request._next_part += 1
            text_tokens = len(ids) - request.voice.n_audio_tokens - PROMPT_OVERHEAD
            request.usage = Usage(request.usage.text_tokens + text_tokens, request.usage.frames)
            self._parts[utterance] = _Part(request, index, ids, utterance)

    def _frame(self, events: list[Event]) -> None:
        try:
            stepped = self._loop.step()
        except Exception as exc:  # the backend failed: every request in this frame fails
            log.error("decoding step failed: %s: %s", type(exc).__name__, exc)
            for utterance, part in list(self._parts.items()):
                self._loop.leave(utterance)
                del self._parts[utterance]
                events.append(RequestFailed(part.request, exc))
            return
        for utterance, codes in stepped:
            part = self._parts[utterance]
            try:
                self._take_frame(part, codes, events)
            except Exception as exc:  # a codec failure: this request only
                self._loop.leave(utterance)
                self._parts.pop(utterance, None)
                events.append(RequestFailed(part.request, exc))

    # --- frames to audio --------------------------------------------------------------------------
    def _take_frame(self, part: _Part, codes: np.ndarray | None, events: list[Event]) -> None:
        request = part.request
        if codes is not None:
            part.frames.append(codes)
            request.usage = Usage(request.usage.text_tokens, request.usage.frames + 1)
            if request.streaming and len(part.frames) - part.emitted >= stream_chunk_frames(part.emitted, self.stream_chunks):
                events.append(AudioChunk(request, part.index, self._audio(part)))
        if not part.utterance.done:
            return
        del self._parts[part.utterance]
        if request.streaming:
            if len(part.frames) > part.emitted:
                events.append(AudioChunk(request, part.index, self._audio(part)))
        elif part.frames:
            spf = self.backend.config.samples_per_frame
            events.append(AudioChunk(request, part.index, codec_audio(self.backend.codec, np.stack(part.frames), spf)))
        codes_array = np.stack(part.frames) if part.frames else \
            np.zeros((0, self.backend.config.audio.num_codebooks), np.int64)
        events.append(PartFinished(request, part.index, request.parts[part.index], part.prompt_ids, codes_array,
                                   part.utterance.finish_reason, part.utterance.limit))
        if request._next_part < len(request.parts):
            self._next.append(request)
        else:
            events.append(RequestDone(request, request.usage))

    def _audio(self, part: _Part) -> np.ndarray:
        """The audio of the part's frames not yet emitted (one codec call with left context)."""
        audio = codec_span(self.backend.codec, part.frames, part.emitted, len(part.frames),
                           self.backend.config.samples_per_frame)
        part.emitted = len(part.frames)
        return audio
