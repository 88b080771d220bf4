"""Mistral's shape of ``POST /v1/audio/speech`` (what the ``mistralai`` SDK's
``client.audio.speech.complete`` speaks), beside OpenAI's on the same route.

Which shape a request has (:func:`is_mistral`): a ``voice`` field makes it OpenAI's, whatever else
it holds (as before this shape existed); else a field only Mistral's request has (``voice_id``,
``metadata``, ``prompt_cache_key``, ``phoneme_hints``, ``conversation_history``; ``expressiveness``
is in both, OpenAI's as this server's extra field) makes it Mistral's; else a field only OpenAI's
has (``stream_format``, ``speed``, ``instructions``), not null, makes it OpenAI's; else the
``Accept`` header decides: Mistral's when it names ``application/json`` or ``text/event-stream``
(what the SDK sends) and no audio type, OpenAI's otherwise (its SDK sends
``application/octet-stream``, curl ``*/*``) — unless only Mistral's schema takes the body
(``"model": null``), so that every body /openapi.json allows is accepted.

Mistral's answers: JSON ``{"audio_data": <base64 file>}``, or with ``stream: true`` server-sent
events — ``event: speech.audio.delta`` with ``{"type", "audio_data"}``, then ``event:
speech.audio.done`` with ``{"type", "usage": {"prompt_tokens", "completion_tokens",
"total_tokens"}}``; a failure after the audio began ends the stream with ``event: error``
``{"type": "error", "error": {"message", "code"}}`` (the realtime API's error event). ``pcm`` is raw
little-endian float32, as Mistral documents it (OpenAI's is 16-bit). Its errors: an invalid field
is a 422 ``{"detail": [{"loc", "msg", "type"}]}``, which the SDK parses into
``HTTPValidationError``; every other error has Mistral's shape ``{"object": "error", "message",
"type", "param", "code"}`` with its status (the SDK's ``SDKError`` shows it).
"""

from __future__ import annotations

import base64
import json

import numpy as np
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..encoding import StreamEncoder
from ..runtime.request import AudioChunk, RequestFailed
from .errors import APIError, as_api_error, encodable
from .schemas import MistralSpeechRequest, SpeechRequest
from .streaming import audio_events

#: fields only Mistral's request has, and only OpenAI's: either decides the shape (see the module's docstring)
MISTRAL_ONLY = frozenset({"voice_id", "metadata", "prompt_cache_key", "phoneme_hints", "conversation_history"})
OPENAI_ONLY = frozenset({"stream_format", "speed", "instructions"})
_MISTRAL_MEDIA = {"application/json", "text/event-stream"}


def _media_types(accept: str | None) -> set[str]:
    """The media types an Accept header lists with a non-zero quality, lower case."""
    types = set()
    for item in (accept or "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media and not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            types.add(media)
    return types


def accepts_mistral(accept: str | None) -> bool:
    """The Accept header asks for Mistral's answers: JSON or events, and no audio."""
    types = _media_types(accept)
    audio = any(t.startswith("audio/") or t == "application/octet-stream" for t in types)
    return bool(types & _MISTRAL_MEDIA) and not audio


def _shape_by_fields(body: dict) -> str | None:
    if "voice" in body:
        return "openai"
    if MISTRAL_ONLY.intersection(body):
        return "mistral"
    if any(body[name] is not None for name in OPENAI_ONLY.intersection(body)):
        return "openai"
    return None


def is_mistral(body: dict, accept: str | None) -> bool:
    """Whether ``body`` (a JSON object) with this Accept header is Mistral's request (the rule: the
    module's docstring). A body the rule leaves to OpenAI's shape that only Mistral's schema takes
    (``"model": null``) is Mistral's: what /openapi.json allows is accepted."""
    shape = _shape_by_fields(body)
    if shape is not None:
        return shape == "mistral"
    if accepts_mistral(accept):
        return True
    return not _valid(SpeechRequest, body) and _valid(MistralSpeechRequest, body)


def _valid(model, body: dict) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def mistral_error(exc: APIError) -> JSONResponse:
    """An error in Mistral's shape (its API's error glossary)."""
    return JSONResponse({"object": "error", "message": encodable(exc.message), "type": exc.type, "param": exc.param,
                         "code": exc.code}, status_code=exc.status, headers=exc.headers)


def validation_error(exc: ValidationError) -> JSONResponse:
    """Invalid fields as Mistral's (FastAPI's) 422: each with its location under ``body``, its
    message and type; the input itself is not echoed."""
    detail = [{"loc": ["body", *(encodable(p) if isinstance(p, str) else p for p in error["loc"])],
               "msg": encodable(error["msg"]), "type": error["type"]} for error in exc.errors(include_url=False)]
    return JSONResponse({"detail": detail}, status_code=422)


def refusals(body: MistralSpeechRequest, data: dict) -> None:
    """The 400 for a field this server cannot honour (yet), naming it and what is missing (``data``:
    the raw body, for OpenAI's fields, which Mistral's schema does not name)."""
    for name, why in (("phoneme_hints", "this server has no pronunciation hints"),
                      ("conversation_history", "this checkpoint has no conversation conditioning")):
        if getattr(body, name) is not None:
            raise APIError(400, f"{name} is not supported: {why}", param=name, code="not_supported")
    for name in sorted(OPENAI_ONLY):
        if data.get(name) is not None:
            raise APIError(400, f"{name} is a field of OpenAI's request, which names its voice with voice (this "
                                "one has voice_id: Mistral's)", param=name)


class Float32PCM:
    """Mistral's ``pcm``: raw little-endian float32 samples, clipped to [-1, 1] (the same interface
    as :class:`~voxtral_tts.encoding.StreamEncoder`)."""

    def encode(self, audio: np.ndarray) -> bytes:
        return np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0).astype("<f4").tobytes()

    def finish(self) -> bytes:
        return b""


def encoder(fmt: str, sample_rate: int, whole_file: bool):
    """The encoder of a Mistral-shaped answer in format ``fmt`` (checked: ``ogg`` already ``opus``)."""
    return Float32PCM() if fmt == "pcm" else StreamEncoder(fmt, sample_rate, whole_file=whole_file)


def audio_json(data: bytes, finish_reason: str) -> JSONResponse:
    return JSONResponse({"audio_data": base64.b64encode(data).decode()}, headers={"X-Finish-Reason": finish_reason})


def _event(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def _delta(data: bytes) -> bytes:
    return _event("speech.audio.delta", {"type": "speech.audio.delta", "audio_data": base64.b64encode(data).decode()})


async def server_sent_events(job, first, encode):
    """The request's audio as Mistral's events (see the module's docstring)."""
    collector = job.collector
    async for item in audio_events(job, first):
        if isinstance(item, RequestFailed):
            error = as_api_error(item.error)
            yield _event("error", {"type": "error", "error": {"message": error.message, "code": error.status}})
            return
        if isinstance(item, AudioChunk) and (data := encode.encode(item.audio)):
            yield _delta(data)
    if tail := encode.finish():
        yield _delta(tail)
    tokens, frames = collector.usage.text_tokens, collector.usage.frames
    yield _event("speech.audio.done", {"type": "speech.audio.done", "finish_reason": collector.finish_reason,
                                       "usage": {"prompt_tokens": tokens, "completion_tokens": frames,
                                                 "total_tokens": tokens + frames}})
