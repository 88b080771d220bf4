"""``voxtral-export --target tensorrt``: TensorRT engines built from the exported ONNX graphs.

The engine directory is an ONNX engine directory (graphs, embedding tables, voices, manifest with
``"target": "tensorrt"``) whose graphs carry the TensorRT precision, plus the serialized TensorRT
plans, built where TensorRT runs:

1. the ONNX graphs are exported in ``fp16`` (:mod:`.onnx_engine`: matmul weights and matmuls in float16;
   norms, softmax, RoPE, the Euler updates and the semantic logits in float32; the codec float32)
   and validated against the PyTorch reference with ONNX Runtime on the CPU;
2. ``bf16``: the same graphs retyped (:func:`retype_bf16`): every float16 matmul weight becomes the
   checkpoint's own bfloat16 bits (lossless: the model is released in BF16), every cast to float16
   a cast to bfloat16; nothing else changes. ONNX Runtime's CPU provider has no bfloat16 MatMul, so
   the validation recorded is that of the fp16 graphs before the retyping;
3. the plans: parsed into *strongly typed* networks (TensorRT keeps each tensor's ONNX type, so the
   precision split is the graph's, not the builder's), built now when TensorRT ≥ 10, cuda-python
   and a GPU are present, otherwise on first load on a machine that has them (the manifest says
   ``"plans": "deferred"``).

The profiles, decode buckets and plan cache are the runtime's
(:mod:`voxtral_tts.runtime.backends.tensorrt_plans`): the backend builds missing plans on load
with the same code this export uses.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..engine import MANIFEST, open_engine
from ..errors import EngineError, VoxtralError
from ..runtime.backends.tensorrt import open_cuda, require_libraries
from ..runtime.backends.tensorrt_plans import DECODE_BUCKET, ensure_plans
from ..runtime.constants import CODEC_FRAMES, DEFAULT_CAPACITY

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "bf16")
DEFAULT_PRECISION = "fp16"


# --- bf16 --------------------------------------------------------------------------------------------

def retype_bf16(engine_dir: Path, model_dir: Path, graphs: tuple[str, ...] = ("backbone", "flow_frame")) -> int:
    """Turn the fp16 graphs into bf16 ones in place: each float16 matmul weight ``W[.T].fp16``
    becomes ``W[.T].bf16`` holding the checkpoint's bfloat16 bits (read lazily, written one tensor
    at a time), each Cast to float16 a Cast to bfloat16. Returns the number of weights retyped."""
    import ml_dtypes
    import numpy as np
    import onnx_ir as ir

    from ..checkpoint import CheckpointReader
    from ..tensors import float32_to_bf16

    config = ModelConfig.from_file(model_dir)
    reader = CheckpointReader(model_dir, config)

    def bf16_bits(name: str, transposed: bool) -> np.ndarray:
        bits = reader.read(name, raw_bf16=True)
        if bits.dtype != np.uint16:  # a float32 checkpoint: rounded like torch's .to(bfloat16)
            bits = float32_to_bf16(bits)
        return np.ascontiguousarray(bits.T if transposed else bits).view(ml_dtypes.bfloat16)

    retyped = 0
    for graph_name in graphs:
        path = engine_dir / f"{graph_name}.onnx"
        model = ir.load(path)
        graph = model.graph
        for name, value in list(graph.initializers.items()):
            if value.dtype != ir.DataType.FLOAT16:
                continue
            if not name.endswith(".fp16"):
                raise EngineError(f"{path}: float16 initializer '{name}' is not a matmul weight of the fp16 export")
            base = name[: -len(".fp16")]
            transposed = base.endswith(".T")
            source = base[:-2] if transposed else base
            if source not in reader.shapes:
                raise EngineError(f"{path}: '{name}' has no source tensor in the checkpoint")
            new = ir.Value(name=base + ".bf16", shape=value.shape, type=ir.TensorType(ir.DataType.BFLOAT16))
            new.const_value = ir.LazyTensor(
                lambda s=source, t=transposed, n=new.name: ir.tensor(bf16_bits(s, t), name=n),
                ir.DataType.BFLOAT16, value.shape, name=new.name)
            graph.register_initializer(new)
            value.replace_all_uses_with(new)
            graph.initializers.pop(name)
            retyped += 1
        for node in graph:
            if node.op_type == "Cast" and node.attributes["to"].value == ir.DataType.FLOAT16:
                node.attributes["to"] = ir.AttrInt64("to", ir.DataType.BFLOAT16)
            for output in node.outputs:
                if output.dtype == ir.DataType.FLOAT16:
                    output.dtype = ir.DataType.BFLOAT16
        staging = engine_dir / ".bf16"
        staging.mkdir(exist_ok=True)
        ir.save(model, staging / path.name, external_data=path.name + ".data", size_threshold_bytes=1024, max_workers=1)
        del model, graph
        for produced in staging.iterdir():
            os.replace(produced, engine_dir / produced.name)
        staging.rmdir()
        log.info("%s: matmul weights in bfloat16", path.name)
    return retyped


# --- the export --------------------------------------------------------------------------------------

def tensorrt_available() -> tuple[Any, tuple[int, int]] | str:
    """(tensorrt module, compute capability of GPU 0) when plans can be built here, else why not."""
    try:
        trt, cudart = require_libraries()
        _, capability = open_cuda(cudart, 0)
    except VoxtralError as exc:
        return str(exc)
    return trt, capability


def build_tensorrt_engine(model_dir: str | Path, engine_dir: str | Path, precision: str | None = None,
                          capacity: int | None = None, validate: bool = True, progress: bool = True,
                          max_batch: int = 1) -> Path:
    """Export ``model_dir`` to a TensorRT engine directory; plans for ``capacity`` and ``max_batch``
    are built now if this machine can, else on first load. Returns the engine path."""
    from .onnx_engine import build_onnx_engine  # torch and onnx: only when exporting

    precision = precision or DEFAULT_PRECISION
    capacity = DEFAULT_CAPACITY if capacity is None else capacity
    if precision not in PRECISIONS:
        raise VoxtralError(f"precision '{precision}' is not available for target tensorrt; "
                           f"available: {', '.join(PRECISIONS)}")
    model_dir, out = Path(model_dir), Path(engine_dir)
    started = time.perf_counter()
    graphs = "fp16 ONNX graphs" + (", retyped to bf16 after validation" if precision == "bf16" else "")
    build_onnx_engine(model_dir, out, precision="fp16", capacity=capacity, validate=validate, progress=progress,
                      label=f"a TensorRT {precision} engine ({graphs})")
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).unlink()  # the directory is incomplete until the manifest is rewritten below
    if precision == "bf16":
        retype_bf16(out, model_dir)
    manifest.update(target="tensorrt", precision=precision)
    manifest["tensorrt"] = {
        "onnx_precision": precision, "strongly_typed": True, "decode_bucket": DECODE_BUCKET,
        "codec_frames": CODEC_FRAMES, "validated_graphs": "fp16" if validate else None, "plans": "deferred",
    }
    available = tensorrt_available()
    if isinstance(available, str):
        manifest["tensorrt"]["deferred_reason"] = available
        log.warning("TensorRT plans not built here (%s): they are built on the engine's first load where they can "
                    "be", available)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if not isinstance(available, str):
        trt, capability = available
        directory, _ = ensure_plans(open_engine(out), capacity, max_batch, capability, trt)
        manifest["tensorrt"]["plans"] = directory.name
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("engine written to %s in %.1f s", out, time.perf_counter() - started)
    return out
