"""``voxtral-serve``'s configuration, shared by the single server (:mod:`.cli`) and Ray Serve
(:mod:`.ray_serve`): the command line (:func:`parser`), what one server or one replica is made of
(:class:`ServeConfig`, from parsed flags by :func:`serve_config`) and the checks of the scale-out
flags (:func:`check_ray_arguments`).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path

from ..api import open_tts
from ..cli_options import add_backend_arguments, add_max_batch_argument, options_from_args
from ..engine import is_engine_dir
from ..errors import ArgumentParser, OptionError, VoxtralError
from ..hub import model_path
from ..runtime.constants import STREAM_CHUNKS
from ..runtime.load_options import LoadPlan
from ..runtime.options import SpeechOptions
from ..voice_create import DEFAULT_STEPS
from .access_log import LOG_FORMATS
from .auth import API_KEYS_ENV, keys_from
from .schemas import ServerOptions
from .shutdown import DEFAULT_GRACEFUL_TIMEOUT_S
from .voice_store import default_voices_dir

RAY_MISSING = "--replicas needs Ray Serve, which is not installed: pip install 'voxtral-tts[ray]'"
WYOMING_MISSING = "--wyoming needs the wyoming package, which is not installed: pip install 'voxtral-tts[server]'"


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="voxtral-serve", description="OpenAI-compatible speech server for Voxtral-4B-TTS-2603.")
    p.add_argument("model", help="engine directory (voxtral-export), model directory, or a Hugging Face hub id "
                                 "(mistralai/Voxtral-4B-TTS-2603: downloaded into the hub cache once)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    add_backend_arguments(p)
    add_max_batch_argument(p)
    p.add_argument(
        "--max-queue", type=int, default=8, help="requests that may wait behind those in flight (503 beyond)"
    )
    p.add_argument("--max-frames", type=int, help="cap on frames per text part (default: 50 + 4 per character of "
                   "the part, at most 2048)")
    p.add_argument("--max-input-chars", type=int, default=4096,
                   help="the longest input of a request, and the most text a realtime session may have waiting")
    p.add_argument("--realtime-idle", type=float, default=60.0, metavar="SECONDS",
                   help="a realtime session with nothing sent either way this long is closed (default %(default)s)")
    p.add_argument("--stream-chunks", default=",".join(map(str, STREAM_CHUNKS)),
                   help="frames in each streamed audio chunk, the last repeating (default %(default)s: the first "
                        "chunk after 160 ms of audio)")
    p.add_argument("--no-web", dest="web", action="store_false",
                   help="no page to try the voices at / (an API-only deployment)")
    p.add_argument("--log-level", default="info")
    made = p.add_argument_group("voices made from recordings (POST /v1/audio/voices, ref_audio; needs torch)")
    made.add_argument("--voices-dir", type=Path, default=default_voices_dir(),
                      help="where created voices are kept, across restarts (default: %(default)s)")
    made.add_argument("--voice-model", type=Path,
                      help="the model directory whose codec makes voices (default: the served model, when it is a "
                           "model directory rather than an engine directory)")
    made.add_argument("--voice-steps", type=int, default=DEFAULT_STEPS,
                      help="optimisation steps at most per voice (default %(default)s; fewer: faster, rougher)")
    ops = p.add_argument_group("operations (docs/operations.md)")
    ops.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                     help="log lines as text or as one JSON object each (default %(default)s); one line per request")
    ops.add_argument("--uvicorn-access-log", action="store_true",
                     help="uvicorn's own access log too (off: the server's one line per request says more)")
    ops.add_argument("--api-key", action="append", metavar="KEY",
                     help=f"require Authorization: Bearer KEY on the API (/v1/…); repeat for several keys; also "
                          f"${API_KEYS_ENV} (keys separated by commas), which keeps them out of the process list")
    ops.add_argument("--metrics-need-key", action="store_true", help="/metrics behind the API keys too (default: open)")
    ops.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM; with --ssl-keyfile)")
    ops.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    ops.add_argument("--graceful-timeout", type=float, default=DEFAULT_GRACEFUL_TIMEOUT_S, metavar="SECONDS",
                     help="on SIGTERM, let requests in progress finish for this long, then end them and exit "
                          "(default %(default)s: under Kubernetes' default terminationGracePeriodSeconds of 30)")
    ray = p.add_argument_group("scale-out on Ray Serve (pip install 'voxtral-tts[ray]')")
    ray.add_argument("--replicas", type=int,
                     help="serve through Ray Serve with this many replicas, each with its own model and decode batch "
                          "(the minimum with --max-replicas)")
    ray.add_argument("--max-replicas", type=int,
                     help="autoscale between --replicas and this many replicas (on ongoing requests per replica)")
    ray.add_argument("--ray-address",
                     help="the Ray cluster to join (auto: the one `ray start` began on this machine; default: "
                          "$RAY_ADDRESS, else a local cluster started for this process)")
    wyoming = p.add_argument_group("Home Assistant: the Wyoming protocol (docs/home-assistant.md)")
    wyoming.add_argument("--wyoming", metavar="URI",
                         help="also serve the Wyoming protocol here, on the same model and decode batch "
                              "(tcp://HOST:PORT, e.g. tcp://0.0.0.0:10200; or unix://PATH)")
    wyoming.add_argument("--no-http", dest="http", action="store_false",
                         help="serve Wyoming alone (no HTTP API, --host and --port unused); needs --wyoming")
    wyoming.add_argument("--wyoming-idle-timeout", type=float, default=60.0, metavar="SECONDS",
                         help="close a Wyoming connection after this long without a request "
                              "(default %(default)s; 0: never)")
    return p


@dataclass(frozen=True)
class ServeConfig:
    """What one server (or one Ray Serve replica) is made of: how to load the model and the app's options."""

    model: str
    backend: str
    load_options: LoadPlan
    server: ServerOptions
    max_batch: int

    @property
    def load(self):
        """The model's loader: a picklable callable (Ray sends it to each replica)."""
        return functools.partial(open_tts, self.model, self.load_options)


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """The model path, backend and options from parsed flags (checked here, before anything loads)."""
    if args.max_queue < 0:
        raise VoxtralError(f"--max-queue must be at least 0, got {args.max_queue}")
    check_operation_arguments(args)
    if not args.realtime_idle > 0:
        raise VoxtralError(f"--realtime-idle must be a positive number of seconds, got {args.realtime_idle}")
    try:  # the per-part frame cap every request gets: checked once, as a request's own would be
        SpeechOptions(max_frames=args.max_frames)
    except OptionError as exc:
        raise VoxtralError(exc.flag()) from None
    if args.voice_steps < 1:
        raise VoxtralError(f"--voice-steps must be at least 1, got {args.voice_steps}")
    if args.voice_model is not None and not (args.voice_model / "params.json").is_file():
        raise VoxtralError(f"--voice-model {args.voice_model}: not a model directory (no params.json)")
    model = model_path(args.model)
    voice_model = args.voice_model or (None if is_engine_dir(model) else model)
    plan = options_from_args(argparse.Namespace(**{**vars(args), "model": model}), progress=False,
                             max_batch=args.max_batch, stream_chunks=args.stream_chunks)
    return ServeConfig(str(model), plan.backend, plan, ServerOptions(max_queue=args.max_queue,
                                                                   max_frames=args.max_frames,
                                                                   max_input_chars=args.max_input_chars,
                                                                   web=args.web, voices_dir=str(args.voices_dir),
                                                                   voice_model=str(voice_model) if voice_model
                                                                   else None,
                                                                   voice_steps=args.voice_steps,
                                                                   realtime_idle_s=args.realtime_idle,
                                                                   api_keys=keys_from(args.api_key),
                                                                   metrics_need_key=args.metrics_need_key),
                       args.max_batch)


def check_operation_arguments(args: argparse.Namespace) -> None:
    """The TLS pair and the graceful timeout (the keys need no check)."""
    if args.graceful_timeout < 0:
        raise VoxtralError(f"--graceful-timeout must be at least 0 seconds, got {args.graceful_timeout}")
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise VoxtralError("--ssl-certfile and --ssl-keyfile go together")
    for flag, path in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)):
        if path is not None and not Path(path).is_file():
            raise VoxtralError(f"{flag}: no such file: {path}")
    if args.metrics_need_key and not keys_from(args.api_key):
        raise VoxtralError(f"--metrics-need-key needs API keys (--api-key or ${API_KEYS_ENV})")


def check_ray_arguments(args: argparse.Namespace) -> None:
    if args.replicas is None:
        if args.max_replicas is not None or args.ray_address is not None:
            raise VoxtralError(f"--{'max-replicas' if args.max_replicas is not None else 'ray-address'} applies "
                               "with --replicas (serving on Ray Serve)")
        return
    if args.ssl_certfile is not None:
        raise VoxtralError("--ssl-certfile applies to the single server; with --replicas, end TLS at a proxy in "
                           "front of Ray Serve (docs/operations.md)")
    if args.replicas < 1:
        raise VoxtralError(f"--replicas must be at least 1, got {args.replicas}")
    if args.max_replicas is not None and args.max_replicas < args.replicas:
        raise VoxtralError(f"--max-replicas ({args.max_replicas}) must be at least --replicas ({args.replicas})")


def check_wyoming_arguments(args: argparse.Namespace) -> None:
    if args.wyoming is None:
        if not args.http:
            raise VoxtralError("--no-http needs --wyoming URI (else there is nothing to serve)")
        return
    if args.replicas is not None:
        raise VoxtralError("--wyoming is not available with --replicas (Ray Serve serves HTTP only)")
    if args.wyoming_idle_timeout < 0:
        raise VoxtralError(f"--wyoming-idle-timeout must be at least 0, got {args.wyoming_idle_timeout:g}")
