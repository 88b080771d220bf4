"""Export one graph to ONNX without ever holding the model's weights in memory.

1. The reference model is built on the ``meta`` device and traced by ``torch.onnx.export``
   (dynamo) with symbolic batch / length dims: the graph, with weightless initializers.
2. Each initializer is replaced by a lazy tensor that reads that weight from the checkpoint
   (:class:`CheckpointReader`) only when it is written; a weight consumed through ``Transpose``
   (how ``linear`` is exported) is stored pre-transposed instead, so no folding is needed.
3. ``onnx_ir.save`` streams the tensors into one external-data file, one at a time.

Peak memory is about one tensor, whatever the model size (the backbone is far over the 2 GB
protobuf limit; external data has no such limit).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx_ir as ir
import torch

from ..checkpoint import CheckpointReader
from ..errors import VoxtralError
from .graphs import GraphDef
from .quantize import BITS, drop_unused_initializers, graph_precision, matmuls_to_fp16, quantize_matmuls

log = logging.getLogger(__name__)

OPSET = 18
# The exporter's internals log per-op chatter ("torchvision is not installed", constant-folding
# decisions) at warning/info level; export progress is reported by this package instead.
for _name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir"):
    logging.getLogger(_name).setLevel(logging.ERROR)


#: Traced graphs by what decides them — the graph's definition and the model's config, never its
#: weights or the precision (weights are attached, matmuls converted after tracing): exporting the
#: same architecture again in one process (other precisions, the tests) traces each graph once.
_TRACED: dict[tuple, ir.Model] = {}
_TRACED_KEPT = 8


def trace(gdef: GraphDef, model: torch.nn.Module) -> ir.Model:
    """The ONNX graph of ``gdef`` over a meta-device model (weightless initializers): a fresh copy
    of a graph traced once per definition and config."""
    key = (gdef.name, repr(gdef.inputs), repr(gdef.dims), tuple(gdef.outputs), gdef.varargs_from, repr(model.config))
    if key not in _TRACED:
        while len(_TRACED) >= _TRACED_KEPT:
            _TRACED.pop(next(iter(_TRACED)))
        _TRACED[key] = _trace(gdef, model)
    else:
        log.info("%s: traced before in this process, reused", gdef.name)
    return _TRACED[key].clone()


def _trace(gdef: GraphDef, model: torch.nn.Module) -> ir.Model:
    module = gdef.build(model).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, gdef.example_inputs("meta"), dynamo=True, optimize=False, opset_version=OPSET,
            dynamic_shapes=gdef.dynamic_shapes(), input_names=[n for n, _, _ in gdef.inputs],
            output_names=gdef.outputs, verbose=False,
        )
    return program.model


def _lazy(name: str, shape: tuple[int, ...], read: Callable[[], np.ndarray]) -> ir.LazyTensor:
    return ir.LazyTensor(lambda: ir.tensor(np.ascontiguousarray(read()), name=name), ir.DataType.FLOAT,
                         ir.Shape(list(shape)), name=name)


def attach_weights(model: ir.Model, reader: CheckpointReader, constants: dict[str, torch.Tensor]) -> None:
    """Point every initializer at its data: a computed constant, or the checkpoint (lazily)."""
    graph = model.graph
    for name, value in list(graph.initializers.items()):
        if name in constants:
            value.const_value = ir.tensor(constants[name].detach().cpu().numpy(), name=name)
        elif name in reader.shapes:
            value.const_value = _lazy(name, reader.shapes[name], lambda n=name: reader.read(n))
        else:
            raise VoxtralError(f"export: graph initializer '{name}' has no source in the checkpoint")
    # Transpose(W) → a pre-transposed initializer
    for node in list(graph):
        if node.op_type != "Transpose" or node.inputs[0] is None:
            continue
        source = node.inputs[0]
        perm = node.attributes.get("perm")
        if (
            not source.is_initializer()
            or source.name not in reader.shapes
            or perm is None
            or list(perm.value) != [1, 0]
        ):
            continue
        rows, cols = reader.shapes[source.name]
        t_name = source.name + ".T"
        if t_name not in graph.initializers:
            t_value = ir.Value(name=t_name, shape=ir.Shape([cols, rows]), type=ir.TensorType(ir.DataType.FLOAT))
            t_value.const_value = _lazy(t_name, (cols, rows), lambda n=source.name: reader.read(n).T)
            graph.register_initializer(t_value)
        node.outputs[0].replace_all_uses_with(graph.initializers[t_name])
        graph.remove(node, safe=True)
    drop_unused_initializers(graph)


def optimize(model: ir.Model) -> None:
    """onnxscript's graph clean-up (constant folding of small constants, dead code)."""
    import onnxscript.optimizer

    onnxscript.optimizer.optimize_ir(model)


def save(model: ir.Model, path: Path, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Write ``path`` and its external-data file (streamed); returns the data file names.
    ``progress(done, total)`` counts the tensors written to the data file (the small ones stay
    inline in the graph and are not counted)."""
    data = path.name + ".data"
    done = [0]

    def callback(tensor, info):
        done[0] += 1
        if progress:
            progress(done[0], info.total)

    ir.save(model, path, external_data=data, size_threshold_bytes=1024, callback=callback, max_workers=1)
    return [data] if (path.parent / data).exists() else []


def export_graph(gdef: GraphDef, model: torch.nn.Module, reader: CheckpointReader,
                 constants: dict[str, torch.Tensor], path: Path, precision: str = "fp32",
                 progress: Callable[[int, int], None] | None = None) -> list[str]:
    log.info("tracing %s", gdef.name)
    onnx_model = trace(gdef, model)
    attach_weights(onnx_model, reader, constants)
    optimize(onnx_model)
    precision = graph_precision(precision, gdef.name)
    if precision == "fp16":
        log.info("%s: %d matmuls in float16", gdef.name, matmuls_to_fp16(onnx_model, reader))
    elif precision in BITS:
        log.info(
            "%s: %d matmuls quantised to %s", gdef.name, quantize_matmuls(onnx_model, reader, precision), precision
        )
    log.info("writing %s", path.name)
    return save(onnx_model, path, progress)
