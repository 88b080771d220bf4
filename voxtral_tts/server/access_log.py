"""One structured line per request, and the request's id on every log line about it.

Each request (HTTP, or a WebSocket session) gets a :class:`RequestRecord`: its id — the client's
``X-Request-Id`` when it sent a sane one, else a new one — returned in the response's
``X-Request-Id``, and what the handlers learn about it (voice, format, text length, frames, time to
first audio, finish reason, error code). While the request is handled, the record is the context
variable :data:`current` (it follows the handler into its streamed body and into
``asyncio.to_thread``), so that :class:`RequestIdFilter` puts its id on every log line written on
the request's behalf — the runtime's too (the cut-part warning of :mod:`voxtral_tts.runtime.results`),
which knows nothing of the server. When the request ends — answered, failed, cut, or abandoned by
its client — :meth:`RequestLog.track` writes one line (logger ``voxtral_tts.access``) and hands the
record to its observers (the metrics: :mod:`.metrics`).

How other parts of the server use it:

- an HTTP route: nothing to do (:class:`AccessLog`, the app's outermost middleware, tracks it); it
  may fill in fields with ``record = current_request()`` (``None`` outside a request);
- a WebSocket endpoint (``scope["type"] == "websocket"``): tracked by :class:`AccessLog` too, one
  line per session (status 101 once accepted); each utterance inside it may be logged and counted
  as a request of its own with ``with app.state.request_log.track("WS", path, request_id) as
  record:`` — fill in ``record.voice`` etc. and call ``record.first_audio()`` at the first audio;
- a server outside the app (Wyoming): the same ``track`` on a :class:`RequestLog` of its own or
  the app's, and :func:`configure_logging` once at start-up.

Fields of the line (``--log-format json``: one JSON object per line, these as keys; ``text``: ``key=value``
after the message): ``request_id method path status client_gone latency_s ttfa_s voice format
text_chars frames audio_s finish_reason error``; fields a request never had are left out.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

__all__ = ["AccessLog", "RequestLog", "RequestRecord", "configure_logging", "current", "current_request"]

#: the logger of the one line per request
ACCESS_LOGGER = "voxtral_tts.access"
REQUEST_ID = "X-Request-Id"
#: a client's request id is taken as it is when it looks like one (else a new id is made)
_SANE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
#: paths probed every few seconds (a 503 from /ready while loading included): their lines are written at DEBUG
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
#: the finish reasons a request ends with (``end``/``length``: the runtime's; the others: how it ended here)
FINISH_REASONS = ("end", "length", "cancelled", "failed")


@dataclass
class RequestRecord:
    """What is known about one request; handlers fill in the speech fields."""

    id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    endpoint: str | None = None  # the route's path template (bounded, for metrics); None: no route matched
    status: int | None = None
    client_gone: bool = False
    ttfa: float | None = None  # seconds from the start to the first audio
    voice: str | None = None
    format: str | None = None
    text_chars: int | None = None
    frames: int | None = None
    audio_seconds: float | None = None
    finish_reason: str | None = None  # one of FINISH_REASONS for a speech request
    error: str | None = None  # the error code of an error answer (``overloaded``, ``unknown_voice``, …)
    generation: float | None = None  # seconds from the request's submission to its last audio
    latency: float | None = None  # set when the request ends

    def first_audio(self) -> None:
        """The first audio of the request is ready (the first call counts)."""
        if self.ttfa is None:
            self.ttfa = time.monotonic() - self.started

    def speech(self, *, frames: int, audio_seconds: float, finish_reason: str) -> None:
        self.frames, self.audio_seconds, self.finish_reason = frames, audio_seconds, finish_reason

    def fields(self) -> dict:
        """The log line's fields (see the module's docstring), without those never set."""
        values = {"request_id": self.id, "method": self.method, "path": self.path, "status": self.status,
                  "client_gone": self.client_gone,
                  "latency_s": None if self.latency is None else round(self.latency, 4),
                  "ttfa_s": None if self.ttfa is None else round(self.ttfa, 4), "voice": self.voice,
                  "format": self.format, "text_chars": self.text_chars, "frames": self.frames,
                  "audio_s": None if self.audio_seconds is None else round(self.audio_seconds, 3),
                  "finish_reason": self.finish_reason, "error": self.error}
        return {key: value for key, value in values.items() if value is not None}


#: the request being handled in this context (None outside a request)
current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("voxtral_request", default=None)


def current_request() -> RequestRecord | None:
    return current.get()


def request_id(headers: dict | None = None) -> str:
    """The client's ``X-Request-Id`` (``headers``: lower-case names) when it looks like one, else a new id."""
    given = (headers or {}).get(REQUEST_ID.lower())
    return given if given and _SANE_ID.fullmatch(given) else uuid.uuid4().hex


class RequestLog:
    """Where requests end: one line each on :data:`ACCESS_LOGGER`, and every observer called with
    the finished record (an observer's failure is logged, never the request's)."""

    def __init__(self, logger: logging.Logger | None = None):
        self.log = logger or logging.getLogger(ACCESS_LOGGER)
        self._observers: list[Callable[[RequestRecord], None]] = []

    def observe(self, observer: Callable[[RequestRecord], None]) -> None:
        self._observers.append(observer)

    @contextlib.contextmanager
    def track(self, method: str, path: str, request_id_: str | None = None) -> Iterator[RequestRecord]:
        """The record of a request handled inside the ``with`` block (the context's :data:`current`
        meanwhile); its line is written when the block ends, however it ends."""
        record = RequestRecord(request_id_ or uuid.uuid4().hex, method, path)
        token = current.set(record)
        try:
            yield record
        except BaseException:
            if record.status is None:
                record.status = 500
            if record.finish_reason is None and record.voice is not None:
                record.finish_reason = "failed"
            raise
        finally:
            self.end(record)
            current.reset(token)

    def end(self, record: RequestRecord) -> None:
        record.latency = time.monotonic() - record.started
        fields = record.fields()
        level = logging.DEBUG if record.path in QUIET_PATHS else logging.INFO
        gone = " (client went away)" if record.client_gone else ""
        self.log.log(level, "%s %s %s %.3fs%s", record.method, record.path, record.status, record.latency, gone,
                     extra={"access": fields})
        for observer in self._observers:
            try:
                observer(record)
            except Exception:
                self.log.exception("request observer failed")


def _error_code(body: bytes) -> str | None:
    """The code of an error answer's JSON body: OpenAI's ``error.code``, Mistral's ``code``,
    ``invalid_field`` for a 422's ``detail``."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("error"), dict):
        return data["error"].get("code")
    if "detail" in data:
        return "invalid_field"
    return data.get("code")


class AccessLog:
    """ASGI middleware, the app's outermost: a :class:`RequestRecord` per HTTP request and WebSocket
    session (see the module's docstring), the id in ``X-Request-Id``, the status and whether the
    client went away (an ``http.disconnect`` before the response ended), the error code of an
    error answer, and the route's path template."""

    def __init__(self, app, request_log: RequestLog):
        self.app, self.request_log = app, request_log

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = request_id(headers)
        method = scope.get("method", "WS")
        with self.request_log.track(method, scope.get("path", ""), rid) as record:
            ended = False
            error_body: list[bytes] | None = None

            async def watched_receive():
                message = await receive()
                if message["type"] in ("http.disconnect", "websocket.disconnect") and not ended \
                        and scope["type"] == "http":
                    record.client_gone = True
                return message

            async def send_logged(message):
                nonlocal ended, error_body
                kind = message["type"]
                if kind in ("http.response.start", "websocket.http.response.start"):
                    record.status = message["status"]
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (REQUEST_ID.lower().encode(), rid.encode())]}
                    content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                    if record.status >= 400 and content_type.startswith(b"application/json"):
                        error_body = []
                elif kind == "http.response.body":
                    if error_body is not None:
                        error_body.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        ended = True
                        if error_body is not None and record.error is None:
                            record.error = _error_code(b"".join(error_body))
                elif kind == "websocket.accept":
                    record.status = 101
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (REQUEST_ID.lower().encode(), rid.encode())]}
                elif kind == "websocket.close" and record.status is None:
                    record.status = 403
                try:
                    await send(message)
                except OSError:
                    record.client_gone = True
                    raise

            try:
                await self.app(scope, watched_receive, send_logged)
            finally:
                route = scope.get("route")
                record.endpoint = getattr(route, "path", None)
                if record.status == 499:
                    record.client_gone = True


# --- the log's format ----------------------------------------------------------------------------------

class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every record: the current request's, ``-`` outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request = current.get()
            record.request_id = request.id if request is not None else "-"
        return True


class TextFormatter(logging.Formatter):
    """``time level logger [request id]: message key=value …`` (the access fields after the message,
    less those the message says: method, path, status, latency; ``client_gone`` only when true)."""

    SAID = frozenset({"request_id", "method", "path", "status", "latency_s"})

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "access", None)
        if fields:
            line += "".join(f" {key}={json.dumps(value) if isinstance(value, str) else value}"
                            for key, value in fields.items()
                            if key not in self.SAID and not (key == "client_gone" and not value))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``request_id``,
    ``message``, the access fields, and ``exc`` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name,
                 "request_id": getattr(record, "request_id", "-"), "message": record.getMessage()}
        entry.update(getattr(record, "access", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


LOG_FORMATS = ("text", "json")


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """The process's logging: one handler on stderr with the request id on every line, in
    ``log_format`` (``text`` or ``json``); uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
