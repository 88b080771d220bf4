"""Voice management in Mistral's shape (what the ``mistralai`` SDK's ``client.audio.voices`` speaks),
and the voices a speech request names or brings (``voice`` / ``voice_id``, ``ref_audio``).

The routes (:func:`add_voice_routes`):

- ``GET /v1/audio/voices`` (``limit``, ``offset``, ``type``: all, preset, custom): Mistral's page —
  ``items``, ``total``, ``page``, ``page_size``, ``total_pages`` — beside this server's own fields
  from before, ``voices`` (every voice, unpaginated) and ``default``. Each voice object carries both
  shapes: Mistral's ``id, name, created_at, user_id, type, slug, languages, gender, age, tags,
  color, description, retention_notice, trimmed_seconds, kind`` and this server's ``language`` and
  ``aliases``; no field has two meanings. A created voice adds ``status`` (queued, processing,
  ready, failed), ``progress`` (0 to 1), ``loss`` and ``error``.
- ``POST /v1/audio/voices``: Mistral's ``VoiceCreateRequest`` (``name``, base64 ``sample_audio``,
  ``sample_filename``, ``languages``, ``gender``, …). The sample is checked at once (an audio file
  PyAV reads, 3 s of sound or more, at most ``max_sample_bytes``), the voice is queued for
  :class:`.voice_maker.VoiceMaker` and its record answered at once, ``status: "queued"``; the client
  polls ``GET /v1/audio/voices/{id}`` until ``ready``. (Answering when done would hold the
  connection for many minutes on a CPU — past the SDK's 300 s default timeout and most proxies' — and
  lose the work to a dropped connection; the SDK accepts the early record, whose extra fields it ignores.)
- ``GET /v2/audio/voices`` (the SDK's ``search``; ``/v1``'s listing is deprecated by Mistral):
  ``{"data", "next_page_token"}``, by ``page_size`` and ``page_token`` (a cursor), filtered by
  ``type``, ``gender``, ``language``, ``query`` (in the name) and ``kind``.
- ``GET /v1/audio/voices/{id}``, ``DELETE /v1/audio/voices/{id}`` (a created voice only: presets are
  the model's; 403) and ``GET /v1/audio/voices/{id}/sample`` (the prepared recording, WAV).

``POST``, ``DELETE`` and the sample exist only where the server keeps created voices (a voices
directory: ``voxtral-serve`` always has one); elsewhere they are a 405, as any method a path lacks.

Errors have Mistral's shape (:func:`.mistral.mistral_error`; invalid fields: its 422) but for the
listing's 503, which keeps OpenAI's, as before Mistral's fields joined it; an upload over the limit is a 413.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import math
from typing import Annotated, Callable, Literal

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import VoxtralError
from ..normalize import resolve_language
from ..runtime.tts import TTS
from ..voices import Voice, read_voice_file, voice_gender, voice_language
from .errors import APIError, error_response, quoted
from .mistral import mistral_error, validation_error
from .schemas import ErrorResponse, MistralError, MistralValidationError, ServerOptions
from .voice_maker import VoiceMaker, check_sample
from .voice_store import READY, SAMPLE, VoiceStore, is_voice_id, upload_suffix

VOICES_PATH = "/v1/audio/voices"
SEARCH_PATH = "/v2/audio/voices"
#: a preset's created_at: presets come with the model
EPOCH = "1970-01-01T00:00:00Z"
#: ``ref_audio`` may be a data URL; its media type gives the decoder a file extension
DATA_URL_SUFFIXES = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/mpeg": ".mp3",
                     "audio/mp3": ".mp3", "audio/flac": ".flac", "audio/ogg": ".ogg", "audio/opus": ".opus",
                     "audio/aac": ".aac", "audio/mp4": ".m4a", "audio/webm": ".webm"}

Short = Annotated[str, Field(max_length=64)]


class VoiceCreateRequest(BaseModel):
    """Mistral's ``VoiceCreateRequest``; ``sample_audio`` is required here (a voice is made from it)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=100)
    sample_audio: str = Field(min_length=1, description="the recording, an audio file (3–25 s of one speaker; any "
                                                        "format PyAV reads), base64")
    sample_filename: str | None = Field(default=None, max_length=255,
                                        description="the file's original name: its extension helps detect the format")
    languages: list[Short] | None = Field(default=None, max_length=16,
                                          description="ISO 639-1 codes; the first is the language text is normalised "
                                                      "in when speaking with this voice")
    gender: Literal["female", "male", "neutral"] | None = None
    age: int | None = Field(default=None, ge=0, le=150)
    tags: list[Short] | None = Field(default=None, max_length=32)
    color: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=1000)
    retention_notice: int = Field(default=30, ge=0)
    slug: str | None = Field(default=None, max_length=100)

    @field_validator("languages")
    @classmethod
    def _known(cls, languages):
        for language in languages or ():
            try:
                resolve_language(language)
            except VoxtralError as exc:
                raise ValueError(str(exc)) from None
        return languages


class VoiceRecord(BaseModel):
    """Mistral's ``VoiceResponse``, this server's ``language`` and ``aliases``, and a created voice's state."""

    id: str
    name: str
    created_at: str
    user_id: str | None = None
    type: Literal["preset", "custom"]
    slug: str | None = None
    languages: list[str] = []
    gender: str | None = None
    age: int | None = None
    tags: list[str] | None = None
    color: str | None = None
    description: str | None = None
    retention_notice: int = 30
    trimmed_seconds: float | None = None
    kind: str | None = None
    language: str | None = Field(default=None, description="this server's: the language its text is normalised in")
    aliases: list[str] = Field(default=[], description="this server's: OpenAI names of a preset")
    status: Literal["queued", "processing", "ready", "failed"] = "ready"
    progress: float = 1.0
    loss: float | None = None
    error: str | None = None


class VoiceList(BaseModel):
    """Mistral's ``VoiceListResponse`` and this server's own listing (``voices``, ``default``)."""

    items: list[VoiceRecord]
    total: int
    page: int
    page_size: int
    total_pages: int
    voices: list[VoiceRecord] = Field(description="every voice, unpaginated (this server's listing)")
    default: str


class VoicePage(BaseModel):
    """Mistral's ``VoiceListPage`` (``GET /v2/audio/voices``)."""

    data: list[VoiceRecord]
    next_page_token: str | None = Field(description="the cursor of the next page; null on the last")


_openai_error = {"model": ErrorResponse, "description": "the model is loading or failed to load (OpenAI's error shape)"}


def _errors(*statuses: int) -> dict:
    out = {status: {"model": MistralError, "description": "Mistral's error shape"} for status in statuses}
    out[422] = {"model": MistralValidationError, "description": "an invalid field (Mistral's 422)"}
    return out


def mistral_errors(route):
    """A route whose :class:`APIError` is answered in Mistral's shape."""
    @functools.wraps(route)
    async def wrapped(*args, **kwargs):
        try:
            return await route(*args, **kwargs)
        except APIError as exc:
            return mistral_error(exc)

    return wrapped


def body_limit(options: ServerOptions) -> int:
    """Bytes a ``POST /v1/audio/voices`` body may take: the sample's base64 and the other fields."""
    return max(options.max_body_bytes, math.ceil(options.max_sample_bytes / 3) * 4 + 64 * 1024)


def decode_audio(value: str, param: str, limit: int) -> tuple[bytes, str]:
    """base64 (or a ``data:audio/…;base64,`` URL) → (the file's bytes, a file extension from the URL
    or ''), or a 400 / 413 naming ``param``."""
    suffix = ""
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        suffix = DATA_URL_SUFFIXES.get(head[5:].split(";")[0].strip().lower(), "")
    if len(value) > math.ceil(limit / 3) * 4 + 4:
        raise APIError(413, f"{param}: the sample is over the server's limit of {limit} bytes", param=param,
                       code="sample_too_large")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not base64 (send the audio file's bytes base64-encoded)", param=param) from None
    if not data:
        raise APIError(400, f"{param}: empty", param=param)
    if len(data) > limit:
        raise APIError(413, f"{param}: the sample is {len(data)} bytes, over the server's limit of {limit}",
                       param=param, code="sample_too_large")
    return data, suffix


async def checked_sample(data: bytes, suffix: str, param: str) -> float:
    """The sample's prepared length, checked off the event loop, or a 400 saying what is wrong with it."""
    try:
        return await asyncio.to_thread(check_sample, data, suffix, param)
    except VoxtralError as exc:
        raise APIError(400, str(exc), param=param, code="invalid_sample") from None


class Voices:
    """The server's voices: the model's presets (from the loaded :class:`TTS`) and the created ones
    (:class:`VoiceStore`), made by a :class:`VoiceMaker`."""

    def __init__(self, options: ServerOptions, tts_or_503: Callable[[], TTS]):
        self.options = options
        self.tts_or_503 = tts_or_503
        self.store = VoiceStore(options.voices_dir)
        self.maker = VoiceMaker(self.store, options.voice_model, options.voice_steps)

    def start(self) -> None:
        self.maker.start()

    def stop(self) -> None:
        self.maker.stop()

    # --- records --------------------------------------------------------------------------------------
    def preset_record(self, tts: TTS, name: str) -> dict:
        language = voice_language(name)
        return VoiceRecord(id=name, name=name, created_at=EPOCH, type="preset", slug=name, languages=[language],
                           gender=voice_gender(name), language=language,
                           aliases=sorted(a for a, v in tts.voice_bank.aliases.items() if v == name)).model_dump()

    @staticmethod
    def created_record(record: dict) -> dict:
        languages = record.get("languages") or []
        return VoiceRecord(**{**record, "type": "custom", "kind": "ivc", "languages": languages,
                              "language": resolve_language(languages[0]) if languages else None}).model_dump()

    def everything(self, tts: TTS, kind: str = "all") -> list[dict]:
        """Every voice's record, presets first; ``kind``: all, preset or custom."""
        records = ([self.preset_record(tts, name) for name in tts.voices] if kind != "custom" else [])
        return records + ([self.created_record(r) for r in self.store.all()] if kind != "preset" else [])

    def find(self, tts: TTS, voice_id: str) -> dict:
        """The record of a created voice or a preset (by name or alias), or a 404."""
        if is_voice_id(voice_id) and (record := self.store.get(voice_id)) is not None:
            return self.created_record(record)
        try:
            return self.preset_record(tts, tts.voice_bank.resolve_name(voice_id))
        except VoxtralError:
            raise APIError(404, f"no voice {quoted(voice_id)}; GET /v1/audio/voices lists them", param="voice_id",
                           code="voice_not_found") from None

    # --- speech -------------------------------------------------------------------------------------
    def named(self, tts: TTS, name: str, param: str) -> str | Voice:
        """What a request's voice field ``param`` names: a created voice's rows (by its id; a 400 if
        it is not ready), else a preset's name (from a name or an alias: never a server path), else
        a 400 ``unknown_voice``."""
        created = self.created_voice(tts, name, param)
        if created is not None:
            return created
        try:
            return tts.voice_bank.resolve_name(name)
        except VoxtralError:
            raise APIError(400, f"unknown voice {quoted(name)}; GET /v1/audio/voices lists them", param=param,
                           code="unknown_voice") from None

    def created_voice(self, tts: TTS, name: str, param: str) -> Voice | None:
        """The rows of the created voice ``name`` names, a 400 if it is not ready, None if ``name`` is no
        created voice's id (a preset's name or alias, for the caller to resolve)."""
        record = self.store.get(name.strip().lower()) if is_voice_id(name.strip().lower()) else None
        if record is None:
            return None
        if record.get("status") != READY:
            detail = (f"failed: {record.get('error')}" if record.get("status") == "failed" else
                      f"is still being made ({record.get('status')}, {100 * record.get('progress', 0):.0f} %); "
                      f"GET {VOICES_PATH}/{record['id']} shows when it is ready")
            raise APIError(400, f"voice {record['id']} {detail}", param=param, code="voice_not_ready")
        return self._checked(tts, lambda: self.store.voice(record, self.created_record(record)["language"]), param)

    async def reference_voice(self, tts: TTS, value, param: str) -> Voice:
        """The voice of a speech request's ``ref_audio`` (made and cached on first use: the request waits)."""
        if not isinstance(value, str):
            raise APIError(400, f"{param}: must be an audio file, base64", param=param)
        if (why := self.maker.unavailable()) is not None:
            raise APIError(400, f"{param}: {why}", param=param, code="voice_cloning_unavailable")
        data, suffix = decode_audio(value, param, self.options.max_sample_bytes)
        await checked_sample(data, suffix, param)
        try:
            path = await asyncio.wrap_future(self.maker.reference(data, suffix))
        except VoxtralError as exc:
            raise APIError(400, f"{param}: {exc}", param=param) from None
        return self._checked(tts, lambda: Voice(f"ref_audio {path.stem[:12]}", read_voice_file(path)), param)

    @staticmethod
    def _checked(tts: TTS, read: Callable[[], Voice], param: str) -> Voice:
        try:
            voice = read()
        except VoxtralError as exc:
            raise APIError(500, f"the voice cannot be read: {exc}", "server_error", code="voice_unavailable") from None
        if voice.embedding.shape[1] != tts.voice_bank.dim:
            raise APIError(400, f"voice {voice.name} was made with another model (rows of width "
                                f"{voice.embedding.shape[1]}; this model takes {tts.voice_bank.dim})", param=param,
                           code="voice_model_mismatch")
        return voice


def add_voice_routes(app: FastAPI, voices: Voices) -> None:
    """The routes of the module's docstring."""
    options = voices.options

    @app.get(VOICES_PATH, response_model=VoiceList, responses={**_errors(), 503: _openai_error},
             openapi_extra={"parameters": [
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                                        "default": 1000}},
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "default": 0}},
        {"name": "type", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["all", "custom", "preset"], "default": "all"}}]})
    async def list_voices(request: HTTPRequest):
        """Every voice: Mistral's page (``items``…) and this server's listing (``voices``, ``default``).
        Its 503 keeps OpenAI's error shape, as before Mistral's fields joined it (the page reads it)."""
        query = request.query_params
        try:
            limit = _query_int(query, "limit", 1000, 1, 1000)
            offset = _query_int(query, "offset", 0, 0, None)
            kind = _query_choice(query, "type", ("all", "custom", "preset"))
        except ValueError as exc:
            return _query_error(exc)
        tts = voices.tts_or_503()
        everything, chosen = voices.everything(tts), voices.everything(tts, kind)
        return {"items": chosen[offset:offset + limit], "total": len(chosen), "page": offset // limit + 1,
                "page_size": limit, "total_pages": math.ceil(len(chosen) / limit), "voices": everything,
                "default": tts.voice_bank.default}

    @app.get(SEARCH_PATH, response_model=VoicePage, responses=_errors(503), openapi_extra={"parameters": [
        {"name": "page_size", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}},
        {"name": "page_token", "in": "query", "required": False, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        {"name": "type", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["all", "custom", "preset"], "default": "all"}},
        {"name": "gender", "in": "query", "required": False, "style": "form", "explode": True,
         "schema": {"type": "array", "items": {"type": "string", "enum": ["female", "male", "neutral"]}}},
        {"name": "language", "in": "query", "required": False, "style": "form", "explode": True,
         "schema": {"type": "array", "items": {"type": "string"}}},
        {"name": "query", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "kind", "in": "query", "required": False, "schema": {"type": "string"}}]})
    @mistral_errors
    async def search_voices(request: HTTPRequest):
        """Voices a page at a time (a cursor), filtered: Mistral's ``GET /v2/audio/voices``."""
        query = request.query_params
        try:
            size = _query_int(query, "page_size", 10, 1, 1000)
            start = _query_int(query, "page_token", 0, 0, None)
            kind = _query_choice(query, "type", ("all", "custom", "preset"))
            genders = [_query_choice(query, "gender", ("female", "male", "neutral"), g)
                       for g in query.getlist("gender")]
        except ValueError as exc:
            return _query_error(exc)
        languages = {code.lower() for code in query.getlist("language")}
        name = (query.get("query") or "").casefold()
        chosen = [v for v in voices.everything(voices.tts_or_503(), kind)
                  if (not genders or v["gender"] in genders) and (not languages or languages & set(v["languages"]))
                  and name in v["name"].casefold() and query.get("kind") in (None, "", v["kind"])]
        more = start + size < len(chosen)
        return {"data": chosen[start:start + size], "next_page_token": str(start + size) if more else None}

    @mistral_errors
    async def create_voice(request: HTTPRequest):
        """A voice from a recording: answered at once (``status: queued``); poll its record until ``ready``."""
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise APIError(400, "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            body = VoiceCreateRequest.model_validate(data)
        except ValidationError as exc:
            return validation_error(exc)
        voices.tts_or_503()
        if (why := voices.maker.unavailable()) is not None:
            raise APIError(400, why, code="voice_creation_unavailable")
        sample, suffix = decode_audio(body.sample_audio, "sample_audio", options.max_sample_bytes)
        suffix = upload_suffix(body.sample_filename) or suffix
        seconds = await checked_sample(sample, suffix, "sample_audio")
        fields = body.model_dump(exclude={"sample_audio", "sample_filename"})
        fields["languages"] = fields["languages"] or []
        record = voices.store.add({**fields, "trimmed_seconds": round(seconds, 2)}, sample, body.sample_filename)
        voices.maker.enqueue(record["id"])
        return voices.created_record(record)


    @app.get(VOICES_PATH + "/{voice_id}", response_model=VoiceRecord, responses=_errors(404, 503))
    @mistral_errors
    async def get_voice(voice_id: str):
        """A voice's record: a created voice's status and progress, or a preset (by name or alias)."""
        return voices.find(voices.tts_or_503(), voice_id)

    @mistral_errors
    async def delete_voice(voice_id: str):
        """Delete a created voice (stopping its making if under way); presets cannot be deleted."""
        record = voices.find(voices.tts_or_503(), voice_id)
        if record["type"] == "preset":
            raise APIError(403, f"{record['id']} is a preset voice of the model; only created voices can be deleted",
                           param="voice_id", code="preset_voice")
        deleted = voices.store.delete(record["id"])
        if deleted is None:  # deleted meanwhile
            raise APIError(404, f"no voice {quoted(voice_id)}", param="voice_id", code="voice_not_found")
        return voices.created_record(deleted)

    @mistral_errors
    async def voice_sample(voice_id: str):
        record = voices.find(voices.tts_or_503(), voice_id)
        path = voices.store.path(record["id"], SAMPLE) if record["type"] == "custom" else None
        if path is None or not path.is_file():
            raise APIError(404, f"voice {quoted(voice_id)} has no sample", param="voice_id", code="no_sample")
        return FileResponse(path, media_type="audio/wav")

    if voices.store.enabled:  # without a voices directory no voice can be created, deleted or have a sample
        app.post(VOICES_PATH, response_model=VoiceRecord, responses=_errors(400, 413, 503), openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": VoiceCreateRequest.model_json_schema()}}}})(create_voice)
        app.delete(VOICES_PATH + "/{voice_id}", response_model=VoiceRecord,
                   responses=_errors(403, 404, 503))(delete_voice)
        app.get(VOICES_PATH + "/{voice_id}/sample", response_class=FileResponse, responses={
            200: {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
                  "description": "the recording the voice was made from, prepared (24 kHz mono, trimmed, level set)"},
            **_errors(404, 503)})(voice_sample)
    # a method a path does not have: 405 naming all it has (Starlette's would name one route's only)
    not_allowed(app, VOICES_PATH, ("GET", "POST") if voices.store.enabled else ("GET",))
    not_allowed(app, VOICES_PATH + "/{voice_id}", ("GET", "DELETE") if voices.store.enabled else ("GET",))


def not_allowed(app: FastAPI, path: str, allowed: tuple[str, ...]) -> None:
    """Answer every other method on ``path`` with a 405 whose Allow header lists ``allowed``."""
    others = [m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
              if m not in allowed and not (m == "HEAD" and "GET" in allowed)]

    async def method_not_allowed():
        return error_response(APIError(405, "Method Not Allowed", headers={"Allow": ", ".join(allowed)}))

    app.add_api_route(path, method_not_allowed, methods=others, include_in_schema=False)


def _query_int(query, name: str, default: int, lowest: int, highest: int | None) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError((name, "Input should be a valid integer", "int_parsing")) from None
    if value < lowest or (highest is not None and value > highest):
        raise ValueError((name, f"Input should be between {lowest} and {highest or 'any'}", "value_error"))
    return value



def _query_choice(query, name: str, choices: tuple[str, ...], value: str | None = None) -> str:
    value = query.get(name, choices[0]) if value is None else value
    if value not in choices:
        raise ValueError((name, "Input should be " + ", ".join(f"'{c}'" for c in choices), "literal_error"))
    return value


def _query_error(exc: ValueError) -> JSONResponse:
    """A query parameter's error as Mistral's 422, worded as FastAPI words it."""
    name, msg, type_ = exc.args[0]
    return JSONResponse({"detail": [{"loc": ["query", name], "msg": msg, "type": type_}]}, status_code=422)
