"""The flags ``voxtral-run`` and ``voxtral-serve`` share — which backend, how it is configured, the
voice-prefix cache — and the typed options (:class:`~.runtime.load_options.LoadPlan`) built from them
once, through :func:`voxtral_tts.api.choose`."""

from __future__ import annotations

import argparse

from .api import choose
from .runtime.backends import BACKENDS
from .runtime.constants import DEFAULT_PREFIX_CACHE_MB
from .runtime.load_options import TORCH_DTYPES, LoadPlan


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose and configure the backend."""
    p.add_argument("--backend", choices=BACKENDS,
                   help="default: for an engine directory the backend of its target; for a model directory the torch "
                        "backend in bf16 on a CPU with native bf16 (AVX-512 BF16, AMX, Arm BF16) or on cuda, else "
                        "onnxruntime (the model exported once to the engine cache)")
    p.add_argument("--device",
                   help="torch and onnxruntime: cpu (default) or cuda; onnxruntime also tensorrt (its TensorRT "
                        "execution provider); coreml: all (default), cpu, gpu or ane")
    p.add_argument("--dtype", choices=TORCH_DTYPES,
                   help="torch backend compute dtype (default bf16 on cuda and on CPUs with native bf16, else fp32; "
                        "fp32 is the exact reference)")
    p.add_argument("--compile", action="store_true",
                   help="torch on cuda: fuse each transformer block with torch.compile inside the CUDA graphs "
                        "(about 1.4x faster per frame; a few seconds of compiling per new batch/length bucket)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: physical cores)")
    p.add_argument("--capacity", type=int, help="KV cache positions: prompt + frames (default 4096, or the engine's)")
    p.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                   help="prefill every prompt whole instead of reusing each voice's prefix keys/values")
    p.add_argument("--prefix-cache-mb", type=int,
                   help=f"memory for cached voice prefixes, least recently used dropped first (default "
                        f"{DEFAULT_PREFIX_CACHE_MB})")


def add_max_batch_argument(p: argparse.ArgumentParser) -> None:
    """``--max-batch``: the decoding slots — requests, and the parts of a long text, decoded together."""
    p.add_argument("--max-batch", type=int, default=4,
                   help="decoding slots: texts (and the parts of a long text) decoded together, one frame for all "
                        "per step (default 4)")


def options_from_args(args: argparse.Namespace, progress: bool, max_batch: int = 1,
                      stream_chunks: str | None = None) -> LoadPlan:
    """The typed options of :func:`add_backend_arguments`' flags for ``args.model`` (a local
    directory), with the command's own ``max_batch`` and stream schedule. A flag not given is
    None: the backend's default; the backend's choice when none is named, and every check, is
    :func:`voxtral_tts.api.choose`'s."""
    return choose(args.model, args.backend, progress=progress, capacity=args.capacity, device=args.device,
                  threads=args.threads, max_batch=max_batch, dtype=args.dtype, compile=args.compile,
                  prefix_cache=args.prefix_cache, prefix_cache_mb=args.prefix_cache_mb, stream_chunks=stream_chunks)
