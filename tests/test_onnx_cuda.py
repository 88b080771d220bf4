"""The KV-cache layout shared by the engine backends, and the device-resident cache of ONNX Runtime's
CUDA path: offsets against numpy's own addresses, the copy plans against numpy indexing, and the
DLPack / OrtValue binding and copy logic run on host memory (no GPU on this machine)."""

from __future__ import annotations

import numpy as np
import pytest

from voxtral_tts.config import ModelConfig
from voxtral_tts.errors import VoxtralError
from voxtral_tts.runtime.backends.kv_layout import Copy2D, KVLayout
from voxtral_tts.testing import full_params


@pytest.fixture(scope="module")
def full_config(spec_dir) -> ModelConfig:
    return ModelConfig.from_file(spec_dir)


def test_full_size_layout(full_config):
    layout = KVLayout.for_config(full_config, capacity=4096, slots=1)
    assert layout.shape == (26, 4096, 1, 8, 128)
    assert layout.row_bytes == 8 * 128 * 4
    assert layout.nbytes == 26 * 4096 * 8 * 128 * 4 == 436_207_616
    assert ModelConfig.from_dict(full_params()).backbone == full_config.backbone


@pytest.mark.parametrize("dims", [(2, 9, 3, 1, 12), (26, 24, 2, 8, 128)])  # tiny; the released heads, short
def test_offsets_equal_numpy_addresses(dims):
    layout = KVLayout(*dims)
    cache = np.zeros(layout.shape, np.float32)
    base = cache.ctypes.data
    assert layout.nbytes == cache.nbytes and layout.row_bytes == cache[0, 0, 0].nbytes
    for layer in range(layout.n_layers):
        for length in (0, 1, layout.capacity // 2, layout.capacity):
            offset, shape = layout.prefix(layer, length)
            view = cache[layer, :length]
            assert view.flags.c_contiguous and view.shape == shape
            if length:
                assert base + offset == view.ctypes.data
        for position in (0, 1, layout.capacity - 1):
            for slot in range(layout.slots):
                assert base + layout.offset(layer, position, slot) == cache[layer, position, slot].ctypes.data


def test_out_of_range_rows_are_errors():
    layout = KVLayout(2, 8, 2, 1, 4)
    for args in [(2, 0, 0), (0, 8, 0), (0, 0, 2), (-1, 0, 0)]:
        with pytest.raises(VoxtralError, match="outside the cache"):
            layout.offset(*args)
    with pytest.raises(VoxtralError, match="does not fit"):
        layout.prefix_shape(9)
    with pytest.raises(VoxtralError, match="does not fit"):
        layout.rows_copies(0, 0, 9, 9)
    with pytest.raises(VoxtralError, match="twice"):
        layout.step_copies([3, 4], [1, 1])
    with pytest.raises(VoxtralError, match="outside the cache"):
        layout.step_copies([8], [0])


def _random(shape, rng):
    return rng.standard_normal(shape).astype(np.float32)


def test_prefill_copies_equal_numpy_indexing():
    rng = np.random.default_rng(0)
    layout = KVLayout(3, 10, 3, 2, 4)
    cache = _random(layout.shape, rng)
    expected = cache.copy()
    present = _random(layout.present_shape(7, 1), rng)
    for copy in layout.rows_copies(2, 0, 7, 7):
        copy.apply(cache, present)
    expected[:, :7, 2] = present[:, :, 0]
    np.testing.assert_array_equal(cache, expected)


def test_step_copies_equal_numpy_indexing():
    rng = np.random.default_rng(1)
    layout = KVLayout(3, 10, 4, 2, 4)
    cache = _random(layout.shape, rng)
    expected = cache.copy()
    present = _random(layout.present_shape(1, 4), rng)
    positions, slots = [5, 2, 9], [3, 0, 1]  # slot 2 is not decoding: its rows stay
    copies = layout.step_copies(positions, slots)
    assert len(copies) == 3 and all(c.height == layout.n_layers for c in copies)
    for copy in copies:
        copy.apply(cache, present)
    expected[:, positions, slots] = present[:, 0, slots]
    np.testing.assert_array_equal(cache, expected)


def test_runs_are_the_same_copy():
    rng = np.random.default_rng(2)
    layout = KVLayout(2, 6, 1, 2, 4)
    dense = layout.rows_copies(0, 0, 4, 4)[1]  # one slot: the rows of a layer are contiguous on both sides
    assert dense.runs() == [(dense.dst, dense.src, 4 * layout.row_bytes)]
    strided = KVLayout(2, 6, 3, 2, 4).step_copies([4], [1])[0]
    assert len(strided.runs()) == 2
    for copy, lay in ((dense, layout), (strided, KVLayout(2, 6, 3, 2, 4))):
        src = _random(lay.present_shape(4 if copy is dense else 1, 1 if copy is dense else 3), rng)
        a, b = np.zeros(lay.shape, np.float32), np.zeros(lay.shape, np.float32)
        copy.apply(a, src)
        flat_b, flat_src = b.reshape(-1).view(np.uint8), src.reshape(-1).view(np.uint8)
        for dst, s, n in copy.runs():
            flat_b[dst : dst + n] = flat_src[s : s + n]
        np.testing.assert_array_equal(a, b)
        assert a.any()


def test_copy_bounds_are_checked():
    with pytest.raises(VoxtralError, match="overruns"):
        Copy2D(dst=0, dst_pitch=64, src=0, src_pitch=16, width=16, height=3).apply(np.zeros(32, np.float32),
                                                                                  np.zeros(12, np.float32))


# --- ONNX Runtime: DLPack views and the device-resident cache, on host memory ------------------------

ort = pytest.importorskip("onnxruntime")
from voxtral_tts.runtime.backends.onnxruntime import DeviceKV, HostKV, dlpack_view, providers_for  # noqa: E402


def test_dlpack_view_shares_memory():
    array = np.arange(32, dtype=np.float32)
    view = dlpack_view(array.ctypes.data + 8 * 4, 6, "cpu")
    assert view.data_ptr() == array.ctypes.data + 32 and view.shape() == [6]
    np.testing.assert_array_equal(view.numpy(), array[8:14])
    source = dlpack_view(array.ctypes.data, 6, "cpu")
    view.update_inplace(source)  # the copy the CUDA path makes device to device
    np.testing.assert_array_equal(array[8:14], np.arange(6, dtype=np.float32))
    del view, source  # released through the block's own deleter (free)
    assert array[20] == 20


def _identity_model(layout: KVLayout) -> bytes:
    """A graph whose outputs are its past inputs: shows what a binding hands to a session."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    names = [f"past_{kind}.{i}" for i in range(layout.n_layers) for kind in ("k", "v")]
    shape = ["past", layout.slots, *layout.row_shape]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in names]
    outputs = [helper.make_tensor_value_info("out_" + n, TensorProto.FLOAT, shape) for n in names]
    nodes = [helper.make_node("Identity", [n], ["out_" + n]) for n in names]
    graph = helper.make_graph(nodes, "past", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()


@pytest.mark.parametrize("store", ["host", "device"])
def test_kv_store_binds_prefixes_and_stores_rows(store):
    """Both caches, fed the same prefill and step outputs, hold the same rows as numpy indexing, and
    bind each layer's prefix as the past input."""
    rng = np.random.default_rng(3)
    layout = KVLayout(2, 12, 3, 2, 4)
    cache = HostKV(layout) if store == "host" else DeviceKV(layout, "cpu")
    expected = {kind: np.zeros(layout.shape, np.float32) for kind in ("k", "v")}
    session = ort.InferenceSession(_identity_model(layout), providers=["CPUExecutionProvider"])
    binding = session.io_binding()

    def present(length, batch):
        arrays = {kind: _random(layout.present_shape(length, batch), rng) for kind in ("k", "v")}
        if store == "host":
            return arrays, arrays
        values = cache.outputs(length) if batch == 1 else cache.present
        for kind in ("k", "v"):
            values[kind].update_inplace(arrays[kind])
        return values, arrays

    values, arrays = present(5, 1)
    cache.store(layout.rows_copies(1, 0, 5, 5), values, binding)
    for kind in ("k", "v"):
        expected[kind][:, :5, 1] = arrays[kind][:, :, 0]
    step_arrays = present(1, 3)[1]
    if store == "host":
        for kind in ("k", "v"):
            cache.present[kind][...] = step_arrays[kind]
    cache.store(layout.step_copies([5, 0], [1, 2]), cache.present, binding)
    for kind in ("k", "v"):
        expected[kind][:, [5, 0], [1, 2]] = step_arrays[kind][:, 0, [1, 2]]
    for kind in ("k", "v"):
        actual = getattr(cache, kind)
        np.testing.assert_array_equal(actual if store == "host" else actual.numpy(), expected[kind])

    cache.bind_past(binding, 6)
    for name in session.get_outputs():
        binding.bind_output(name.name, "cpu")
    session.run_with_iobinding(binding)
    outputs = dict(zip([o.name for o in session.get_outputs()], binding.copy_outputs_to_cpu()))
    for layer in range(layout.n_layers):
        for kind in ("k", "v"):
            np.testing.assert_array_equal(outputs[f"out_past_{kind}.{layer}"], expected[kind][layer, :6])


def test_missing_cuda_provider_is_a_clear_error():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(VoxtralError, match="install onnxruntime-gpu"):
        providers_for("cuda")
