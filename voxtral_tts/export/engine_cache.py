"""Export on first use: the ONNX engine of a model directory, made once in the user's cache and reused.

``voxtral_tts.load(MODEL_DIR, backend="onnxruntime")`` calls :func:`cached_engine`; the engine is
keyed by the model's identity (params.json, checkpoint header, tekken.json), the precision and
the engine format, so a changed model or a new format exports again.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..checkpoint import CheckpointReader, model_identity
from ..config import ModelConfig
from ..engine import FORMAT_VERSION, Engine, cache_root, check_engine_matches, is_engine_dir, open_engine
from ..errors import VoxtralError

log = logging.getLogger(__name__)

#: bytes an exported weight takes, by precision (float32 graphs: every bf16 weight doubles)
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "int8": 1.2, "int4": 0.7}


def _engine_bytes(model_dir: Path, config: ModelConfig, precision: str) -> int:
    """About what the engine of ``model_dir`` takes on disk: the checkpoint's parameters at the
    precision's bytes (graphs and embedding tables together; an overestimate for the tables)."""
    return int(CheckpointReader(model_dir, config).n_params * BYTES_PER_PARAM.get(precision, 4.0))


def check_disk_space(directory: Path, needed: int) -> None:
    """One clear line, before hours of export, when ``directory``'s file system lacks ``needed`` bytes."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise VoxtralError(f"exporting this model for onnxruntime needs about {needed / 1e9:.1f} GB in {directory}, "
                           f"which has {free / 1e9:.1f} GB free; free space, point VOXTRAL_TTS_CACHE elsewhere, "
                           "or run the torch backend (--backend torch)")


def cached_engine(model_dir: str | Path, precision: str = "fp32", progress: bool = True) -> Engine:
    """The ONNX engine of ``model_dir`` in ``cache_root()/engines``, exported now if missing
    (needs torch and onnx: the export extras)."""
    model_dir = Path(model_dir)
    config = ModelConfig.from_file(model_dir)
    identity = model_identity(model_dir, config)
    key = "-".join(identity[k][:12] for k in sorted(identity)) + f"-onnx-{precision}-v{FORMAT_VERSION}"
    target = cache_root() / "engines" / key
    if is_engine_dir(target):
        engine = open_engine(target)
        check_engine_matches(engine, identity)
        log.info("using the cached engine %s", target)
        return engine
    check_disk_space(target.parent, _engine_bytes(model_dir, config, precision))
    try:
        from .build import build_engine
    except ImportError as exc:
        raise VoxtralError(f"{model_dir}: exporting a model directory for onnxruntime needs the export extras "
                           f"(pip install 'voxtral-tts[export]'): {exc}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VoxtralError(f"{target.parent}: cannot create the engine cache ({exc.strerror or exc}); point "
                           "VOXTRAL_TTS_CACHE at a writable directory") from None
    if not os.access(target.parent, os.W_OK):
        raise VoxtralError(f"{target.parent}: the engine cache is not writable; point VOXTRAL_TTS_CACHE at a "
                           "writable directory")
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    log.info("first use of %s with onnxruntime: exporting to %s (written as %s, renamed when complete)", model_dir,
             target, staging.name)
    shutil.rmtree(staging, ignore_errors=True)
    build_engine(model_dir, staging, precision=precision, progress=progress)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return open_engine(target)
