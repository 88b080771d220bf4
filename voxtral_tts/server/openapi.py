"""The app's /openapi.json: FastAPI's schema less its 422 entries (this server answers validation
errors 400, :mod:`.errors`) and, once the model is loaded, with its voices as the ``voice``
field's values."""

from __future__ import annotations

from fastapi import FastAPI

from .worker import Synthesizer


def patch_openapi(app: FastAPI, synth: Synthesizer) -> None:
    """``app.openapi`` as described above (``synth``: whose model names the voices)."""
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
