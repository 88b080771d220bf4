"""What the speech server takes and answers: its options (:class:`ServerOptions`), the body of
``POST /v1/audio/speech`` (:class:`SpeechRequest`, validated by pydantic with no lax coercion),
OpenAI's error body (:class:`ErrorResponse`) and :data:`SPEECH_RESPONSES`, the route's answers as
/openapi.json documents them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from pydantic_core import PydanticCustomError

from ..encoding import FORMATS, MAX_SPEED, MIN_SPEED
from ..runtime.constants import MAX_TEMPERATURE
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
