"""The backends, side by side, behind one registry: a name → the module and class implementing
:class:`voxtral_tts.runtime.backend.Backend`. A backend's module (and its engine library: torch,
onnxruntime, tensorrt, coremltools) is imported only when that backend is chosen.

Adding a backend: write ``backends/<name>.py`` with a :class:`Backend` subclass (``from_path``,
``_prefill``, ``_step``, ``_flow``, ``_codec``; an engine directory's backend starts from
:class:`.engine_backend.EngineBackend`), its options type in :mod:`..load_options` (named by the
class's ``options_type``, listed in :data:`..load_options.OPTIONS`), and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ...engine import MANIFEST, is_engine_dir
from ..load_options import LoadOptions

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
    """The class of a registered backend (a name checked by :func:`..load_options.load_plan`)."""
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


def open_backend(path: str | Path, options: LoadOptions):
    """The backend ``options`` are for (their type names it), for a model or engine directory."""
    return backend_class(options.backend).from_path(path, options)
