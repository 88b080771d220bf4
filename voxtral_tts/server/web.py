"""The page to try the voices: ``GET /`` answers a browser with a plain HTML page (no framework, no
build step, nothing fetched from elsewhere) that speaks through the server's own API.

Its files live in ``static/`` beside this module (package data) and are served by Starlette's
:class:`StaticFiles` under ``/static/``, which keeps every path inside that directory. The page
reads what it needs of the server's settings from ``GET /web/config``; everything else (voices,
speech) goes through ``/v1``. ``voxtral-serve --no-web`` leaves all of it out.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ..audio import SAMPLE_RATE
from ..encoding import FORMATS, MAX_SPEED, MIN_SPEED
from ..runtime.constants import MAX_TEMPERATURE
from ..runtime.guidance import MAX_EXPRESSIVENESS

#: the package's folder of page files
STATIC = "static"
#: the page may load its own files, and nothing from anywhere else
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def static_dir():
    """The folder of the page's files, as installed with the package."""
    return resources.files(__package__).joinpath(STATIC)


def add_web(app: FastAPI, *, max_input_chars: int, model_id: str, api_key_required: bool = False) -> None:
    """``GET /`` (the page), ``/static/…`` (its files) and ``GET /web/config`` (the settings it shows;
    ``api_key_required``: the page asks for the key the API needs, :mod:`.auth`)."""
    index = static_dir().joinpath("index.html")
    config = {"model": model_id, "max_input_chars": max_input_chars, "formats": list(FORMATS),
              "speed": {"min": MIN_SPEED, "max": MAX_SPEED, "default": 1.0},
              "temperature": {"min": 0.0, "max": MAX_TEMPERATURE, "default": 0.0},
              "expressiveness": {"min": 1.0, "max": MAX_EXPRESSIVENESS, "default": None}, "sample_rate": SAMPLE_RATE}
    if api_key_required:  # the page then asks for the key (absent: none needed)
        config["api_key_required"] = True

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(index), media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/web/config", include_in_schema=False)
    async def web_config():
        return config

    app.mount("/static", StaticFiles(packages=[(__package__, STATIC)]), name="static")
