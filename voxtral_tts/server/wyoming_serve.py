"""``voxtral-serve --wyoming URI``: the Wyoming protocol (:mod:`.wyoming`) next to the HTTP API in
one process and one event loop, both on the same :class:`~.worker.Synthesizer` — one model, one
scheduler, one decode batch for the requests of both — or alone (``--no-http``).

:func:`serve` runs them until stopped; :func:`serve_forever` is the command's entry.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal

from wyoming.server import AsyncServer

from ..errors import VoxtralError
from .app import create_app
from .config import ServeConfig
from .voices_api import Voices
from .worker import Synthesizer
from .wyoming import SpeechHandler

log = logging.getLogger(__name__)


def wyoming_server(uri: str) -> AsyncServer:
    """The listener for ``uri``: ``tcp://HOST:PORT`` or ``unix://PATH`` (not ``stdio://``: the
    process's standard streams carry its log)."""
    if uri.startswith("stdio:"):
        raise VoxtralError("--wyoming: stdio:// is not supported; give tcp://HOST:PORT (or unix://PATH)")
    try:
        return AsyncServer.from_uri(uri)
    except ValueError as exc:
        raise VoxtralError(f"--wyoming {uri!r}: {exc} (e.g. tcp://0.0.0.0:10200)") from None


async def serve(synth: Synthesizer, uri: str, *, idle_timeout: float | None = None, http=None,
                sockets=None, stop: asyncio.Event | None = None, voices: Voices | None = None) -> None:
    """Serve Wyoming at ``uri`` on ``synth``: with ``http`` (a ``uvicorn.Server`` of the app that
    owns ``synth``; ``sockets``: its listening sockets, if given) until it exits; without it, ``synth``
    is started here and served until ``stop`` is set (default: SIGINT or SIGTERM)."""
    server = wyoming_server(uri)
    await server.start(functools.partial(SpeechHandler, synth=synth, idle_timeout=idle_timeout, voices=voices))
    log.info("Wyoming protocol on %s", uri)
    try:
        if http is not None:
            await http.serve(sockets)
            return
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        synth.start()
        try:
            await stop.wait()
        finally:
            synth.stop()
    finally:
        await server.stop()


def serve_forever(config: ServeConfig, args: argparse.Namespace) -> int:
    """The command: Wyoming at ``args.wyoming``, and the HTTP API at ``--host``/``--port`` unless
    ``--no-http`` (with the HTTP server's keys, TLS and bounded drain, :mod:`.shutdown`; Wyoming
    itself has no authentication: serve it on a trusted network)."""
    wyoming_server(args.wyoming)  # a bad address is refused before the model loads
    idle_timeout = args.wyoming_idle_timeout or None  # 0: never
    if not args.http:
        synth = Synthesizer(config.load, config.server)  # voices made over HTTP earlier are spoken too
        voices = Voices(config.server, lambda: synth.tts)
        asyncio.run(serve(synth, args.wyoming, idle_timeout=idle_timeout, voices=voices))
        return 0
    from . import shutdown

    app = create_app(config.load, config.server)
    http = shutdown.http_server(app, host=args.host, port=args.port, graceful_timeout=args.graceful_timeout,
                                ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                                access_log=args.uvicorn_access_log, log_level=args.log_level)
    asyncio.run(serve(app.state.synthesizer, args.wyoming, idle_timeout=idle_timeout, http=http,
                      voices=app.state.voices))
    shutdown.exit_if_forced(http)
    return 0
