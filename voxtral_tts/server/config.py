"""``voxtral-serve``'s configuration, shared by the single server (:mod:`.cli`) and Ray Serve
(:mod:`.ray_serve`): the command line (:func:`parser`), what one server or one replica is made of
(:class:`ServeConfig`, from parsed flags by :func:`serve_config`) and the checks of the scale-out
flags (:func:`check_ray_arguments`).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass

from ..api import open_tts
from ..cli_options import add_backend_arguments, add_max_batch_argument, options_from_args
from ..errors import ArgumentParser, OptionError, VoxtralError
from ..hub import model_path
from ..runtime.constants import STREAM_CHUNKS
from ..runtime.load_options import LoadPlan
from ..runtime.options import SpeechOptions
from .schemas import ServerOptions

RAY_MISSING = "--replicas needs Ray Serve, which is not installed: pip install 'voxtral-tts[ray]'"


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
    ray = p.add_argument_group("scale-out on Ray Serve (pip install 'voxtral-tts[ray]')")
    ray.add_argument("--replicas", type=int,
                     help="serve through Ray Serve with this many replicas, each with its own model and decode batch "
                          "(the minimum with --max-replicas)")
    ray.add_argument("--max-replicas", type=int,
                     help="autoscale between --replicas and this many replicas (on ongoing requests per replica)")
    ray.add_argument("--ray-address",
                     help="the Ray cluster to join (auto: the one `ray start` began on this machine; default: "
                          "$RAY_ADDRESS, else a local cluster started for this process)")
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
    if not args.realtime_idle > 0:
        raise VoxtralError(f"--realtime-idle must be a positive number of seconds, got {args.realtime_idle}")
    try:  # the per-part frame cap every request gets: checked once, as a request's own would be
        SpeechOptions(max_frames=args.max_frames)
    except OptionError as exc:
        raise VoxtralError(exc.flag()) from None
    model = model_path(args.model)
    plan = options_from_args(argparse.Namespace(**{**vars(args), "model": model}), progress=False,
                             max_batch=args.max_batch, stream_chunks=args.stream_chunks)
    return ServeConfig(str(model), plan.backend, plan, ServerOptions(max_queue=args.max_queue,
                                                                   max_frames=args.max_frames,
                                                                   max_input_chars=args.max_input_chars,
                                                                   realtime_idle_s=args.realtime_idle,
                                                                   web=args.web),
                       args.max_batch)


def check_ray_arguments(args: argparse.Namespace) -> None:
    if args.replicas is None:
        if args.max_replicas is not None or args.ray_address is not None:
            raise VoxtralError(f"--{'max-replicas' if args.max_replicas is not None else 'ray-address'} applies "
                               "with --replicas (serving on Ray Serve)")
        return
    if args.replicas < 1:
        raise VoxtralError(f"--replicas must be at least 1, got {args.replicas}")
    if args.max_replicas is not None and args.max_replicas < args.replicas:
        raise VoxtralError(f"--max-replicas ({args.max_replicas}) must be at least --replicas ({args.replicas})")
