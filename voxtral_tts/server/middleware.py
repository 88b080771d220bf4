"""The server's ASGI middleware: :class:`BodyLimit`, a 413 (in OpenAI's error shape) for a
request body over the limit, declared or streamed; a path may have its own limit (a voice's upload)."""

from __future__ import annotations

import json

from .errors import error_body


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes, declared (Content-Length) or
    streamed (chunked). The body is read here, up to the limit, and handed to the app whole: an
    error raised while the app itself reads would become FastAPI's 400 for an unparsable body."""

    def __init__(self, app, limit: int, paths: dict[str, int] | None = None):
        self.app, self.default, self.paths = app, limit, paths or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.paths.get(scope.get("path", "").rstrip("/"), self.default)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._reject(send, limit)
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away while sending
                return
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > limit:
                return await self._reject(send, limit)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later: disconnects

        await self.app(scope, replay, send)

    async def _reject(self, send, limit: int):
        body = json.dumps(error_body(f"request body over {limit} bytes", "invalid_request_error",
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
