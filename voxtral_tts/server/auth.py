"""API keys: ``voxtral-serve --api-key KEY`` (repeatable) or ``$VOXTRAL_API_KEYS`` (several,
separated by commas or whitespace) makes the API ask for ``Authorization: Bearer KEY``.

What needs a key: every path under ``/v1/`` and ``/v2/`` — HTTP requests and WebSocket handshakes — and
``/metrics`` with ``--metrics-need-key``. Open: ``/health``, ``/ready`` (an orchestrator's probes),
``/metrics`` by default (a scraper on the private network), the page at ``/`` with its files and
``/web/config`` (the page asks for the key and sends it itself), ``/openapi.json`` and ``/docs``.

A request without a valid key gets 401 with ``WWW-Authenticate: Bearer``, in its client's error
shape: OpenAI's ``{"error": {…, "code": "invalid_api_key"}}``, or Mistral's ``{"object": "error", …}``
for a Mistral-shaped request (the rule of :mod:`.mistral`). A WebSocket handshake without one is
refused with 401 where the server supports ASGI's ``websocket.http.response`` (uvicorn does),
else closed with code 1008 before it is accepted (the client sees 403).

Keys are compared in constant time (:func:`hmac.compare_digest`, against every key whatever the
first comparisons gave) and never logged; the access log records only the status.

Other parts of the server call :meth:`APIKeys.authorize` with a request's headers (a WebSocket
endpoint mounted elsewhere, a Wyoming server whose protocol has no headers cannot), or
:meth:`APIKeys.authorize_scope` with an ASGI scope; ``app.state.api_keys`` is the app's
:class:`APIKeys`. A browser cannot set headers on a WebSocket: for that client a key may come as
the subprotocol ``openai-insecure-api-key.KEY`` (OpenAI's realtime convention), accepted by
:meth:`APIKeys.authorize_scope` for WebSocket scopes only.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from typing import Iterable, Mapping

from .errors import APIError, error_body
from .mistral import accepts_mistral, is_mistral, mistral_error

__all__ = ["API_KEYS_ENV", "APIKeys", "RequireKey", "keys_from"]

API_KEYS_ENV = "VOXTRAL_API_KEYS"
WEBSOCKET_KEY_PROTOCOL = "openai-insecure-api-key."
PROTECTED_PREFIX = ("/v1/", "/v2/")  # the API (/v2/audio/voices: the SDK's voice search)
MESSAGE = "a valid API key is required: send the header Authorization: Bearer <key>"


def keys_from(flags: Iterable[str] | None, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The keys of ``--api-key`` flags and of :data:`API_KEYS_ENV` (commas or whitespace between keys)."""
    environ = os.environ if environ is None else environ
    keys = [key.strip() for key in flags or ()]
    keys += re.split(r"[\s,]+", environ.get(API_KEYS_ENV, ""))
    return tuple(dict.fromkeys(key for key in keys if key))


def _header(headers, name: str) -> str | None:
    """A header of a mapping (any case of names) or of ASGI's raw ``[(bytes, bytes)]`` list."""
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if key.lower() == name:
                return value
        return None
    for key, value in headers:
        if key.decode("latin-1").lower() == name:
            return value.decode("latin-1")
    return None


class APIKeys:
    """The keys this server accepts (none: every request is allowed)."""

    def __init__(self, keys: Iterable[str] = ()):
        self._keys = tuple(key.encode() for key in keys if key)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:  # never the keys themselves
        return f"APIKeys({len(self._keys)} keys)"

    def check(self, key: str | None) -> bool:
        """``key`` is one of the keys (constant time per key, every key compared); True when none is set."""
        if not self._keys:
            return True
        if not key:
            return False
        given = key.encode()
        found = False
        for known in self._keys:
            found |= hmac.compare_digest(given, known)
        return found

    def authorize(self, headers) -> bool:
        """``headers`` (a mapping, or ASGI's raw list) carry ``Authorization: Bearer <a key>``."""
        if not self._keys:
            return True
        value = _header(headers, "authorization") or ""
        scheme, _, key = value.strip().partition(" ")
        return scheme.lower() == "bearer" and self.check(key.strip())

    def authorize_scope(self, scope) -> bool:
        """An ASGI scope's request carries a key: its ``Authorization`` header, or for a WebSocket
        the subprotocol ``openai-insecure-api-key.<key>``."""
        if self.authorize(scope.get("headers", [])):
            return True
        if scope.get("type") == "websocket":
            for protocol in scope.get("subprotocols", []):
                if protocol.startswith(WEBSOCKET_KEY_PROTOCOL) and self.check(protocol[len(WEBSOCKET_KEY_PROTOCOL):]):
                    return True
        return False

    def needs_key(self, path: str, metrics: bool = False) -> bool:
        """Whether ``path`` is behind the keys (``metrics``: /metrics is too)."""
        return self.required and (path.startswith(PROTECTED_PREFIX) or (metrics and path == "/metrics"))


class RequireKey:
    """ASGI middleware: 401 (see the module's docstring) for a request to a protected path without
    a valid key. Placed inside :class:`~.middleware.BodyLimit`, which has read the body, so that
    the shape of a speech request's answer can be chosen by its body."""

    def __init__(self, app, keys: APIKeys, metrics: bool = False):
        self.app, self.keys, self.metrics = app, keys, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not self.keys.needs_key(scope.get("path", ""), self.metrics) \
                or self.keys.authorize_scope(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect: the handshake begins
            return await self._refuse_websocket(scope, send)
        accept = _header(scope.get("headers", []), "accept")
        mistral = accepts_mistral(accept)
        if scope.get("method") == "POST" and scope.get("path") == "/v1/audio/speech":
            message = await receive()
            try:
                data = json.loads(message.get("body", b""))
            except ValueError:
                data = None
            if isinstance(data, dict):
                mistral = is_mistral(data, accept)
        error = APIError(401, MESSAGE, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if mistral:
            body, headers = mistral_error(error).body, error.headers
        else:
            body, headers = json.dumps(error_body(error.message, error.type, code=error.code)).encode(), error.headers
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *((k.lower().encode(), v.encode()) for k, v in headers.items())]})
        await send({"type": "http.response.body", "body": body})

    async def _refuse_websocket(self, scope, send):
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps(error_body(MESSAGE, "invalid_request_error", code="invalid_api_key")).encode()
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
