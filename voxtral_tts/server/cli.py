"""``voxtral-serve``: the OpenAI-compatible speech server.

    voxtral-serve ENGINE_OR_MODEL_DIR [--host 127.0.0.1] [--port 8080] [--backend onnxruntime|torch] [--device cpu|cuda]
    voxtral-serve ENGINE_OR_MODEL_DIR --wyoming tcp://0.0.0.0:10200 [--no-http]   # and Home Assistant's Wyoming
    voxtral-serve ENGINE_OR_MODEL_DIR --replicas N [--max-replicas M] [--ray-address ADDR]   # on Ray Serve
    voxtral-serve … [--api-key KEY] [--ssl-certfile F --ssl-keyfile F] [--log-format json] [--graceful-timeout S]

Operating it (metrics at /metrics, the log, keys, TLS, shutdown): docs/operations.md.

A browser at http://127.0.0.1:8080/ gets a page to try the voices (``--no-web``: the API alone).
Any OpenAI client works unchanged::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused")
    client.audio.speech.create(model="voxtral-4b-tts-2603", voice="alloy", input="Hello!").write_to_file("a.mp3")
"""

from __future__ import annotations

import logging
import sys

from ..errors import VoxtralError, run_cli
from .access_log import configure_logging
from .app import create_app
from .config import RAY_MISSING, WYOMING_MISSING, check_ray_arguments, check_wyoming_arguments, parser, serve_config

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)

    def serve() -> int:
        check_ray_arguments(args)
        check_wyoming_arguments(args)
        if args.replicas is not None:
            try:
                from . import ray_serve
            except ImportError as exc:
                if (exc.name or "").split(".")[0] != "ray":
                    raise
                raise VoxtralError(RAY_MISSING) from None
            return ray_serve.serve_forever(args)
        from . import shutdown

        config = serve_config(args)
        if args.wyoming is not None:  # and HTTP beside it unless --no-http
            try:
                from .wyoming_serve import serve_forever
            except ImportError as exc:
                if (exc.name or "").split(".")[0] != "wyoming":
                    raise
                raise VoxtralError(WYOMING_MISSING) from None
            return serve_forever(config, args)
        app = create_app(config.load, config.server)
        shutdown.run(app, host=args.host, port=args.port, graceful_timeout=args.graceful_timeout,
                     ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                     access_log=args.uvicorn_access_log, log_level=args.log_level)
        return 0

    return run_cli("voxtral-serve", serve)


if __name__ == "__main__":
    sys.exit(main())
