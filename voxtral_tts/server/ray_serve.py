"""The speech server on Ray Serve: the same app (:func:`~voxtral_tts.server.app.create_app`) as
replicas, each owning its own model and decode batch exactly as one ``voxtral-serve`` does.

Imported only for ``voxtral-serve --replicas`` and by operators who deploy with Ray's own tooling::

    serve run voxtral_tts.server.ray_serve:build_app model=engines/voxtral replicas=2 max_batch=4

or a Serve config file whose application has ``import_path: voxtral_tts.server.ray_serve:build_app``
and ``args:`` with the same names as ``voxtral-serve``'s options.

Admission: Ray hands each replica at most ``max_batch + max_queue`` requests at a time — the
single server's own limit (Ray's ``max_ongoing_requests``: a full replica turns a request away and
Ray's router places it with another, so that the app's own 503 is not reached). Requests that find every
replica full wait in Ray's queue, which holds as many as all replicas admit (Ray counts a burst's
simultaneous arrivals as queued until each is placed, so a smaller queue would refuse bursts the
replicas have room for); beyond it Ray answers 503 with ``Retry-After: 1`` — in OpenAI's shape, code
``overloaded``, like the single server's, where :func:`proxy_middlewares` is installed in Ray's
proxy (``voxtral-serve --replicas`` does it on the cluster it starts). Every response
names its replica in :data:`REPLICA_HEADER`. ``GET /metrics`` answers every replica's metrics, each
with a ``replica`` label (:mod:`.ray_metrics`). On shutdown Ray drains each replica for
``--graceful-timeout`` seconds (its ``graceful_shutdown_timeout_s``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import threading
from typing import Callable

import ray
from ray import serve

from ..api import engine_path
from ..errors import VoxtralError
from ..runtime.tts import TTS
from .app import create_app
from .config import ServeConfig, check_ray_arguments, parser, serve_config
from .errors import encodable, error_body
from .ray_metrics import ReplicaMetrics, remove_hub
from .schemas import ServerOptions

log = logging.getLogger(__name__)

#: response header: the replica that produced the response (``VoxtralTTS#<id>; node=<ip>; pid=<pid>``)
REPLICA_HEADER = "X-Voxtral-Replica"
#: the Ray Serve application's name
APP_NAME = "voxtral-tts"
DEPLOYMENT_NAME = "VoxtralTTS"
#: how long ``voxtral-serve --replicas`` waits for Ray Serve to take the application down
SHUTDOWN_TIMEOUT_S = 30


class ReplicaHeader:
    """ASGI middleware: :data:`REPLICA_HEADER` on every response."""

    def __init__(self, app, value: str):
        self.app, self.value = app, value.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_named(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REPLICA_HEADER.lower().encode(), self.value)]}
            await send(message)

        await self.app(scope, receive, send_named)


#: Ray's setting that gives its HTTP proxies our middleware (read where each proxy starts)
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "voxtral_tts.server.ray_serve:proxy_middlewares"


class RayErrors:
    """ASGI middleware for Ray's HTTP proxy: the answers Ray gives itself, in OpenAI's error shape
    like every answer of the app. The app's own errors are JSON and pass unchanged; Ray's are
    plain text (its 503 when its queue is full, keeping ``Retry-After``; 404 for an unknown path;
    408 on its request timeout), or no answer at all when the replica died mid-request (uvicorn
    would say a plain ``Internal Server Error``: here a 500 with code ``replica_failed``). A
    server-sent event stream cut by its replica's death ends with an ``error`` event, as the
    app's own streams end on a failure; a chunked audio stream stays cut (an incomplete
    transfer), as the app's do."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"started": False, "ended": False, "sse": False}
        held: dict = {}  # Ray's own error answer, rewritten once its body is complete

        async def forward(message):
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if message["status"] >= 400 and not content_type.startswith(b"application/json"):
                    held.update(start=message, body=b"")
                    return
                state["started"] = True
                state["sse"] = content_type.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body":
                if held:
                    held["body"] += message.get("body", b"")
                    if message.get("more_body", False):
                        return
                    state["started"] = state["ended"] = True
                    return await self._answer(send, held["start"]["status"],
                                              held["body"].decode("utf-8", "replace").strip(),
                                              [(k, v) for k, v in held["start"].get("headers", [])
                                               if k.lower() not in (b"content-type", b"content-length")])
                if not message.get("more_body", False):
                    state["ended"] = True
            await send(message)

        await self.app(scope, receive, forward)
        if not state["started"]:  # Ray's proxy lost the replica before any answer
            await self._answer(send, 500, "the replica serving this request failed; retry it", [],
                               code="replica_failed")
        elif not state["ended"] and state["sse"]:
            error = error_body("the replica serving this request failed after its audio began", "server_error",
                               code="replica_failed")
            await send({"type": "http.response.body", "body": f"data: {json.dumps({'type': 'error', **error})}\n\n"
                        .encode(), "more_body": False})

    @staticmethod
    async def _answer(send, status: int, message: str, headers: list, code: str | None = None):
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        code = code or {503: "overloaded", 404: "not_found", 408: "timeout"}.get(status)
        body = json.dumps(error_body(encodable(message or "error"), type_, code=code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def proxy_middlewares() -> list:
    """Ray's HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=`` :data:`PROXY_CALLBACK`)."""
    from starlette.middleware import Middleware

    return [Middleware(RayErrors)]


@serve.ingress()
class VoxtralTTS:
    """One replica: loads its model in the constructor (Ray routes no request to it before that is
    done), then serves :func:`create_app`'s app on it."""

    def __init__(self, load: Callable[[], TTS], options: ServerOptions, log_level: str = "info"):
        level = log_level.upper()
        logging.getLogger("voxtral_tts").setLevel(level)
        if not logging.getLogger().handlers:
            logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        context = serve.get_replica_context()
        self.tag = f"{context.deployment}#{context.replica_tag}"
        self.app_name = context.app_name
        self.name = f"{self.tag}; node={ray.util.get_node_ip_address()}; pid={os.getpid()}"
        self.options = options
        self.tts = load()
        self.synthesizer = None
        self.metrics: ReplicaMetrics | None = None
        log.info("replica %s ready: %d decoding slots", self.name, self.tts.backend.max_batch)

    def __serve_build_asgi_app__(self):
        tts = self.tts
        app = create_app(lambda: tts, self.options)
        app.add_middleware(ReplicaHeader, value=self.name)
        self.synthesizer = app.state.synthesizer
        self.metrics = ReplicaMetrics(self.tag, app.state.metrics.render, self.app_name)
        app.state.metrics.exposition = self.metrics.exposition  # every replica's, labelled
        return app

    def __del__(self):
        if self.metrics is not None:
            self.metrics.close()

    def check_health(self) -> None:
        """Ray's health check: a replica whose worker thread has stopped is restarted."""
        synthesizer = self.synthesizer
        if synthesizer is not None and (synthesizer.load_error or not synthesizer.alive):
            raise RuntimeError(f"replica {self.name}: the model's worker has stopped "
                               f"({synthesizer.load_error or 'thread ended'})")


def replica_resources(config: ServeConfig) -> dict:
    """What a replica asks Ray for: a GPU for the CUDA paths, else its CPU threads (1 by default)."""
    options = config.load_options.options
    device = str(options.device or "")
    if config.backend == "tensorrt" or device.startswith("cuda") or device == "tensorrt":
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": getattr(options, "threads", None) or 1}


def application(load: Callable[[], TTS], options: ServerOptions, *, max_batch: int, replicas: int = 1,
                max_replicas: int | None = None, ray_actor_options: dict | None = None,
                log_level: str = "info", graceful_timeout: float | None = None) -> serve.Application:
    """The Ray Serve application: ``replicas`` replicas of :func:`create_app` (``load``: a picklable
    callable that builds the model, called once in each replica), or autoscaled between
    ``replicas`` and ``max_replicas`` on ongoing requests (``max_batch`` per replica)."""
    admitted = max_batch + options.max_queue
    settings: dict = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": admitted,
        # Ray's queue counts every request not yet handed to a replica, a burst's included: as many
        # as all replicas admit, so that only more than that is refused there
        "max_queued_requests": admitted * (max_replicas or replicas),
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
        "ray_actor_options": ray_actor_options or {"num_cpus": 1},
    }
    if graceful_timeout is not None:  # how long Ray lets a stopping replica's requests finish
        settings["graceful_shutdown_timeout_s"] = graceful_timeout
    if max_replicas is None:
        settings["num_replicas"] = replicas
    else:
        settings["autoscaling_config"] = {"min_replicas": replicas, "initial_replicas": replicas,
                                          "max_replicas": max_replicas, "target_ongoing_requests": max_batch}
    return serve.deployment(VoxtralTTS).options(**settings).bind(load, options, log_level)


def _exported(config: ServeConfig) -> ServeConfig:
    """An onnxruntime model directory exported to the engine cache here, once, instead of by every
    replica at the same time (:func:`voxtral_tts.api.engine_path`)."""
    return dataclasses.replace(config, model=str(engine_path(config.model, config.backend, progress=False)))


def app_from_args(args: argparse.Namespace) -> serve.Application:
    """The application of ``voxtral-serve``'s parsed options (``--replicas`` at least 1)."""
    check_ray_arguments(args)
    config = _exported(serve_config(args))
    return application(config.load, config.server, max_batch=config.max_batch, replicas=args.replicas,
                       max_replicas=args.max_replicas, ray_actor_options=replica_resources(config),
                       log_level=args.log_level, graceful_timeout=args.graceful_timeout)


#: options of voxtral-serve that are flags (no value)
_FLAGS = {"compile", "metrics_need_key", "uvicorn_access_log"}


def build_app(args: dict) -> serve.Application:
    """Ray Serve's application builder (``serve run voxtral_tts.server.ray_serve:build_app model=…
    replicas=2``, or ``import_path`` + ``args`` in a Serve config): ``args`` has the names of
    ``voxtral-serve``'s options (``max_batch`` or ``max-batch``), ``model`` required, ``replicas``
    1 by default; the proxy's host and port are Serve's own settings (``http_options``)."""
    args = {str(key).replace("-", "_"): value for key, value in dict(args).items()}
    if "model" not in args:
        raise ValueError("voxtral-tts: the application needs model=ENGINE_OR_MODEL_DIR")
    for key in ("host", "port", "ray_address"):
        if key in args:
            raise ValueError(f"voxtral-tts: {key} is not an application option; set the proxy's address in the "
                             "Serve config's http_options (or serve start)")
    argv = [str(args.pop("model"))]
    args.setdefault("replicas", 1)
    for key, value in args.items():
        if key == "prefix_cache":
            if str(value).lower() in ("false", "0", "no"):
                argv.append("--no-prefix-cache")
        elif key in _FLAGS:
            if str(value).lower() in ("true", "1", "yes"):
                argv.append("--" + key.replace("_", "-"))
        else:
            argv += ["--" + key.replace("_", "-"), str(value)]
    try:
        parsed = parser().parse_args(argv)
    except SystemExit:  # argparse has printed what is wrong
        shown = ["***" if i and argv[i - 1] == "--api-key" else arg for i, arg in enumerate(argv)]  # never a key
        raise ValueError(f"voxtral-tts: bad application arguments {shown}") from None
    return app_from_args(parsed)


def serve_forever(args: argparse.Namespace) -> int:
    """``voxtral-serve --replicas N``: deploy on the Ray cluster, serve until SIGINT or SIGTERM,
    then take the application down (and the local cluster, when this process started it)."""
    app = app_from_args(args)  # the options are checked before Ray starts
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if not address:  # the local cluster's proxy answers Ray's own errors in OpenAI's shape
        os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise VoxtralError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        logging_config = {"log_level": args.log_level.upper()}
        try:
            serve.start(http_options={"host": args.host, "port": args.port}, logging_config=logging_config)
            serve.run(app, name=APP_NAME, route_prefix="/", logging_config=logging_config)
        except Exception as exc:  # a replica that cannot start (its log says why), a port in use, ...
            raise VoxtralError(f"the Ray Serve deployment failed (the replicas' log above says why): "
                               f"{str(exc).strip().splitlines()[0]}") from None
        host = args.host if args.host not in ("0.0.0.0", "::") else socket.gethostname()
        replicas = (f"{args.replicas} replicas" if args.max_replicas is None
                    else f"{args.replicas} to {args.max_replicas} replicas")
        log.info("serving on http://%s:%d through Ray Serve (%s, cluster %s)", host, args.port, replicas,
                 address or "started locally")
        while not stop.wait(1):
            pass
        log.info("shutting down")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        take_down(APP_NAME if address else None)


def take_down(app_name: str | None = None, timeout: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Delete the application ``app_name`` from the cluster (someone else's cluster), or shut all of
    Serve down (None: the cluster this process started), then disconnect from Ray (which stops a
    cluster this process started). Bounded: a SIGTERM sent to the whole process group (systemd,
    timeout) has also stopped the local cluster's raylet, and Serve would wait for it forever."""
    try:
        worker = threading.Thread(target=serve.delete if app_name else serve.shutdown,
                                  args=(app_name,) if app_name else (), daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            log.warning("Ray Serve did not shut down within %d s (is the cluster gone?); leaving it", timeout)
        elif app_name:  # the replicas' metrics hub outlives them (detached): ended with its application
            remove_hub(app_name)
    finally:
        ray.shutdown()
