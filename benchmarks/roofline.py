"""This machine's roofline for one Voxtral frame, measured with ONNX Runtime's own kernels.

    python benchmarks/roofline.py [MODEL_DIR_OR_PARAMS] [--threads N]

Measured here (not assumed): memory read bandwidth (a float32 matrix-vector product over a
weight far larger than the caches), float32 matmul throughput, and int8-compute matmul
throughput (``MatMulNBits``, 8- and 4-bit weights), and bf16 matmul throughput in torch (oneDNN,
the torch backend's kernels) when torch is installed. Computed from params.json: the bytes of
weights one frame reads and the FLOPs it does, per precision and per graph (``int8-backbone``
quantises the backbone only) — the backbone once (one token), the flow head's layers 7 times
(Euler steps; the CFG pair and 3 tokens share one read), the semantic head once (always
float32). The floor is max(bytes / bandwidth, FLOPs / throughput).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voxtral_tts.config import ModelConfig  # noqa: E402
from voxtral_tts.export.quantize import BLOCK_SIZE, graph_precision, quantize_blocks  # noqa: E402

#: Bytes per weight as stored (quantised: the codes plus one float32 scale per block).
BYTES_PER_WEIGHT = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0 + 4.0 / BLOCK_SIZE,
                    "int4": 0.5 + 4.0 / BLOCK_SIZE}


def _session(nodes, inputs, outputs, initializers, threads):
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _time(session, feed, repeats: int) -> float:
    for _ in range(2):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(repeats):
        session.run(None, feed)
    return (time.perf_counter() - start) / repeats


def _matmul(k: int, n: int, m: int, threads: int, bits: int | None):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((n, k), dtype=np.float32) * 0.02)
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])
    if bits is None:
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
        inits = [numpy_helper.from_array(np.ascontiguousarray(weight.T), "W")]
    else:
        packed, scales = quantize_blocks(weight, bits)
        node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=k, N=n, bits=bits,
                                block_size=BLOCK_SIZE, accuracy_level=4)
        inits = [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales.reshape(-1), "S")]
    session = _session([node], [a], [y], inits, threads)
    feed = {"A": rng.standard_normal((m, k), dtype=np.float32)}
    return session, feed


def _bf16_gflops(threads: int) -> float | None:
    """bf16 matmul throughput through torch (oneDNN), the torch backend's kernels; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    a = torch.randn(512, 3072, dtype=torch.bfloat16)
    w = torch.randn(3072, 3072, dtype=torch.bfloat16)
    for _ in range(2):
        a @ w.T
    start, repeats = time.perf_counter(), 5
    for _ in range(repeats):
        a @ w.T
    return 2 * 512 * 3072 * 3072 / ((time.perf_counter() - start) / repeats) / 1e9


def measure(threads: int) -> dict[str, float]:
    """Bandwidth in GB/s and matmul throughput in GFLOP/s (float32, int8, int4 weights in ONNX
    Runtime; bf16 in torch when it is installed)."""
    k, n = 8192, 16384  # 512 MiB of float32: far beyond any cache
    session, feed = _matmul(k, n, 1, threads, None)
    bandwidth = k * n * 4 / _time(session, feed, 10) / 1e9
    out = {"bandwidth_gbs": bandwidth}
    for label, bits in (("fp32", None), ("int8", 8), ("int4", 4)):
        session, feed = _matmul(3072, 3072, 512, threads, bits)
        out[f"{label}_gflops"] = 2 * 512 * 3072 * 3072 / _time(session, feed, 5) / 1e9
    bf16 = _bf16_gflops(threads)
    if bf16 is not None:
        out["bf16_gflops"] = bf16
    return out


def frame_cost(config: ModelConfig) -> dict[str, float]:
    """Weights read (parameter count, by role) and FLOPs of one generated frame."""
    b, f, a = config.backbone, config.flow, config.audio

    def layer_params(dim, hidden, heads, kv_heads, head_dim):
        return dim * head_dim * (2 * heads + 2 * kv_heads) + 3 * dim * hidden

    backbone = b.n_layers * layer_params(b.dim, b.hidden_dim, b.n_heads, b.n_kv_heads, b.head_dim)
    flow_step = f.n_layers * layer_params(f.dim, f.hidden_dim, f.n_heads, f.n_kv_heads, f.head_dim) \
        + 2 * f.dim * a.n_acoustic_codebook  # input projection, acoustic output
    once = f.dim * f.input_dim  # llm projection (the time projection is folded into constants)
    semantic = a.semantic_head_rows * f.input_dim
    steps, tokens = f.n_decoding_steps, 2 * 3  # CFG pair × [x, t, h]
    return {
        # weights read per frame, by the graph they belong to (what a precision may reduce)
        "backbone_weight_reads": backbone, "flow_weight_reads": steps * flow_step + once,
        "float_weight_reads": semantic,  # always float32: its argmax decides the codes
        "backbone_flops": 2 * backbone, "flow_flops": 2 * (steps * tokens * flow_step + once + semantic),
    }


def floor_ms(config: ModelConfig, precision: str, machine: dict[str, float]) -> dict[str, float]:
    """The floor of one frame for an engine ``precision`` (per graph: ``graph_precision``), or
    ``bf16`` (the torch backend's bf16 compute): max(bytes / bandwidth, FLOPs / throughput) per graph."""
    cost = frame_cost(config)
    memory_ms = compute_ms = nbytes = 0.0
    for graph in ("backbone", "flow"):
        used = (
            "bf16"
            if precision == "bf16"
            else graph_precision(precision, "backbone" if graph == "backbone" else "flow_frame")
        )
        graph_bytes = cost[f"{graph}_weight_reads"] * BYTES_PER_WEIGHT[used]
        throughput = machine["fp32_gflops" if used in ("fp32", "fp16") else f"{used}_gflops"]
        nbytes += graph_bytes
        memory_ms += graph_bytes / (machine["bandwidth_gbs"] * 1e9) * 1e3
        compute_ms += cost[f"{graph}_flops"] / (throughput * 1e9) * 1e3
    float_bytes = cost["float_weight_reads"] * 4
    nbytes += float_bytes
    memory_ms += float_bytes / (machine["bandwidth_gbs"] * 1e9) * 1e3
    gflop = (cost["backbone_flops"] + cost["flow_flops"]) / 1e9
    return {"bytes_gb": nbytes / 1e9, "gflop": gflop, "memory_ms": memory_ms, "compute_ms": compute_ms,
            "floor_ms": max(memory_ms, compute_ms)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("params", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/spec/params.json"))
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    from voxtral_tts.runtime.backends.onnxruntime import physical_cores

    machine = measure(args.threads or physical_cores())
    config = ModelConfig.from_file(args.params)
    print(
        f"memory read bandwidth {machine['bandwidth_gbs']:.1f} GB/s; "
        f"matmul fp32 {machine['fp32_gflops']:.0f} GFLOP/s, int8 {machine['int8_gflops']:.0f}, "
        f"int4 {machine['int4_gflops']:.0f}, bf16 {machine.get('bf16_gflops', 0):.0f}"
    )
    for precision in ("fp32", "int8", "int4", "int8-backbone") + (("bf16",) if "bf16_gflops" in machine else ()):
        r = floor_ms(config, precision, machine)
        print(
            f"{precision}: {r['bytes_gb']:.2f} GB and {r['gflop']:.1f} GFLOP per frame → "
            f"memory {r['memory_ms']:.0f} ms, "
            f"compute {r['compute_ms']:.0f} ms, floor {r['floor_ms']:.0f} ms/frame"
        )


if __name__ == "__main__":
    main()
