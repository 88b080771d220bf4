"""The server's errors, in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``:
:class:`APIError` (raised by the routes and the worker), the body and response built from one
(:func:`error_body`, :func:`error_response`), client input made safe to quote in a message
(:func:`encodable`, :func:`quoted`), a generation's failure as the error its client gets
(:func:`as_api_error`), and :func:`add_error_handlers`, which makes every other failure —
FastAPI's validation errors, Starlette's HTTP errors, anything unexpected — answer in that shape
too: 400 for bad input, 500 without a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import VoxtralError

log = logging.getLogger(__name__)


class ServerShuttingDown(Exception):
    """A request ended by the server's shutdown (its graceful timeout passed): 503 ``shutting_down``."""


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


def as_api_error(exc: Exception) -> APIError:
    """A generation's failure as its client's error: bad input (:class:`VoxtralError`) 400, anything
    else 500 (logged, without its detail in the answer)."""
    if isinstance(exc, VoxtralError):
        return APIError(400, str(exc))
    if isinstance(exc, ServerShuttingDown):
        log.warning("request ended by the shutdown: %s", exc)
        return APIError(503, str(exc), "server_error", code="shutting_down", headers={"Retry-After": "1"})
    log.error("generation failed: %s: %s", type(exc).__name__, exc)
    return APIError(500, "internal server error", "server_error")


def add_error_handlers(app: FastAPI) -> None:
    """Every error ``app`` answers in OpenAI's shape: :class:`APIError` as raised, FastAPI's
    validation errors as 400 (naming the first bad field), Starlette's HTTP errors with their
    status, and anything else as a logged 500."""

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
