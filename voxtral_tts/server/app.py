"""An OpenAI- and Mistral-compatible speech server (FastAPI): :func:`create_app` and its routes,
``POST /v1/audio/speech`` (OpenAI's request or Mistral's, :mod:`.mistral`) and friends.

The pieces, one concern each: the request and response bodies and the app's options
(:mod:`.schemas`); errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``
(:mod:`.errors`: 400 for bad input, 500 without a traceback); the model's worker thread, which runs
every request through the runtime's scheduler, the requests in flight together (:mod:`.worker`: 503
while loading or overloaded); the 413 for an oversized body (:mod:`.middleware`); the streamed
response bodies (:mod:`.streaming`); /openapi.json (:mod:`.openapi`); the voices — listed, created
from a recording, deleted, and a speech request's ``ref_audio`` (:mod:`.voices_api`); Mistral's
realtime WebSocket ``/v1/audio/speech/realtime`` (:mod:`.realtime`); the page to try the voices at
``GET /`` (:mod:`.web`) unless ``ServerOptions.web`` is off; one log line per request with its id
(:mod:`.access_log`), ``GET /metrics`` (:mod:`.metrics`) and API keys (:mod:`.auth`).

Audio is encoded per ``response_format`` — whole, chunked (``stream_format: "audio"``) or as
server-sent events (``stream_format: "sse"``). A client that goes away cancels its generation at
the next frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from ..encoding import FORMATS, MAX_SPEED, MIN_SPEED, StreamEncoder, check_format, check_speed
from ..errors import NormalisedToNothing, OptionError, VoiceError, VoxtralError
from ..runtime.options import SpeechOptions
from ..runtime.request import RequestFailed
from ..runtime.tts import TTS
from ..text import check_text
from ..voices import Voice
from . import mistral
from .access_log import AccessLog, RequestLog, current_request
from .auth import APIKeys, RequireKey
from .errors import APIError, add_error_handlers, as_api_error
from .metrics import CONTENT_TYPE, Metrics
from .middleware import BodyLimit
from .mistral import accepts_mistral, is_mistral, mistral_error, validation_error
from .openapi import patch_openapi
from .realtime import add_realtime
from .schemas import SPEECH_RESPONSES, MistralSpeechRequest, ServerOptions, SpeechRequest, VoiceRef
from .streaming import chunked, next_event, server_sent_events, whole_file
from .voices_api import VOICES_PATH, Voices, add_voice_routes, body_limit
from .web import add_web
from .worker import GONE, Job, Synthesizer

__all__ = ["ServerOptions", "create_app"]

log = logging.getLogger(__name__)

NOT_AN_OBJECT = "the request body must be a JSON object, sent with Content-Type: application/json"
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
        voices.start()
        yield
        voices.stop()
        synth.stop()

    app = FastAPI(title="voxtral-tts", summary="OpenAI-compatible speech for Voxtral-4B-TTS-2603", lifespan=lifespan)
    app.state.synthesizer = synth
    app.state.api_keys = keys = APIKeys(options.api_keys)
    app.state.request_log = request_log = RequestLog()
    app.state.metrics = metrics = Metrics()
    metrics.watch(synth)
    request_log.observe(metrics.observe_request)
    synth.step_observers.append(metrics.observe_step)
    app.add_middleware(RequireKey, keys=keys, metrics=options.metrics_need_key)  # inside BodyLimit: the body is read
    app.add_middleware(BodyLimit, limit=options.max_body_bytes, paths={VOICES_PATH: body_limit(options)})
    app.add_middleware(AccessLog, request_log=request_log)  # outermost: every answer is logged
    add_error_handlers(app)

    def tts_or_503() -> TTS:
        if synth.load_error:  # the detail (paths, library text) is in the log, not in the body
            raise APIError(503, "the model failed to load; see the server log", "server_error",
                           code="model_unavailable")
        if not synth.ready:
            raise APIError(503, "the model is still loading; retry shortly", "server_error", code="loading")
        return synth.tts

    voices = Voices(options, tts_or_503)
    app.state.voices = voices
    patch_openapi(app, synth, voices)

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
        """Readiness: 200 with the load (requests in flight and queued) while the model serves;
        503 while it loads, once it failed, and while the server shuts down."""
        tts_or_503()
        if synth.draining:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        return {"status": "ready", "model": options.model_id, "in_flight": synth.load.in_flight,
                "queued": synth.load.queued}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics():
        """Prometheus' text format (:mod:`.metrics`)."""
        return Response(await asyncio.to_thread(metrics.exposition), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": options.model_id, "object": "model", "created": 0,
                                            "owned_by": "mistralai"}]}

    add_voice_routes(app, voices)

    async def read_object(request: HTTPRequest) -> dict:
        """The request's body: a JSON object (sent as JSON, or with no content type), or a 400."""
        content_type = request.headers.get("content-type")
        body = await request.body()
        media = (content_type or "").split(";")[0].strip().lower()
        if content_type and not (media == "application/json" or media.endswith("+json")):
            raise APIError(400, NOT_AN_OBJECT)
        try:
            data = json.loads(body)
        except ValueError:  # UnicodeDecodeError and json's JSONDecodeError alike
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise APIError(400, NOT_AN_OBJECT)
        return data

    async def prepare(text: str, voice_name: str | None, voice_param: str, ref_audio=None,
                      ref_param: str = "ref_audio") -> tuple[TTS, str, str | Voice]:
        """The model, the checked text and the voice: a preset's name (from a name or an alias: never a
        server path), a created voice's rows (by its id), or those of ``ref_audio`` (made on first
        use); or a 400 naming ``input`` or the voice's field."""
        tts = tts_or_503()
        try:
            text = check_text(text, options.max_input_chars)
        except VoxtralError as exc:
            raise APIError(400, f"input: {exc}", param="input") from None
        if (record := current_request()) is not None:
            record.text_chars = len(text)
        if ref_audio is not None:
            voice = await voices.reference_voice(tts, ref_audio, ref_param)
        elif voice_name is not None:
            voice = voices.named(tts, voice_name, voice_param)
        else:
            voice = tts.voice_bank.default
        if record is not None:
            record.voice = voice.name if isinstance(voice, Voice) else voice
        return tts, text, voice

    def speech_options(body) -> SpeechOptions:
        """The request's options but its voice (seed, temperature, normalize and expressiveness from
        ``body``), or a 400 naming the field: checked before a voice is made from ``ref_audio``."""
        try:
            return SpeechOptions(seed=body.seed, temperature=body.temperature, max_frames=options.max_frames,
                                 normalize=body.normalize, expressiveness=body.expressiveness)
        except OptionError as exc:
            raise APIError(400, str(exc), param=exc.field) from None

    async def submit(tts: TTS, text: str, voice: str | Voice, speech_options: SpeechOptions, request: HTTPRequest):
        """Queue the request (``speech_options`` with ``voice``) and wait for its first event: the job
        and that event (an audio chunk or the end), or the error its client gets — before any audio,
        with a proper status."""
        speech_options = dataclasses.replace(speech_options, voice=voice)
        try:  # every part checked against the KV cache before anything is generated
            try:
                speech_request = tts.request(text, speech_options)
            except NormalisedToNothing:  # as the schema says: spoken as given (only emoji or symbols)
                log.info("normalisation leaves nothing of the text: speaking it as given")
                speech_request = tts.request(text, dataclasses.replace(speech_options, normalize=False))
        except OptionError as exc:  # an expressiveness the engine cannot run
            raise APIError(400, str(exc), param=exc.field) from None
        except VoiceError as exc:  # a preset's file the server cannot read: the server's fault
            name = voice.name if isinstance(voice, Voice) else voice
            log.error("voice %s cannot be read: %s", name, exc)
            raise APIError(500, f"voice {name!r} is unavailable on this server", "server_error",
                           code="voice_unavailable") from None
        except VoxtralError as exc:
            raise APIError(400, f"input: {exc}", param="input") from None
        job = Job(speech_request, tts.collector(speech_request), asyncio.get_running_loop())
        synth.submit(job)
        job.watch(request.receive)
        try:
            first = await next_event(job)
            if isinstance(first, RequestFailed):
                raise as_api_error(first.error)
        except BaseException:
            job.close()
            raise
        return job, first

    @app.post("/v1/audio/speech", response_class=Response, responses=SPEECH_RESPONSES)
    async def speech(request: HTTPRequest):
        """Speech from text, in OpenAI's shape (``voice``: audio bytes or events) or Mistral's
        (``voice_id``: JSON ``{"audio_data"}`` or events). A ``voice`` field makes a request OpenAI's;
        else a field only Mistral's request has makes it Mistral's, a field only OpenAI's has OpenAI's;
        else an Accept header naming application/json or text/event-stream (and no audio) makes it
        Mistral's."""
        accept = request.headers.get("accept")
        try:
            data = await read_object(request)
        except APIError as exc:
            if accepts_mistral(accept):
                return mistral_error(exc)
            raise
        if is_mistral(data, accept):
            try:
                body = MistralSpeechRequest.model_validate(data)
            except ValidationError as exc:
                return validation_error(exc)
            try:
                return await mistral_speech(body, data, request)
            except APIError as exc:
                return mistral_error(exc)
        try:
            body = SpeechRequest.model_validate(data)
        except ValidationError as exc:  # answered 400 in OpenAI's shape by the handler (.errors)
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
        return await openai_speech(body, request)

    async def openai_speech(body: SpeechRequest, request: HTTPRequest):
        try:
            speed = check_speed(body.speed)
        except ValueError:
            raise APIError(400, f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {body.speed}",
                           param="speed") from None
        fmt = check_format(body.response_format)  # ogg → opus
        checked = speech_options(body)  # every field checked before a voice is made from ref_audio
        ref_param = "ref_audio" if body.ref_audio is not None else "reference_audio"
        voice_name = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
        ref_audio = body.ref_audio if body.ref_audio is not None else body.reference_audio
        tts, text, voice = await prepare(body.input, voice_name, "voice", ref_audio, ref_param)
        if (record := current_request()) is not None:
            record.format = fmt
        job, first = await submit(tts, text, voice, checked, request)
        streamed = False
        try:
            sse = body.stream_format == "sse" or (body.stream and body.stream_format != "audio")
            if sse or body.stream_format == "audio":
                streamed = True  # the stream closes the job when it ends
                if sse:
                    return StreamingResponse(server_sent_events(job, first, fmt, speed),
                                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
                return StreamingResponse(chunked(job, first, fmt, speed), media_type=FORMATS[fmt])
            content = await whole_file(job, first, StreamEncoder(fmt, tts.sample_rate, speed, whole_file=True))
        finally:
            if not streamed:
                job.close()
        if content is GONE:
            return Response(status_code=499)
        return Response(content, media_type=FORMATS[fmt], headers={FINISH_REASON: job.collector.finish_reason})

    async def mistral_speech(body: MistralSpeechRequest, data: dict, request: HTTPRequest):
        mistral.refusals(body, data)
        fmt = check_format(body.response_format)
        checked = speech_options(body)  # every field checked before a voice is made from ref_audio
        tts, text, voice = await prepare(body.input, body.voice_id, "voice_id", body.ref_audio)
        if (record := current_request()) is not None:
            record.format = fmt
        job, first = await submit(tts, text, voice, checked, request)
        if body.stream:  # the stream closes the job when it ends
            encoder = mistral.encoder(fmt, tts.sample_rate, False)
            return StreamingResponse(mistral.server_sent_events(job, first, encoder),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            content = await whole_file(job, first, mistral.encoder(fmt, tts.sample_rate, True))
        finally:
            job.close()
        if content is GONE:
            return Response(status_code=499)
        return mistral.audio_json(content, job.collector.finish_reason)

    add_realtime(app, synth, options, voices)
    if options.web:
        add_web(app, max_input_chars=options.max_input_chars, model_id=options.model_id,
                api_key_required=keys.required)
    return app
