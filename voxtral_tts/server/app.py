"""An OpenAI-compatible speech server (FastAPI): ``POST /v1/audio/speech`` and friends.

One :class:`Synthesizer` owns the model on a worker thread and runs every request through the
runtime's scheduler (:mod:`voxtral_tts.runtime.scheduler`, the same path as ``TTS.stream``), the
requests in flight together, one frame for all of them per step (as many as the backend has
decoding slots; the others wait in a bounded queue and get 503 beyond it).
The scheduler's typed events flow from the worker to each request's handler; audio is encoded
per ``response_format`` — whole, chunked (``stream_format: "audio"``) or as server-sent events
(``stream_format: "sse"``). A client that goes away cancels its generation at the next frame.
``GET /`` is a page to try the voices (:mod:`.web`) unless ``ServerOptions.web`` is off.

Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for bad
input, 413 for an oversized body, 503 while loading or overloaded, 500 without a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Union

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import VoiceError, VoxtralError
from ..runtime.constants import MAX_TEMPERATURE
from ..runtime.decoding import FINISHED_END, check_temperature
from ..runtime.scheduler import (AudioChunk, Cancelled, Event, PartFinished, Request, RequestDone, RequestFailed,
                                 Usage)
from ..runtime.tts import TTS
from ..text import MAX_INPUT_CHARS, SAYABLE_PATTERN, check_text
from ..voices import voice_gender, voice_language
from ..encoding import FORMATS, MAX_SPEED, MIN_SPEED, StreamEncoder, check_format, check_speed
from .web import add_web

log = logging.getLogger(__name__)

MODEL_ID = "voxtral-4b-tts-2603"
NO_ENCODER = (
    "voice cloning from reference audio is not available: the released Voxtral-4B-TTS-2603 checkpoint "
    "has no codec encoder; use one of the preset voices (GET /v1/audio/voices)"
)


@dataclass(frozen=True)
class ServerOptions:
    max_queue: int = 8  # requests waiting behind the one being generated; 503 beyond
    max_input_chars: int = MAX_INPUT_CHARS
    max_body_bytes: int = 1 << 20
    max_frames: int | None = None  # per text part; None: the runtime's text-length budget (at most 2048)
    model_id: str = MODEL_ID
    web: bool = True  # the page to try the voices at GET / (voxtral-serve --no-web: the API alone)


class VoiceRef(BaseModel):
    id: str


def _integer(value):
    """JSON's integers (``7`` and ``7.0``), not ``true`` or ``"7"``: no lax coercion."""
    if isinstance(value, (bool, str)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


#: the seed: a JSON-safe integer ≥ 0
Seed = Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(_integer)]


class SpeechRequest(BaseModel):
    """OpenAI's request body, plus ``seed``, ``stream`` and the voice-cloning fields we refuse."""

    model_config = ConfigDict(extra="ignore")

    model: str = MODEL_ID
    input: str = Field(json_schema_extra={"minLength": 1, "maxLength": MAX_INPUT_CHARS, "pattern": SAYABLE_PATTERN,
                                          "description": "the text; longer than 400 characters is spoken part by "
                                                         "part (the server's limit: --max-input-chars)"})
    voice: Union[str, VoiceRef] = Field(default="alloy", description="a preset name or an OpenAI alias "
                                                                     "(GET /v1/audio/voices); never a path")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm", "ogg"] = Field(
        default="mp3", description="the audio format; ogg is Ogg/Opus, like opus")
    speed: float = Field(default=1.0, strict=True,  # strict: no true / "1" coerced (OpenAI types it a number)
                         json_schema_extra={"minimum": MIN_SPEED, "maximum": MAX_SPEED})
    instructions: str | None = None  # accepted; this checkpoint has no instruction conditioning
    stream_format: Literal["audio", "sse"] | None = None
    stream: StrictBool | None = None
    seed: Seed | None = None
    temperature: float = Field(default=0.0, strict=True,
                               json_schema_extra={"minimum": 0.0, "maximum": MAX_TEMPERATURE},
                               description="sample the semantic code at this temperature (0: the reference's "
                                           "argmax); reproducible with a seed")
    normalize: bool = Field(default=True, strict=True,
                            description="rewrite numbers, currencies, dates, times and markdown into words of the "
                                        "voice's language before speaking (false: the text as given)")
    ref_audio: Any = Field(default=None, json_schema_extra={"type": "null"},
                           description="refused (400) unless null: voice cloning needs the codec encoder the "
                                       "release lacks")
    ref_text: Any = Field(default=None, json_schema_extra={"type": "null"}, description="refused (400), as ref_audio")
    reference_audio: Any = Field(default=None, json_schema_extra={"type": "null"},
                                 description="refused (400), as ref_audio")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: every 4xx/5xx answer of this server."""

    error: ErrorDetail


def _error(description: str) -> dict:
    return {"model": ErrorResponse, "description": description}


#: what ``POST /v1/audio/speech`` answers, for /openapi.json
SPEECH_RESPONSES = {
    200: {"description": "the audio: a whole file, a chunked stream (stream_format audio) or server-sent events "
                         "(stream_format sse); X-Finish-Reason says end or length for whole files",
          "content": {**{media: {"schema": {"type": "string", "format": "binary"}} for media in FORMATS.values()},
                      "text/event-stream": {"schema": {  # each event: speech.audio.delta, .done, or error
                          "type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}}},
    400: _error("bad input: empty or too long text, a text part that cannot fit the KV cache, unknown voice, "
                "bad format, speed or types, malformed JSON, voice cloning fields"),
    413: _error("a request body over the limit (1 MiB by default)"),
    500: _error("an internal failure, or a preset voice the server cannot read"),
    503: _error("the model is loading, failed to load, or the server is busy (Retry-After)"),
}


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers


def encodable(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (a lone surrogate) as a backslash escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def quoted(value: object, limit: int = 40) -> str:
    """A short, encodable rendering of client input for an error message (never the whole of it:
    a lone surrogate or a megabyte of text must not break or bloat the response)."""
    text = encodable(str(value))
    return "'" + (text if len(text) <= limit else text[:limit] + "…") + "'"


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(encodable(exc.message), exc.type, exc.param, exc.code), status_code=exc.status,
                        headers=exc.headers)


# --- the model's worker ------------------------------------------------------------------------------

#: what a job's queue holds once its client has gone away
GONE = None
#: response header of a whole file: "end" (every part ended with END_AUDIO) or "length" (a part
#: stopped at its frame budget and its audio is cut)
FINISH_REASON = "X-Finish-Reason"


@dataclass(eq=False)
class Job:
    """A request of this server: the scheduler's :class:`Request`, where its events go (the request
    handler's event loop), and a watch on the client's connection: when the client goes away
    (ASGI ``http.disconnect``) the request is cancelled — it leaves the scheduler at its next step
    — and the handler is woken with :data:`GONE`."""

    request: Request
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    watcher: asyncio.Task | None = None
    finish_reason: str = FINISHED_END  # "length" once a part stopped at its frame budget before END_AUDIO

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
        self._submitted: queue.Queue[Job | None] = queue.Queue()
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
        self._submitted.put(job)

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
                    self._jobs[job.request] = job
                    scheduler.submit(job.request)
                    job = self._submitted.get_nowait()
            except queue.Empty:
                pass
            for event in scheduler.step():
                job = self._jobs[event.request]
                if isinstance(event, PartFinished):
                    TTS.warn_if_cut(event, len(event.request.parts))
                if isinstance(event, (RequestDone, RequestFailed)):
                    del self._jobs[event.request]
                    with self._lock:  # counted out before its handler can answer: a client's next
                        self._pending -= 1  # request never finds its finished one still counted
                job.put(event)


# --- the app -----------------------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, declared (Content-Length) or
    streamed (chunked). The body is read here, up to the limit, and handed to the app whole: an
    error raised while the app itself reads would become FastAPI's 400 for an unparsable body."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away while sending
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.limit:
                return await self._reject(send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later: disconnects

        await self.app(scope, replay, send)

    async def _reject(self, send):
        body = json.dumps(error_body(f"request body over {self.limit} bytes", "invalid_request_error",
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(load: Callable[[], TTS], options: ServerOptions | None = None) -> FastAPI:
    """The app; ``load`` builds the :class:`TTS` (called once, on the worker thread, at start-up)."""
    options = options or ServerOptions()
    synth = Synthesizer(load, options)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        synth.start()
        yield
        synth.stop()

    app = FastAPI(title="voxtral-tts", summary="OpenAI-compatible speech for Voxtral-4B-TTS-2603", lifespan=lifespan)
    app.state.synthesizer = synth
    app.add_middleware(BodyLimit, limit=options.max_body_bytes)
    fastapi_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's schema less its 422 entries (validation errors are answered 400 here) and, once
        the model is loaded, with its voices as the ``voice`` field's values."""
        if app.openapi_schema is None:
            schema = fastapi_openapi()
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            if not synth.ready:
                return schema  # rebuilt (with the voices) once the model is loaded
            names = synth.tts.voices + sorted(synth.tts.voice_bank.aliases)
            schema["components"]["schemas"]["SpeechRequest"]["properties"]["voice"]["anyOf"] = [
                {"type": "string", "enum": names},
                {"type": "object", "properties": {"id": {"type": "string", "enum": names}}, "required": ["id"]}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # loc is ("body", <character offset>)
            return error_response(APIError(400, "the request body is not valid JSON"))
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        if not loc and first.get("type") in ("model_attributes_type", "dict_type"):
            return error_response(APIError(400, "the request body must be a JSON object, sent with "
                                                "Content-Type: application/json"))
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return error_response(APIError(400, message, param=loc[0] if loc else None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type_, headers=exc.headers))

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_response(APIError(500, "internal server error", "server_error"))

    def tts_or_503() -> TTS:
        if synth.load_error:  # the detail (paths, library text) is in the log, not in the body
            raise APIError(503, "the model failed to load; see the server log", "server_error",
                           code="model_unavailable")
        if not synth.ready:
            raise APIError(503, "the model is still loading; retry shortly", "server_error", code="loading")
        return synth.tts

    @app.get("/health")
    async def health():
        """Liveness: 200 while the server can serve (or is still loading); 503 once the model
        failed to load, so that an orchestrator's liveness probe restarts the process."""
        if synth.load_error:
            raise APIError(503, "the model failed to load; see the server log", "server_error",
                           code="model_unavailable")
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        tts_or_503()
        return {"status": "ready", "model": options.model_id}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": options.model_id, "object": "model", "created": 0,
                                            "owned_by": "mistralai"}]}

    @app.get("/v1/audio/voices")
    async def voices():
        tts = tts_or_503()
        aliases = tts.voice_bank.aliases
        return {"voices": [{"id": name, "name": name, "language": voice_language(name), "gender": voice_gender(name),
                            "aliases": sorted(a for a, v in aliases.items() if v == name)} for name in tts.voices],
                "default": tts.voice_bank.default}

    @app.post("/v1/audio/speech", response_class=Response, responses=SPEECH_RESPONSES)
    async def speech(body: SpeechRequest, request: HTTPRequest):
        tts = tts_or_503()
        if any(v is not None for v in (body.ref_audio, body.reference_audio, body.ref_text)):
            raise APIError(400, NO_ENCODER, param="ref_audio", code="voice_cloning_unavailable")
        try:
            text = check_text(body.input, options.max_input_chars)
        except VoxtralError as exc:
            raise APIError(400, f"input: {exc}", param="input") from None
        voice_name = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
        try:
            voice = tts.voice_bank.resolve_name(voice_name)  # names and aliases only: never a server path
        except VoxtralError:
            raise APIError(400, f"unknown voice {quoted(voice_name)}; GET /v1/audio/voices lists them",
                           param="voice", code="unknown_voice") from None
        try:
            speed = check_speed(body.speed)
        except ValueError:
            raise APIError(400, f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {body.speed}",
                           param="speed") from None
        try:
            temperature = check_temperature(body.temperature)
        except VoxtralError as exc:
            raise APIError(400, str(exc), param="temperature") from None

        try:  # every part checked against the KV cache before anything is generated
            speech_request = tts.request(text, voice, max_frames=options.max_frames, seed=body.seed,
                                         normalize=body.normalize, temperature=temperature)
        except VoiceError as exc:  # a preset's file the server cannot read: the server's fault
            log.error("voice %s cannot be read: %s", voice, exc)
            raise APIError(500, f"voice {voice!r} is unavailable on this server", "server_error",
                           code="voice_unavailable") from None
        except VoxtralError as exc:
            raise APIError(400, f"input: {exc}", param="input") from None
        job = Job(speech_request, asyncio.get_running_loop())
        synth.submit(job)
        job.watch(request.receive)
        streamed = False
        try:
            first = await _next(job)  # errors before any audio still get a proper status
            if isinstance(first, RequestFailed):
                raise _as_api_error(first.error)
            fmt = check_format(body.response_format)  # ogg → opus
            sse = body.stream_format == "sse" or (body.stream and body.stream_format != "audio")
            if sse or body.stream_format == "audio":
                streamed = True  # the stream closes the job when it ends
                if sse:
                    return StreamingResponse(_sse(job, first, fmt, speed), media_type="text/event-stream",
                                             headers={"Cache-Control": "no-cache"})
                return StreamingResponse(_chunks(job, first, fmt, speed), media_type=FORMATS[fmt])
            # a whole file, encoded chunk by chunk as the audio arrives (only the encoded bytes are
            # kept, never the request's float audio), the container finished at the end
            encoder = StreamEncoder(fmt, tts.sample_rate, speed, whole_file=True)
            event = first
            while not isinstance(event, RequestDone):
                if event is GONE:
                    return Response(status_code=499)
                if isinstance(event, RequestFailed):
                    raise _as_api_error(event.error)
                await asyncio.to_thread(encoder.encode, event.audio)
                event = await _next(job)
        finally:
            if not streamed:
                job.close()
        content = await asyncio.to_thread(encoder.finish)
        return Response(content, media_type=FORMATS[fmt], headers={FINISH_REASON: job.finish_reason})

    if options.web:
        add_web(app, max_input_chars=options.max_input_chars, model_id=options.model_id)
    return app


def _as_api_error(exc: Exception) -> APIError:
    if isinstance(exc, VoxtralError):
        return APIError(400, str(exc))
    log.error("generation failed: %s: %s", type(exc).__name__, exc)
    return APIError(500, "internal server error", "server_error")


async def _next(job: Job) -> AudioChunk | RequestDone | RequestFailed | None:
    """The job's next audio chunk or end (done or failed); :data:`GONE` once the client has gone away."""
    while True:
        event = await job.out.get()
        if event is GONE or (isinstance(event, RequestFailed) and isinstance(event.error, Cancelled)):
            return GONE
        if not isinstance(event, PartFinished):
            return event
        if event.finish_reason != FINISHED_END:
            job.finish_reason = event.finish_reason


class StreamAborted(Exception):
    """Raised inside a chunked audio stream after a failure: the server then closes the connection
    without the final chunk, so the client sees an incomplete transfer instead of a clean end."""


async def _stream(job: Job, first):
    """``first`` and the events after it: each :class:`AudioChunk`, then the :class:`RequestDone`
    or :class:`RequestFailed` that ends the request (nothing when the client went away)."""
    event = first
    try:
        while isinstance(event, AudioChunk):
            yield event
            event = await _next(job)
        if isinstance(event, RequestFailed):
            log.error("generation failed after streaming began: %s: %s", type(event.error).__name__, event.error)
        if event is not GONE:
            yield event
    finally:
        job.close()


async def _chunks(job: Job, first, fmt: str, speed: float):
    encoder = StreamEncoder(fmt, speed=speed)
    async for event in _stream(job, first):
        if isinstance(event, RequestFailed):
            raise StreamAborted("the request failed after its audio began streaming")
        if isinstance(event, AudioChunk) and (data := encoder.encode(event.audio)):
            yield data
    tail = encoder.finish()
    if tail:
        yield tail


async def _sse(job: Job, first, fmt: str, speed: float):
    def event(payload: dict) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    encoder = StreamEncoder(fmt, speed=speed)
    usage = Usage()
    parts, part = len(job.request.parts), 0  # the text part being spoken: progress for the client
    async for item in _stream(job, first):
        if isinstance(item, RequestFailed):  # OpenAI's error shape, and no done event
            error = _as_api_error(item.error)
            yield event({"type": "error", **error_body(error.message, error.type, error.param, error.code)})
            return
        if isinstance(item, RequestDone):
            usage = item.usage
            continue
        part = item.part
        if data := encoder.encode(item.audio):
            yield event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode(), "part": part,
                         "parts": parts})
    tail = encoder.finish()
    if tail:
        yield event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode(), "part": part,
                     "parts": parts})
    tokens, frames = usage.text_tokens, usage.frames
    yield event({"type": "speech.audio.done", "finish_reason": job.finish_reason, "parts": parts,
                 "usage": {"input_tokens": tokens, "output_tokens": frames, "total_tokens": tokens + frames}})
