"""``voxtral_tts.load``: a model or engine directory → a ready :class:`~voxtral_tts.runtime.tts.TTS`.

It picks the fastest faithful path when the caller names no backend (:func:`default_choice`,
logged in one line): an engine directory runs on its own target's backend; a model directory on
a CPU with native bf16 dot products (AVX-512 BF16, AMX, Arm BF16) runs the torch backend in bf16
— the release's own precision —, on a CPU without them an ONNX Runtime fp32 engine exported once
into the user's cache, and on CUDA the torch backend. It is also the one place above the runtime
that may export (:mod:`voxtral_tts.export.engine_cache`). Everything else is the runtime's: the
backend registry (:mod:`voxtral_tts.runtime.backends`) opens the backend, :class:`TTS` drives it.

Options are typed (:mod:`voxtral_tts.runtime.load_options`) and checked once, where
:func:`choose` builds them: ``load``'s keyword arguments, and the command lines' flags
(:mod:`voxtral_tts.cli_options`), which then open the model with :func:`open_tts`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .engine import cache_root, is_engine_dir
from .hub import model_path
from .runtime.backends import default_backend, open_backend
from .runtime.hardware import cpu_bf16
from .runtime.load_options import LoadPlan, check_option_names, load_plan
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


def choose(path: str | Path, backend: str | None = None, **options) -> LoadPlan:
    """The typed, checked options for ``path`` (a local model or engine directory): ``backend``
    (default: :func:`default_choice`, whose torch dtype becomes the ``dtype`` option) and each
    option (None: not given) — see :func:`load`."""
    if backend is None:
        backend, dtype = default_choice(
            path, options.get("device"), options.get("dtype"), options.get("compile", False), options.get("threads")
        )
        if dtype:
            options = {**options, "dtype": dtype}
    return load_plan(backend, **options)


def load(path: str | Path, backend: str | None = None, **options) -> TTS:
    """Load a model directory (params.json, consolidated.safetensors, tekken.json, voice_embedding/),
    a Hugging Face hub id of one (``mistralai/Voxtral-4B-TTS-2603``: downloaded into the hub cache
    once, :mod:`.hub`) or an engine directory (``voxtral-export``). ``backend``: torch, onnxruntime, tensorrt or
    coreml; by default the fastest faithful path for this machine (:func:`default_choice`).
    Options (:mod:`.runtime.load_options`): ``capacity``, ``max_batch``, ``device``, ``progress`` for
    every backend; ``threads``, ``kv_placement`` (onnxruntime); ``dtype``, ``compile``,
    ``cuda_graphs``, ``weight_dtype`` (torch); and for the :class:`TTS` itself ``prefix_cache``
    (default True), ``prefix_cache_mb``, ``stream_chunks``. An unknown option, or one of another
    backend, is one :class:`~.errors.VoxtralError` line."""
    check_option_names(options)
    path = model_path(path, progress=options.get("progress", True))
    return open_tts(path, choose(path, backend, **options))


def open_tts(path: str | Path, plan: LoadPlan) -> TTS:
    """The :class:`TTS` of a local model or engine directory as ``plan`` says (:func:`choose`); an
    onnxruntime plan for a model directory exports its engine into the cache first (once)."""
    _, tokenizer, voices = read_model_dir(path)
    return TTS(open_backend(engine_path(path, plan.backend, plan.options.progress), plan.options), tokenizer, voices,
               plan.tts)


def engine_path(path: str | Path, backend: str, progress: bool = True) -> Path:
    """The directory ``backend`` opens for the model or engine directory ``path``: for onnxruntime,
    a model directory's engine, exported into the engine cache on first use
    (:mod:`voxtral_tts.export.engine_cache`); otherwise ``path`` itself."""
    if backend == "onnxruntime" and not is_engine_dir(path):
        from .export.engine_cache import cached_engine

        return cached_engine(path, progress=progress).path
    return Path(path)
