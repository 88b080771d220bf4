"""What the speech server takes and answers: its options (:class:`ServerOptions`), the two bodies
of ``POST /v1/audio/speech`` — OpenAI's (:class:`SpeechRequest`) and Mistral's
(:class:`MistralSpeechRequest`), validated by pydantic with no lax coercion —, the error bodies
(OpenAI's :class:`ErrorResponse`; Mistral's :class:`MistralError` and, for invalid fields,
:class:`MistralValidationError`), Mistral's JSON answer (:class:`MistralSpeechResponse`) and
:data:`SPEECH_RESPONSES`, the route's answers as /openapi.json documents them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from pydantic_core import PydanticCustomError

from ..encoding import FORMATS, MAX_SPEED, MIN_SPEED
from ..runtime.constants import MAX_TEMPERATURE
from ..runtime.guidance import MAX_EXPRESSIVENESS
from ..text import MAX_INPUT_CHARS, SAYABLE_PATTERN

MODEL_ID = "voxtral-4b-tts-2603"


@dataclass(frozen=True)
class ServerOptions:
    max_queue: int = 8  # requests waiting behind the one being generated; 503 beyond
    max_input_chars: int = MAX_INPUT_CHARS
    max_body_bytes: int = 1 << 20
    max_frames: int | None = None  # per text part; None: the runtime's text-length budget (at most 2048)
    model_id: str = MODEL_ID
    web: bool = True  # the page to try the voices at GET / (voxtral-serve --no-web: the API alone)
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # Bearer keys the API asks for (none: open; .auth)
    metrics_need_key: bool = False  # /metrics behind the API keys too
    voices_dir: str | None = None  # where created voices are kept (voxtral-serve --voices-dir); None: none are
    voice_model: str | None = None  # the model directory whose codec makes voices (None: voices cannot be made)
    voice_steps: int = 600  # optimisation steps at most per voice made (voxtral-serve --voice-steps)
    max_sample_bytes: int = 10 << 20  # a voice's uploaded recording (sample_audio, ref_audio); 413 beyond
    realtime_idle_s: float = 60.0  # a realtime session with nothing sent either way this long is closed


class VoiceRef(BaseModel):
    id: str


def _integer(value):
    """JSON's integers (``7`` and ``7.0``), not ``true`` or ``"7"``: no lax coercion."""
    if isinstance(value, (bool, str)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


#: both shapes' ``expressiveness`` (OpenAI's: this server's extra field)
EXPRESSIVENESS = (f"the flow head's classifier-free guidance scale, 1.0 (none) to {MAX_EXPRESSIVENESS:g}; null: the "
                  "model's own (1.2 for the release). Each request in a batch keeps its own")

REF_AUDIO = ("a recording to speak in (3–25 s of one speaker, an audio file, base64 or a data URL), in place of the "
             "voice: made into a voice by codec inversion on first use (the request waits: minutes or more on a "
             "CPU) and cached by its content; POST /v1/audio/voices keeps one for good")
#: the description of ref_audio where the server cannot make voices (/openapi.json then allows only null)
REF_AUDIO_REFUSED = "refused (400) unless null: this server cannot make voices (no model directory or no torch)"


#: the seed: a JSON-safe integer ≥ 0
Seed = Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(_integer)]


class SpeechRequest(BaseModel):
    """OpenAI's request body, plus ``seed``, ``stream``, ``temperature``, ``normalize``,
    ``expressiveness`` and the voice-cloning fields (``ref_audio``, :mod:`.voices_api`)."""

    model_config = ConfigDict(extra="ignore")

    model: str = MODEL_ID
    input: str = Field(json_schema_extra={"minLength": 1, "maxLength": MAX_INPUT_CHARS, "pattern": SAYABLE_PATTERN,
                                          "description": "the text; longer than 400 characters is spoken part by "
                                                         "part (the server's limit: --max-input-chars)"})
    voice: Union[str, VoiceRef] = Field(default="alloy", description="a preset name, an OpenAI alias or a created "
                                                                     "voice's id (GET /v1/audio/voices); never a path")
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
                                        "voice's language before speaking (false: the text as given); text that "
                                        "normalisation would leave empty (only emoji or symbols) is spoken as given")
    expressiveness: float | None = Field(default=None, strict=True,
                                         json_schema_extra={"minimum": 1.0, "maximum": MAX_EXPRESSIVENESS},
                                         description=EXPRESSIVENESS)
    ref_audio: str | None = Field(default=None, description=REF_AUDIO)
    ref_text: str | None = Field(default=None, description="accepted and ignored: a voice is made from the audio alone")
    reference_audio: str | None = Field(default=None, description="another name of ref_audio")


def _refused(description: str):
    """A field accepted only as null (or absent): anything else is refused with a 400 saying why."""
    return Field(default=None, json_schema_extra={"type": "null"}, description=description)


class MistralSpeechRequest(BaseModel):
    """Mistral's request body (what ``mistralai``'s ``client.audio.speech.complete`` sends), plus
    this server's ``seed``, ``temperature`` and ``normalize``. Fields this server cannot honour yet
    are accepted only at their defaults; anything else is a 400 naming what is missing. OpenAI's own
    fields (``speed``, ``stream_format``, ``instructions``) are refused too unless null (by the
    route, which sees the raw body: they are no part of this schema)."""

    model_config = ConfigDict(extra="ignore")  # the SDK's additional_properties

    input: str = SpeechRequest.model_fields["input"]
    model: str | None = MODEL_ID
    voice_id: str | None = Field(default=None, description="a preset name, an OpenAI alias or a created voice's id "
                                                           "(GET /v1/audio/voices); null: the default voice")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm", "ogg"] = Field(
        default="mp3",
        description="the audio format; pcm is raw little-endian float32 (Mistral's), not OpenAI's 16-bit")
    stream: StrictBool | None = Field(default=False, description="server-sent events speech.audio.delta, then "
                                                          "speech.audio.done")
    expressiveness: float | None = Field(default=None, strict=True, ge=1.0, le=MAX_EXPRESSIVENESS,
                                         allow_inf_nan=False, description=EXPRESSIVENESS)
    metadata: dict | None = None  # accepted and ignored, as a label of the request
    prompt_cache_key: str | None = None  # accepted and ignored: voice prompts are cached per voice anyway
    seed: Seed | None = None
    temperature: float = SpeechRequest.model_fields["temperature"]
    normalize: bool = SpeechRequest.model_fields["normalize"]
    ref_audio: str | None = Field(default=None, description=REF_AUDIO)
    phoneme_hints: Any = _refused("refused (400) unless null: this server has no pronunciation hints")
    conversation_history: Any = _refused("refused (400) unless null: this checkpoint has no conversation "
                                         "conditioning")


class MistralSpeechResponse(BaseModel):
    """Mistral's whole answer: the audio file, base64."""

    audio_data: str


class MistralError(BaseModel):
    """Mistral's error shape (its API's error glossary), for every error of a Mistral-shaped request
    but an invalid field."""

    object: Literal["error"] = "error"
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class MistralValidationDetail(BaseModel):
    loc: list[Union[str, int]]
    msg: str
    type: str


class MistralValidationError(BaseModel):
    """Mistral's 422 body for invalid fields, which its SDK parses into ``HTTPValidationError``."""

    detail: list[MistralValidationDetail]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: every 4xx/5xx answer of this server."""

    error: ErrorDetail


def _error(description: str) -> dict:
    return {"description": description + " (OpenAI's shape; Mistral's for a Mistral-shaped request)",
            "content": {"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/ErrorResponse"}, {"$ref": "#/components/schemas/MistralError"}]}}}}


_SSE = {"schema": {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}


#: what ``POST /v1/audio/speech`` answers, for /openapi.json (its request body: :mod:`.openapi`)
SPEECH_RESPONSES = {
    200: {"description": "OpenAI's request: the audio, a whole file, a chunked stream (stream_format audio) or "
                         "server-sent events (stream_format sse). Mistral's: JSON {audio_data} or, with stream, "
                         "server-sent events. X-Finish-Reason says end or length for whole files",
          "content": {**{media: {"schema": {"type": "string", "format": "binary"}} for media in FORMATS.values()},
                      "application/json": {"schema": {"$ref": "#/components/schemas/MistralSpeechResponse"}},
                      "text/event-stream": _SSE}},  # each event: speech.audio.delta, .done, or error
    400: _error("bad input: empty or too long text, a text part that cannot fit the KV cache, unknown voice, "
                "bad format, speed or types (OpenAI's request), malformed JSON, voice cloning fields, fields "
                "not supported yet"),
    422: {"model": MistralValidationError,
          "description": "a Mistral-shaped request with an invalid field (Mistral's shape, which its SDK parses)"},
    413: _error("a request body over the limit (1 MiB by default)"),
    500: _error("an internal failure, or a preset voice the server cannot read"),
    503: _error("the model is loading, failed to load, or the server is busy (Retry-After)"),
}
