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

from ..checkpoint import model_identity
from ..config import ModelConfig
from ..engine import FORMAT_VERSION, Engine, cache_root, check_engine_matches, is_engine_dir, open_engine
from ..errors import VoxtralError

log = logging.getLogger(__name__)


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
    try:
        from .build import build_engine
    except ImportError as exc:
        raise VoxtralError(f"{model_dir}: exporting a model directory for onnxruntime needs the export extras "
                           f"(pip install 'voxtral-tts[export]'): {exc}") from None
    log.info("first use of %s with onnxruntime: exporting to %s", model_dir, target)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    build_engine(model_dir, staging, precision=precision, progress=progress)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return open_engine(target)
