"""``voxtral-export``: build an engine directory from a model directory, for one target.

- ``onnx`` (:mod:`.onnx_engine`): ONNX graphs for ONNX Runtime, in fp32, fp16, int8, int4 or
  int8-backbone (the backbone's matmuls int8, the flow head and codec float32);
- ``tensorrt`` (:mod:`.tensorrt`): fp16/bf16 ONNX graphs and the TensorRT plans built from them;
- ``coreml`` (:mod:`.coreml`): ML Program packages for macOS 15 / iOS 18.

Every target starts its directory the same way (:mod:`.engine_dir`) and writes ``manifest.json``
last; every target validates what it wrote against the PyTorch reference unless told not to.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import VoxtralError
from ..runtime.constants import DEFAULT_CAPACITY

TARGETS = ("onnx", "tensorrt", "coreml")
#: every precision some target accepts (the command line's choices); each builder checks its own
ALL_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4", "int8-backbone")


def build_engine(model_dir: str | Path, engine_dir: str | Path, target: str = "onnx", precision: str | None = None,
                 capacity: int = DEFAULT_CAPACITY, with_velocity: bool = False, validate: bool = True,
                 progress: bool = True) -> Path:
    """Export ``model_dir`` to ``engine_dir`` for ``target``; returns the engine path."""
    if target == "onnx":
        from .onnx_engine import build_onnx_engine

        return build_onnx_engine(model_dir, engine_dir, precision=precision, capacity=capacity,
                                 with_velocity=with_velocity, validate=validate, progress=progress)
    if target == "coreml":
        from .coreml import build_coreml_engine

        return build_coreml_engine(model_dir, engine_dir, precision=precision, capacity=capacity,
                                   validate=validate, progress=progress)
    if target == "tensorrt":
        from .tensorrt import build_tensorrt_engine

        return build_tensorrt_engine(model_dir, engine_dir, precision=precision, capacity=capacity,
                                     validate=validate, progress=progress)
    raise VoxtralError(f"unknown target '{target}'; available: {', '.join(TARGETS)}")
