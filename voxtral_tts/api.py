"""``voxtral_tts.load``: a model or engine directory → a ready :class:`~voxtral_tts.runtime.tts.TTS`.

It picks the fastest faithful path when the caller names no backend (:func:`default_choice`,
logged in one line): an engine directory runs on its own target's backend; a model directory on
a CPU with native bf16 dot products (AVX-512 BF16, AMX, Arm BF16) runs the torch backend in bf16
— the release's own precision —, on a CPU without them an ONNX Runtime fp32 engine exported once
into the user's cache, and on CUDA the torch backend. It is also the one place above the runtime
that may export (:mod:`voxtral_tts.export.engine_cache`). Everything else is the runtime's: the
backend registry (:mod:`voxtral_tts.runtime.backends`) opens the backend, :class:`TTS` drives it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .engine import cache_root, is_engine_dir
from .errors import VoxtralError
from .runtime.backends import BACKENDS, default_backend, open_backend
from .runtime.hardware import cpu_bf16
from .hub import model_path
from .runtime.tts import TTS, read_model_dir

log = logging.getLogger(__name__)


def default_choice(path: str | Path, device: str | None = None, dtype: str | None = None, compile: bool = False,
                   threads: int | None = None) -> tuple[str, str | None]:
    """(backend, torch compute dtype or None) for ``path`` when no backend is named; the choice for
    a model directory on the CPU is logged in one line."""
    if is_engine_dir(path):
        return default_backend(path), None
    if (device not in (None, "cpu")) or dtype or compile:
        return "torch", dtype
    if threads:  # an onnxruntime option
        return "onnxruntime", None
    feature = cpu_bf16()
    if feature:
        log.info("this CPU has %s, native bf16 dot products: the torch backend by default "
                 "(--dtype fp32 for the float32 reference)", feature)
        return "torch", "bf16"
    log.info("this CPU has no native bf16 dot products (AVX-512 BF16, AMX, Arm BF16): an ONNX Runtime fp32 engine, "
             "exported once into %s (--backend torch for PyTorch)", cache_root() / "engines")
    return "onnxruntime", None


#: the options of :func:`load` that configure the :class:`TTS` rather than its backend
TTS_OPTIONS = ("prefix_cache", "prefix_cache_mb", "stream_chunks")


def load(path: str | Path, backend: str | None = None, **options) -> TTS:
    """Load a model directory (params.json, consolidated.safetensors, tekken.json, voice_embedding/),
    a Hugging Face hub id of one (``mistralai/Voxtral-4B-TTS-2603``: downloaded into the hub cache
    once, :mod:`.hub`) or an engine directory (``voxtral-export``). ``backend``: torch, onnxruntime, tensorrt or
    coreml; by default the fastest faithful path for this machine (:func:`default_choice`).
    Options: ``capacity``, ``max_batch``, ``device``, ``progress`` for every backend; ``threads``
    (onnxruntime); ``dtype``, ``compile``, ``cuda_graphs``, ``weight_dtype`` (torch); and for the
    :class:`TTS` itself ``prefix_cache`` (default True), ``prefix_cache_mb``, ``stream_chunks``."""
    path = model_path(path, progress=options.get("progress", True))
    tts_options = {key: options.pop(key) for key in TTS_OPTIONS if key in options}
    if backend is None:
        backend, dtype = default_choice(path, options.get("device"), options.get("dtype"), options.get("compile", False),
                                        options.get("threads"))
        if dtype:
            options = {**options, "dtype": dtype}
    if backend not in BACKENDS:
        raise VoxtralError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    _, tokenizer, voices = read_model_dir(path)
    if backend == "onnxruntime" and not is_engine_dir(path):
        from .export.engine_cache import cached_engine

        path = cached_engine(path, progress=options.get("progress", True)).path
    return TTS(open_backend(path, backend, **options), tokenizer, voices, **tts_options)


def backend_options(path: str | Path, backend: str | None, *, progress: bool, capacity: int | None = None,
                    device: str | None = None, threads: int | None = None, max_batch: int = 1,
                    dtype: str | None = None, compile: bool = False, prefix_cache: bool = True,
                    prefix_cache_mb: int | None = None) -> tuple[str, dict]:
    """The backend a command line asks for and its options: ``device`` (when given: each backend
    has its own default) and ``max_batch`` for every backend; ``threads`` for onnxruntime;
    ``dtype`` (fp32 | bf16 | fp16) and ``compile`` for torch — an engine's precision is fixed
    when it is exported; the voice-prefix cache for every backend. No backend named:
    :func:`default_choice`."""
    if backend is None:
        backend, dtype = default_choice(path, device, dtype, compile, threads)
    options: dict = {"progress": progress, "max_batch": max_batch, "prefix_cache": prefix_cache}
    if prefix_cache_mb is not None:
        if prefix_cache_mb < 0:
            raise VoxtralError(f"--prefix-cache-mb must be at least 0, got {prefix_cache_mb}")
        options["prefix_cache_mb"] = prefix_cache_mb
    if device:
        options["device"] = device
    if capacity:
        options["capacity"] = capacity
    if threads and backend != "onnxruntime":
        raise VoxtralError("--threads applies to the onnxruntime backend")
    if (dtype or compile) and backend != "torch":
        raise VoxtralError(f"--{'dtype' if dtype else 'compile'} applies to the torch backend "
                           "(an engine's precision is chosen at export)")
    if backend == "onnxruntime":
        options["threads"] = threads
    if backend == "torch" and dtype:
        options["dtype"] = dtype
    if backend == "torch" and compile:
        options["compile"] = True
    return backend, options
