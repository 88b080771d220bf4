"""An OpenAI-compatible speech server (FastAPI): :func:`create_app` and its routes,
``POST /v1/audio/speech`` and friends.

The pieces, one concern each: the request and response bodies and the app's options
(:mod:`.schemas`); errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``
(:mod:`.errors`: 400 for bad input, 500 without a traceback); the model's worker thread, which runs
every request through the runtime's scheduler, the requests in flight together (:mod:`.worker`: 503
while loading or overloaded); the 413 for an oversized body (:mod:`.middleware`); the streamed
response bodies (:mod:`.streaming`); /openapi.json (:mod:`.openapi`); and the page to try the
voices at ``GET /`` (:mod:`.web`) unless ``ServerOptions.web`` is off.

Audio is encoded per ``response_format`` — whole, chunked (``stream_format: "audio"``) or as
server-sent events (``stream_format: "sse"``). A client that goes away cancels its generation at
the next frame.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import Response, StreamingResponse

from ..encoding import FORMATS, MAX_SPEED, MIN_SPEED, StreamEncoder, check_format, check_speed
from ..errors import OptionError, VoiceError, VoxtralError
from ..runtime.options import SpeechOptions
from ..runtime.request import RequestDone, RequestFailed
from ..runtime.tts import TTS
from ..text import check_text
from ..voices import voice_gender, voice_language
from .errors import APIError, add_error_handlers, as_api_error, quoted
from .middleware import BodyLimit
from .openapi import patch_openapi
from .schemas import SPEECH_RESPONSES, ServerOptions, SpeechRequest, VoiceRef
from .streaming import chunked, next_event, server_sent_events
from .web import add_web
from .worker import GONE, Job, Synthesizer

__all__ = ["ServerOptions", "create_app"]

log = logging.getLogger(__name__)

NO_ENCODER = (
    "voice cloning from reference audio is not available: the released Voxtral-4B-TTS-2603 checkpoint "
    "has no codec encoder; use one of the preset voices (GET /v1/audio/voices)"
)
#: response header of a whole file: "end" (every part ended with END_AUDIO) or "length" (a part
#: stopped at its frame budget and its audio is cut)
FINISH_REASON = "X-Finish-Reason"


def create_app(load: Callable[[], TTS], options: ServerOptions | None = None) -> FastAPI:
    """The app; ``load`` builds the :class:`TTS` (called once, on the worker thread, at start-up)."""
    options = options or ServerOptions()
    synth = Synthesizer(load, options)

    @asynccontextmanager
    async def lifespan(app):
        synth.start()
        yield
        synth.stop()

    app = FastAPI(title="voxtral-tts", summary="OpenAI-compatible speech for Voxtral-4B-TTS-2603", lifespan=lifespan)
    app.state.synthesizer = synth
    app.add_middleware(BodyLimit, limit=options.max_body_bytes)
    patch_openapi(app, synth)
    add_error_handlers(app)

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
            raise APIError(400, f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {body.speed}", param="speed") from None
        try:
            speech_options = SpeechOptions(voice=voice, seed=body.seed, temperature=body.temperature,
                                           max_frames=options.max_frames, normalize=body.normalize)
        except OptionError as exc:
            raise APIError(400, str(exc), param=exc.field) from None
        try:  # every part checked against the KV cache before anything is generated
            speech_request = tts.request(text, speech_options)
        except VoiceError as exc:  # a preset's file the server cannot read: the server's fault
            log.error("voice %s cannot be read: %s", voice, exc)
            raise APIError(500, f"voice {voice!r} is unavailable on this server", "server_error",
                           code="voice_unavailable") from None
        except VoxtralError as exc:
            raise APIError(400, f"input: {exc}", param="input") from None
        job = Job(speech_request, tts.collector(speech_request), asyncio.get_running_loop())
        synth.submit(job)
        job.watch(request.receive)
        streamed = False
        try:
            first = await next_event(job)  # errors before any audio still get a proper status
            if isinstance(first, RequestFailed):
                raise as_api_error(first.error)
            fmt = check_format(body.response_format)  # ogg → opus
            sse = body.stream_format == "sse" or (body.stream and body.stream_format != "audio")
            if sse or body.stream_format == "audio":
                streamed = True  # the stream closes the job when it ends
                if sse:
                    return StreamingResponse(server_sent_events(job, first, fmt, speed),
                                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
                return StreamingResponse(chunked(job, first, fmt, speed), media_type=FORMATS[fmt])
            # a whole file, encoded chunk by chunk as the audio arrives (only the encoded bytes are
            # kept, never the request's float audio), the container finished at the end
            encoder = StreamEncoder(fmt, tts.sample_rate, speed, whole_file=True)
            event = first
            while not isinstance(event, RequestDone):
                if event is GONE:
                    return Response(status_code=499)
                if isinstance(event, RequestFailed):
                    raise as_api_error(event.error)
                await asyncio.to_thread(encoder.encode, event.audio)
                event = await next_event(job)
        finally:
            if not streamed:
                job.close()
        content = await asyncio.to_thread(encoder.finish)
        return Response(content, media_type=FORMATS[fmt], headers={FINISH_REASON: job.collector.finish_reason})

    if options.web:
        add_web(app, max_input_chars=options.max_input_chars, model_id=options.model_id)
    return app
