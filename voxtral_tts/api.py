"""``voxtral_tts.load``: a model or engine directory → a ready :class:`~voxtral_tts.runtime.tts.TTS`.

The one place above the runtime that may export: a model directory asked for with the
onnxruntime backend is exported once into the user's cache (:mod:`voxtral_tts.export.engine_cache`)
and the engine reused after. Everything else is the runtime's: the backend registry
(:mod:`voxtral_tts.runtime.backends`) opens the backend, :class:`TTS` drives it.
"""

from __future__ import annotations

from pathlib import Path

from .engine import is_engine_dir
from .errors import VoxtralError
from .runtime.backends import BACKENDS, default_backend, open_backend
from .runtime.tts import TTS, read_model_dir


def load(path: str | Path, backend: str | None = None, **options) -> TTS:
    """Load a model directory (params.json, consolidated.safetensors, tekken.json, voice_embedding/)
    or an engine directory (``voxtral-export``). ``backend``: torch, onnxruntime, tensorrt or
    coreml; by default torch for a model directory and the engine's own target for an engine
    directory. Options: ``capacity``, ``max_batch``, ``device``, ``progress`` for every backend;
    ``threads`` (onnxruntime); ``dtype``, ``compile``, ``cuda_graphs``, ``weight_dtype`` (torch)."""
    path = Path(path)
    backend = backend or default_backend(path)
    if backend not in BACKENDS:
        raise VoxtralError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    _, tokenizer, voices = read_model_dir(path)
    if backend == "onnxruntime" and not is_engine_dir(path):
        from .export.engine_cache import cached_engine

        path = cached_engine(path, progress=options.get("progress", True)).path
    return TTS(open_backend(path, backend, **options), tokenizer, voices)


def backend_options(path: str | Path, backend: str | None, *, progress: bool, capacity: int | None = None,
                    device: str | None = None, threads: int | None = None, max_batch: int = 1,
                    dtype: str | None = None, compile: bool = False) -> tuple[str, dict]:
    """The backend a command line asks for and its options: ``device`` (when given: each backend
    has its own default) and ``max_batch`` for every backend; ``threads`` for onnxruntime;
    ``dtype`` (fp32 | bf16 | fp16) and ``compile`` for torch — an engine's precision is fixed
    when it is exported."""
    backend = backend or default_backend(path)
    options: dict = {"progress": progress, "max_batch": max_batch}
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
