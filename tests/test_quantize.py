"""Block-wise int8 / int4 weights (MatMulNBits): packing, kernel agreement, and a quantised engine."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from voxtral_tts.export.quantize import BLOCK_SIZE, dequantize_blocks, quantize_blocks  # noqa: E402
from voxtral_tts.testing import flow_one  # noqa: E402


@pytest.mark.parametrize("bits, bound", [(8, 0.01), (4, 0.15)])
def test_block_quantisation_round_trip(bits, bound):
    weight = np.random.default_rng(0).standard_normal((48, 100)).astype(np.float32)  # K not a multiple of 32
    packed, scales = quantize_blocks(weight, bits)
    assert packed.dtype == np.uint8 and packed.shape == (48, 4, BLOCK_SIZE * bits // 8) and scales.shape == (48, 4)
    restored = dequantize_blocks(packed, scales, bits, 100)
    err = np.linalg.norm(restored - weight) / np.linalg.norm(weight)
    print(f"int{bits} weight error {err:.2e}")
    assert err < bound
    # every block's largest magnitude is represented exactly (symmetric max scaling)
    blocks = np.pad(weight, ((0, 0), (0, 28))).reshape(48, 4, 32)
    peaks = np.abs(blocks).max(-1)
    restored_peaks = np.abs(np.pad(restored, ((0, 0), (0, 28))).reshape(48, 4, 32)).max(-1)
    np.testing.assert_allclose(restored_peaks, peaks, rtol=1e-6)


@pytest.mark.parametrize("bits", [8, 4])
def test_packing_matches_onnxruntime_kernel(bits):
    """MatMulNBits reads our packing as the weights we meant: its product equals x · dequant(W)ᵀ
    (to the kernel's int8 activation rounding, accuracy level 4)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((64, 96)).astype(np.float32)
    packed, scales = quantize_blocks(weight, bits)
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=96, N=64, bits=bits,
                            block_size=BLOCK_SIZE, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, 96])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 64])],
                              [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales.reshape(-1), "S")])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((5, 96)).astype(np.float32)
    expected = x @ dequantize_blocks(packed, scales, bits, 96).T
    err = np.linalg.norm(session.run(None, {"A": x})[0] - expected) / np.linalg.norm(expected)
    assert err < 1e-2  # a wrong nibble order or scale layout gives errors of order 1


@pytest.mark.slow  # exports an int8 engine
def test_int8_engine(tmp_path_factory, reference_model_dir, golden):
    import onnx

    import voxtral_tts
    from voxtral_tts.engine import open_engine
    from voxtral_tts.export.build import build_engine

    path = build_engine(reference_model_dir, tmp_path_factory.mktemp("engines") / "int8", precision="int8",
                        progress=False)
    assert open_engine(path).precision == "int8"
    backbone = onnx.load(str(path / "backbone.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in backbone.node]
    assert ops.count("MatMulNBits") == 2 * 7 and "backbone.layers.0.feed_forward.w1.weight.q8" in {
        i.name for i in backbone.initializer}
    flow = onnx.load(str(path / "flow_frame.onnx"), load_external_data=False).graph
    semantic = [i for i in flow.initializer if i.name.startswith("acoustic_transformer.semantic_codebook_output")]
    assert semantic and all(i.data_type == onnx.TensorProto.FLOAT for i in semantic)  # the head stays float
    assert sum(n.op_type == "MatMulNBits" for n in flow.node) == 7 * 2 * 7  # 7 steps × 2 layers × 7 matrices

    tts = voxtral_tts.load(path)
    hidden = tts.backend.prefill(golden["input_embeddings"])
    err = np.linalg.norm(hidden - golden["prefill_hidden"][-1]) / np.linalg.norm(golden["prefill_hidden"][-1])
    agree = np.mean([(flow_one(tts.backend, h, x) == c).mean()
                     for h, x, c in zip(golden["frame_hidden"], golden["noise"], golden["codes"])])
    print(f"int8 prefill hidden error {err:.2e}; codes equal to the fixture's (teacher-forced): {agree:.1%}")
    assert err < 5e-2 and agree > 0.8


def test_int8_backbone_engine(tmp_path_factory, reference_model_dir, reference_engine_dir, golden):
    """The backbone-only preset: the backbone's matmuls int8, the flow head and codec exactly the
    float32 engine's graphs, so the flow's codes from the fixture's hidden states are the fixture's."""
    import onnx

    import voxtral_tts
    from voxtral_tts.engine import open_engine
    from voxtral_tts.export.build import build_engine
    from voxtral_tts.export.quantize import graph_precision

    assert [graph_precision("int8-backbone", g) for g in ("backbone", "flow_frame", "codec")] == [
        "int8",
        "fp32",
        "fp32",
    ]
    assert [graph_precision("int8", g) for g in ("backbone", "flow_frame", "codec")] == ["int8", "int8", "fp32"]
    path = build_engine(reference_model_dir, tmp_path_factory.mktemp("engines") / "int8b", precision="int8-backbone",
                        progress=False)
    engine = open_engine(path)
    assert engine.precision == "int8-backbone"
    assert engine.manifest["validation"]["flow_frame codes"]["mismatches"] == 0  # validated at fp32's tolerance

    def ops(directory, name):
        return [n.op_type for n in onnx.load(str(directory / f"{name}.onnx"), load_external_data=False).graph.node]

    assert ops(path, "backbone").count("MatMulNBits") == 2 * 7
    for name in ("flow_frame", "codec"):
        assert ops(path, name) == ops(reference_engine_dir, name) and "MatMulNBits" not in ops(path, name)

    tts = voxtral_tts.load(path)
    hidden = tts.backend.prefill(golden["input_embeddings"])
    err = np.linalg.norm(hidden - golden["prefill_hidden"][-1]) / np.linalg.norm(golden["prefill_hidden"][-1])
    codes = np.stack([flow_one(tts.backend, h, x) for h, x in zip(golden["frame_hidden"], golden["noise"])])
    print(f"int8-backbone prefill hidden error {err:.2e}")
    assert err < 5e-2
    np.testing.assert_array_equal(codes, golden["codes"])  # the flow head is float32: exact
