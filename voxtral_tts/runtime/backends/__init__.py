"""The backends, side by side, behind one registry: a name → the module and class implementing
:class:`voxtral_tts.runtime.backend.Backend`. A backend's module (and its engine library: torch,
onnxruntime, tensorrt, coremltools) is imported only when that backend is chosen.

Adding a backend: write ``backends/<name>.py`` with a :class:`Backend` subclass (``from_path``,
``_prefill``, ``_step``, ``_flow``, ``_codec``) and add one line to :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ...engine import MANIFEST, is_engine_dir
from ...errors import VoxtralError

#: name → (module under this package, class)
REGISTRY: dict[str, tuple[str, str]] = {
    "torch": ("torch", "TorchBackend"),
    "onnxruntime": ("onnxruntime", "OnnxBackend"),
    "tensorrt": ("tensorrt", "TensorRTBackend"),
    "coreml": ("coreml", "CoreMLBackend"),
}
BACKENDS = tuple(REGISTRY)
#: an engine directory's manifest ``target`` → the backend that runs it
TARGET_BACKENDS = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "coreml": "coreml"}


def backend_class(name: str):
    if name not in REGISTRY:
        raise VoxtralError(f"unknown backend '{name}'; available: {', '.join(BACKENDS)}")
    module, cls = REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def engine_target(path: str | Path) -> str | None:
    """The ``target`` an engine directory's manifest names (onnx, tensorrt, coreml), or None."""
    if not is_engine_dir(path):
        return None
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("target", "onnx")
    except (OSError, ValueError, AttributeError):
        return "onnx"  # open_engine reports the broken manifest


def default_backend(path: str | Path) -> str:
    """torch for a model directory; for an engine directory, the backend of its target."""
    target = engine_target(path)
    return "torch" if target is None else TARGET_BACKENDS.get(target, "onnxruntime")


def open_backend(path: str | Path, backend: str | None = None, **options):
    """The backend ``backend`` (default: :func:`default_backend`) for a model or engine directory."""
    return backend_class(backend or default_backend(path)).from_path(path, **options)
