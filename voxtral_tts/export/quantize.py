"""Reduced precision for the exported matmuls: ``--precision fp16``, ``int8``, ``int4``, ``int8-backbone``.

``fp16``: every weight matmul runs in float16 (weight stored as float16, input cast down, output
cast back up); norms, softmax, RoPE, the Euler updates and the semantic logits stay float32.

``int8`` / ``int4``: block-wise weight quantisation.
Every ``MatMul`` whose right operand is a checkpoint weight becomes ONNX Runtime's
``com.microsoft.MatMulNBits``: the weight [N, K] is cut along K into blocks of ``block_size``,
each block stored as signed integers with one float32 scale (symmetric: ``w ≈ scale · (q − zp)``,
zp = 2^(bits−1)), packed as ``MatMulNBits`` expects (uint8 [N, blocks, block_size·bits/8], two
4-bit values per byte, low nibble first). ``accuracy_level=4`` lets the CPU kernels compute in
int8 (activations quantised per block on the fly), which is where the speed comes from.

``int8-backbone``: ``int8`` for the backbone's matmuls only (:func:`graph_precision`).

Like the float export, the packed tensors are lazy: each is computed from the checkpoint when it
is written, one at a time. Kept in float (the issue's rule and the spec's precision notes): the
semantic head (its argmax decides the codes), the codec, norms and embeddings.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ..checkpoint import CheckpointReader

BITS = {"int8": 8, "int4": 4}
#: presets that treat the graphs differently: graph → its precision (graphs not named stay float32)
PRESETS = {"int8-backbone": {"backbone": "int8"}}
BLOCK_SIZE = 32
ACCURACY_LEVEL = 4  # int8 compute on CPU
#: Weights whose matmul stays float32 in every precision: the semantic logits decide codes by argmax.
KEEP_FLOAT = ("acoustic_transformer.semantic_codebook_output.weight",)


def graph_precision(precision: str, graph: str) -> str:
    """The precision ``graph`` is exported in under an engine ``precision``: the codec always in
    float32; ``int8-backbone`` quantises the backbone only (the flow head — whose output is a
    continuous latent rounded to 21 levels — and the codec stay float32, as vLLM-Omni and
    Faster-Voxtral quantise the LM only)."""
    if precision in PRESETS:
        return PRESETS[precision].get(graph, "fp32")
    return "fp32" if graph == "codec" else precision


def drop_unused_initializers(graph: ir.Graph) -> None:
    for name, value in list(graph.initializers.items()):
        if not value.uses() and not value.is_graph_output():
            graph.initializers.pop(name)


def matmuls_to_fp16(model: ir.Model, reader: CheckpointReader) -> int:
    """Mixed precision: every MatMul with a checkpoint weight runs in float16 — the weight stored
    as float16, its input cast down and its output cast back up — while norms, softmax, RoPE,
    the Euler updates and the semantic logits stay float32. Returns the number of matmuls changed."""
    graph = model.graph
    changed = 0
    for node in list(graph):
        if node.op_type != "MatMul" or not node.inputs[1].is_initializer():
            continue
        weight = node.inputs[1]
        base = weight.name[:-2] if weight.name.endswith(".T") else weight.name
        if base not in reader.shapes or base in KEEP_FLOAT:
            continue
        half_name = weight.name + ".fp16"
        if half_name not in graph.initializers:
            shape = tuple(weight.shape)
            transpose = weight.name.endswith(".T")
            half = ir.Value(name=half_name, shape=ir.Shape(list(shape)), type=ir.TensorType(ir.DataType.FLOAT16))
            half.const_value = ir.LazyTensor(
                lambda b=base, t=transpose, n=half_name: ir.tensor(
                    np.ascontiguousarray((reader.read(b).T if t else reader.read(b)).astype(np.float16)), name=n),
                ir.DataType.FLOAT16, ir.Shape(list(shape)), name=half_name)
            graph.register_initializer(half)
        down = ir.node("Cast", [node.inputs[0]], attributes={"to": ir.DataType.FLOAT16})
        matmul = ir.node("MatMul", [down.outputs[0], graph.initializers[half_name]])
        up = ir.node("Cast", [matmul.outputs[0]], attributes={"to": ir.DataType.FLOAT})
        graph.insert_before(node, [down, matmul, up])
        node.outputs[0].replace_all_uses_with(up.outputs[0], replace_graph_outputs=True)
        graph.remove(node, safe=True)
        changed += 1
    drop_unused_initializers(graph)
    return changed




def quantize_blocks(weight: np.ndarray, bits: int, block_size: int = BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """weight [N, K] float → (packed uint8 [N, blocks, block_size·bits/8], scales float32 [N, blocks])."""
    n, k = weight.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), np.float32)
    padded[:, :k] = weight
    grouped = padded.reshape(n, blocks, block_size)
    qmax = 2 ** (bits - 1) - 1
    scales = np.abs(grouped).max(axis=-1) / qmax
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(grouped / scales[..., None]), -qmax - 1, qmax).astype(np.int16) + 2 ** (bits - 1)
    if bits == 8:
        packed = q.astype(np.uint8)
    else:
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return packed, scales.astype(np.float32)


def dequantize_blocks(packed: np.ndarray, scales: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The float weight [N, K] that ``packed`` / ``scales`` stand for (for tests and error reports)."""
    if bits == 8:
        q = packed.astype(np.int16)
    else:
        q = np.stack((packed & 0x0F, packed >> 4), axis=-1).reshape(*packed.shape[:2], -1).astype(np.int16)
    values = (q - 2 ** (bits - 1)) * scales[..., None]
    return values.reshape(packed.shape[0], -1)[:, :k].astype(np.float32)


def quantize_matmuls(model: ir.Model, reader: CheckpointReader, precision: str,
                     block_size: int = BLOCK_SIZE) -> int:
    """Replace MatMul(x, Wᵀ) by MatMulNBits(x, packed W, scales); returns how many were replaced."""
    bits = BITS[precision]
    graph = model.graph
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    replaced = 0

    def packed_pair(base: str):
        if base not in cache:
            cache.clear()  # the packed weight and its scales are written one after the other
            cache[base] = quantize_blocks(reader.read(base), bits, block_size)
        return cache[base]

    for node in list(graph):
        if node.op_type != "MatMul" or not node.inputs[1].is_initializer() or not node.inputs[1].name.endswith(".T"):
            continue
        base = node.inputs[1].name[:-2]
        if base not in reader.shapes or base in KEEP_FLOAT:
            continue
        n, k = reader.shapes[base]
        blocks = -(-k // block_size)
        names = (f"{base}.q{bits}", f"{base}.q{bits}.scales")
        if names[0] not in graph.initializers:
            shapes = ([n, blocks, block_size * bits // 8], [n * blocks])
            types = (ir.DataType.UINT8, ir.DataType.FLOAT)
            for i, (name, shape, dtype) in enumerate(zip(names, shapes, types)):
                value = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(dtype))
                value.const_value = ir.LazyTensor(
                    lambda b=base, i=i, s=shape, nm=name: ir.tensor(packed_pair(b)[i].reshape(s), name=nm),
                    dtype, ir.Shape(shape), name=name)
                graph.register_initializer(value)
        q = ir.node("MatMulNBits", [node.inputs[0], graph.initializers[names[0]], graph.initializers[names[1]]],
                    attributes={"K": k, "N": n, "bits": bits, "block_size": block_size,
                                "accuracy_level": ACCURACY_LEVEL},
                    domain="com.microsoft")
        graph.insert_before(node, [q])
        node.outputs[0].replace_all_uses_with(q.outputs[0], replace_graph_outputs=True)
        graph.remove(node, safe=True)
        replaced += 1
    if replaced:
        model.opset_imports["com.microsoft"] = 1
    drop_unused_initializers(graph)
    return replaced
