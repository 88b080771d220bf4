"""The app's /openapi.json: FastAPI's schema less its 422 entries where this server answers
validation errors 400 (:mod:`.errors`), with the body of ``POST /v1/audio/speech`` (OpenAI's request
or Mistral's, read by the route itself: :mod:`.mistral`) and its answers' models, and, once the
model is loaded, with its voices as the values of ``voice`` and ``voice_id`` (and a created voice's
id, where voices can be created). Where the server cannot make voices, ``ref_audio`` allows only null.
The voice routes (:mod:`.voices_api`) keep their 422: Mistral's, for an invalid field."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from .schemas import (REF_AUDIO_REFUSED, ErrorResponse, MistralError, MistralSpeechRequest, MistralSpeechResponse,
                      SpeechRequest)
from .voice_store import VOICE_ID
from .voices_api import SEARCH_PATH, VOICES_PATH, Voices
from .worker import Synthesizer

SPEECH_PATH = "/v1/audio/speech"
_REF = "#/components/schemas/{model}"


def _speech_schemas() -> dict:
    """The JSON schemas of the speech route's request bodies and answers, by model name."""
    _, schemas = models_json_schema([(model, "validation") for model in (
        SpeechRequest, MistralSpeechRequest, MistralSpeechResponse, ErrorResponse, MistralError)], ref_template=_REF)
    return schemas["$defs"]


def patch_openapi(app: FastAPI, synth: Synthesizer, voices: Voices) -> None:
    """``app.openapi`` as described above (``synth``: whose model names the voices; ``voices``: whether
    voices can be created)."""
    fastapi_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's schema, patched as the module says (rebuilt, with the voices, once the model is loaded)."""
        if app.openapi_schema is None:
            schema = fastapi_openapi()
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    # on the speech and voice routes a 422 is Mistral's
                    if path != SPEECH_PATH and not path.startswith((VOICES_PATH, SEARCH_PATH)):
                        operation.get("responses", {}).pop("422", None)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_speech_schemas())
            schema["paths"][SPEECH_PATH]["post"]["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"anyOf": [{"$ref": _REF.format(model="SpeechRequest")},
                                     {"$ref": _REF.format(model="MistralSpeechRequest")}]}}}}
            models = schema["components"]["schemas"]
            if voices.maker.unavailable() is not None:
                for model, field in (("SpeechRequest", "ref_audio"), ("SpeechRequest", "reference_audio"),
                                     ("MistralSpeechRequest", "ref_audio")):
                    models[model]["properties"][field] = {"type": "null", "description": REF_AUDIO_REFUSED}
            if not synth.ready:
                return schema
            names = [{"type": "string", "enum": synth.tts.voices + sorted(synth.tts.voice_bank.aliases)}]
            if voices.store.enabled:
                names.append({"type": "string", "pattern": f"^{VOICE_ID.pattern}$"})
            models["SpeechRequest"]["properties"]["voice"]["anyOf"] = [
                *names, {"type": "object", "properties": {"id": {"anyOf": names}}, "required": ["id"]}]
            models["MistralSpeechRequest"]["properties"]["voice_id"]["anyOf"] = [*names, {"type": "null"}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
