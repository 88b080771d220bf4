"""The TensorRT target and backend without TensorRT (this machine has no GPU): optimisation
profiles, the plan cache key and rebuild decision, the device buffer plan and bindings, the clear
errors when tensorrt / cuda-python are missing, and ``voxtral-export --target tensorrt`` producing an
engine directory (ONNX graphs + manifest + deferred plans) that ONNX Runtime also runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import voxtral_tts
from voxtral_tts.config import ModelConfig
from voxtral_tts.engine import open_engine
from voxtral_tts.errors import CapacityError, VoxtralError
from voxtral_tts.runtime.backends.buckets import bucket_for
from voxtral_tts.runtime.backends.kv_layout import KVLayout
from voxtral_tts.runtime.backends.tensorrt import device_index, require_libraries
from voxtral_tts.runtime.backends.tensorrt_buffers import backbone_bindings, buffer_plan, codec_bindings, flow_bindings
from voxtral_tts.runtime.backends.tensorrt_plans import (KEY_FILE, backbone_profiles, batch_widths, cache_key,
                                                         decode_buckets, decode_profiles,
                                                         ensure_plans, graph_profiles, key_digest, plans_root,
                                                         rebuild_reason, superseded)
from voxtral_tts.runtime.codec import pad_codec_chunk
from voxtral_tts.runtime.constants import CODEC_FRAMES


@pytest.fixture(scope="module")
def full_config(spec_dir) -> ModelConfig:
    return ModelConfig.from_file(spec_dir)


# --- profiles --------------------------------------------------------------------------------------

def test_decode_buckets():
    assert decode_buckets(4096) == [512, 1024, 1536, 2048, 2560, 3072, 3584, 4096]
    assert decode_buckets(1000) == [512, 1000] and decode_buckets(300) == [300] and decode_buckets(512) == [512]
    buckets = decode_buckets(4096)
    assert [bucket_for(p, buckets) for p in (0, 1, 512, 513, 4095, 4096)] == [512, 512, 512, 1024, 4096, 4096]
    with pytest.raises(CapacityError, match="4097 positions exceed the KV cache .4096 positions."):
        bucket_for(4097, buckets)


def test_backbone_profiles_full_size(full_config):
    profiles = backbone_profiles(full_config, capacity=4096, max_batch=4)
    assert decode_profiles(4096, 4) == [(bucket, rows) for bucket in decode_buckets(4096) for rows in (1, 2, 4)]
    assert len(profiles) == 1 + 8 * 3  # a decode profile per (past bucket, batch width)
    prefill = profiles[0]
    assert prefill["embeds"] == ((1, 1, 3072), (1, 256, 3072), (1, 4096, 3072))
    assert prefill["positions"] == ((1, 1), (1, 256), (1, 4096))
    # a voice prefix, or one masked row: never empty
    assert prefill["past_k.25"] == prefill["past_v.0"] == ((1, 1, 8, 128), (256, 1, 8, 128), (4096, 1, 8, 128))
    for profile, (bucket, rows) in zip(profiles[1:], decode_profiles(4096, 4)):
        assert profile["embeds"] == (((rows, 1, 3072),) * 3) and profile["past_lengths"] == (((rows,),) * 3)
        assert profile["past_v.13"] == (((bucket, rows, 8, 128),) * 3)
    for profile in profiles:
        assert len(profile) == 3 + 2 * 26
        for lo, opt, hi in profile.values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))
    others = graph_profiles(full_config, 4096, 4)
    assert others["flow_frame"] == [{"hidden": (((rows, 3072),) * 3), "noise": (((rows, 36),) * 3),
                                     "semantic_noise": (((rows, 8320),) * 3), "guidance": (((rows, 2),) * 3)}
                                    for rows in (1, 2, 4)]
    # a format-3 engine's flow graph has its guidance scale built in: no such input to shape
    old = graph_profiles(full_config, 4096, 4, guidance=False)["flow_frame"]
    assert old == [{k: v for k, v in profile.items() if k != "guidance"} for profile in others["flow_frame"]]
    assert others["codec"] == [{"codes": (((1, CODEC_FRAMES, 37),) * 3)}] and CODEC_FRAMES == 75


# --- plan cache --------------------------------------------------------------------------------------

IDENTITY = {"params_sha256": "p" * 64, "checkpoint_sha256": "c" * 64, "tekken_sha256": "t" * 64}


def _key(**changes):
    args = dict(identity=IDENTITY, precision="fp16", compute_capability=(9, 0), tensorrt_version="10.9.0",
                capacity=4096, max_batch=1)
    args.update(changes)
    return cache_key(**args)


def test_cache_key_and_rebuild_decision():
    key = _key()
    assert key["compute_capability"] == "9.0" and key["tensorrt"] == "10.9.0" and key["model"] == IDENTITY
    assert key["profile"]["decode_buckets"] == decode_buckets(4096) and key["profile"]["codec_frames"] == 75
    assert key["profile"]["batch_widths"] == [1]
    assert _key(max_batch=32)["profile"]["batch_widths"] == [1, 2, 4, 8, 16, 32]
    assert rebuild_reason(key, _key(), plans_present=True) is None
    assert "incomplete" in rebuild_reason(key, _key(), plans_present=False)
    assert "no TensorRT plans" in rebuild_reason(None, key, plans_present=False)
    cases = {
        "TensorRT version 10.8.0 → 10.9.0": _key(tensorrt_version="10.8.0"),
        "GPU compute capability 8.0 → 9.0": _key(compute_capability=(8, 0)),
        "model identity": _key(identity={**IDENTITY, "checkpoint_sha256": "d" * 64}),
        "precision bf16 → fp16": _key(precision="bf16"),
        "engine format 3 → 4": _key(engine_format=3),  # a format-3 flow graph has no guidance input
        "optimisation profile": _key(max_batch=4),
    }
    digests = {key_digest(key)}
    for expected, stored in cases.items():
        assert expected in rebuild_reason(stored, key, plans_present=True)
        digests.add(key_digest(stored))
    assert len(digests) == len(cases) + 1 and key_digest(_key()) == key_digest(key)
    assert superseded(_key(tensorrt_version="10.8.0"), key)
    assert not superseded(_key(compute_capability=(8, 9), tensorrt_version="10.8.0"), key)
    assert not superseded(_key(max_batch=2, tensorrt_version="10.8.0"), key) and not superseded(key, key)
    assert not superseded(_key(engine_format=3, tensorrt_version="10.8.0"), key)


# --- device buffers ---------------------------------------------------------------------------------

def _check_bindings(plan, bindings):
    buffers = {b.name: b for b in plan}
    for binding in bindings:
        buffer = buffers[binding.buffer]
        size = int(np.prod(binding.shape)) * np.dtype(buffer.dtype).itemsize
        assert 0 <= binding.offset and binding.offset + size <= buffer.nbytes, binding


@pytest.mark.parametrize("max_batch", [1, 4])
def test_buffer_plan_full_size(full_config, max_batch):
    plan = buffer_plan(full_config, capacity=4096, max_batch=max_batch)
    buffers = {b.name: b for b in plan}
    assert len(buffers) == len(plan)
    kv = 26 * 4096 * max_batch * 8 * 128 * 4
    assert buffers["kv.k"].shape == (26, 4096, max_batch, 8, 128) and buffers["kv.v"].nbytes == kv
    assert buffers["kv.scratch"].nbytes == kv // 26  # one layer: what a re-layout stages at a time
    assert buffers["prefill.present_k"].nbytes == 26 * 4096 * 8 * 128 * 4
    assert buffers["step.embeds"].shape == (max_batch, 1, 3072) and buffers["step.positions"].dtype == "int64"
    assert buffers["step.present_v"].shape == (26, 1, max_batch, 8, 128)
    assert buffers["flow.codes"].shape == (max_batch, 37) and buffers["flow.codes"].dtype == "int64"
    assert buffers["codec.audio"].nbytes == 75 * 1920 * 4 and buffers["codec.codes"].shape == (1, 75, 37)
    total = sum(b.nbytes for b in plan)
    fixed = 2 * 4096 * 3072 * 4 + 4096 * 8 + 8 + 4096 + 2 * 26 * 4096 * 4096 + 75 * 37 * 8 + 75 * 1920 * 4
    per_slot = (2 * 26 * 4096 * 4096 + 4096 * 4096 + 2 * 3072 * 4 + 16 + 2 * 26 * 4096 + 3072 * 4 + 36 * 4 + 8320 * 4
                + 2 * 4 + 37 * 8)
    assert total == fixed + max_batch * per_slot
    print(f"full size, max_batch {max_batch}: {total / 1e9:.3f} GB of device buffers besides TensorRT's")


def test_bindings_fit_their_buffers(full_config, tmp_path):
    for config, capacity, slots in ((full_config, 4096, 3), (ModelConfig.from_file(_tiny_params_dir(tmp_path)), 96, 1)):
        plan = buffer_plan(config, capacity, slots)
        layout = KVLayout.for_config(config, capacity, slots)
        dim = config.backbone.dim
        _check_bindings(plan, backbone_bindings(layout, dim))
        for bucket, rows in decode_profiles(capacity, slots):
            bindings = {b.tensor: b for b in backbone_bindings(layout, dim, bucket, rows)}
            _check_bindings(plan, bindings.values())
            narrow = KVLayout.for_config(config, capacity, rows)  # the cache laid out as wide as the step
            for layer in (0, layout.n_layers - 1):
                past = bindings[f"past_v.{layer}"]
                assert (past.buffer, past.offset) == ("kv.v", narrow.offset(layer))
                assert past.shape == (bucket, rows, *layout.row_shape)
            assert bindings["present_k"].shape == layout.present_shape(1, rows)
            assert bindings["embeds"].shape == (rows, 1, dim)
        for rows in batch_widths(slots):
            _check_bindings(plan, flow_bindings(config, rows))
            flow = {b.tensor for b in flow_bindings(config, rows)}
            assert flow == set(graph_profiles(config, capacity, slots)["flow_frame"][0]) | {"codes"}
            old = {b.tensor for b in flow_bindings(config, rows, guidance=False)}
            assert old == set(graph_profiles(config, capacity, slots, guidance=False)["flow_frame"][0]) | {"codes"}
        _check_bindings(plan, codec_bindings(config))
        names = {b.tensor for b in backbone_bindings(layout, dim)}
        assert names == set(backbone_profiles(config, capacity, slots)[0]) | {"hidden", "present_k", "present_v"}


def _tiny_params_dir(tmp_path: Path) -> Path:
    from voxtral_tts.testing import tiny_params

    (tmp_path / "params.json").write_text(json.dumps(tiny_params()))
    return tmp_path


def test_pad_codec_chunk():
    codes = np.arange(3 * 37).reshape(3, 37)
    padded = pad_codec_chunk(codes, frames=5)
    assert padded.shape == (1, 5, 37) and padded.dtype == np.int64
    np.testing.assert_array_equal(padded[0, :3], codes)
    np.testing.assert_array_equal(padded[0, 3], codes[2])
    np.testing.assert_array_equal(padded[0, 4], codes[2])
    for bad in (np.zeros((0, 37)), np.zeros((6, 37)), np.zeros(37)):
        with pytest.raises(VoxtralError, match="codec chunk"):
            pad_codec_chunk(bad, frames=5)


# --- missing libraries ----------------------------------------------------------------------------

_LIBRARIES = ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart")


def test_missing_tensorrt_and_cuda_python(monkeypatch):
    for name in _LIBRARIES:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(VoxtralError, match=r"needs tensorrt>=10 and cuda-python>=12, not installed here "
                                           r"\(pip install 'voxtral-tts\[tensorrt\]'"):
        require_libraries()


def test_tensorrt_older_than_10_is_refused(monkeypatch):
    old = types.ModuleType("tensorrt")
    old.__version__ = "8.6.1"
    cuda, bindings, runtime = (types.ModuleType(n) for n in ("cuda", "cuda.bindings", "cuda.bindings.runtime"))
    bindings.runtime = runtime
    cuda.bindings = bindings
    for name, module in (("tensorrt", old), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", runtime)):
        monkeypatch.setitem(sys.modules, name, module)
    with pytest.raises(VoxtralError, match="needs TensorRT >= 10, found 8.6.1"):
        require_libraries()


def test_device_index():
    assert [device_index(d) for d in (None, "cuda", "cuda:1", 2)] == [0, 0, 1, 2]
    for bad in ("cpu", "cuda:x", -1):
        with pytest.raises(VoxtralError, match="cuda or cuda:N"):
            device_index(bad)


def test_which_engines_tensorrt_runs(tmp_path):
    from voxtral_tts.engine import Engine
    from voxtral_tts.runtime.backends.tensorrt import check_engine

    def engine(target, precision):
        return Engine(tmp_path, {"target": target, "precision": precision}, None)

    for ok in (engine("tensorrt", "fp16"), engine("tensorrt", "bf16"), engine("onnx", "fp32"), engine("onnx", "fp16")):
        check_engine(ok)
    with pytest.raises(VoxtralError, match="an int8 onnx engine .MatMulNBits has no TensorRT kernel.; export one with"):
        check_engine(engine("onnx", "int8"))
    with pytest.raises(VoxtralError, match="an engine for coreml; export one with voxtral-export --target tensorrt"):
        check_engine(engine("coreml", "fp16"))


def test_modules_import_neither_torch_nor_tensorrt():
    code = ("import sys, voxtral_tts.export.tensorrt, voxtral_tts.runtime.backends.tensorrt\n"
            "print(sorted(m for m in ('torch', 'tensorrt', 'onnx_ir', 'onnxruntime') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_unavailable_precision():
    from voxtral_tts.export.tensorrt import build_tensorrt_engine

    with pytest.raises(VoxtralError, match="'fp32' is not available for target tensorrt; available: fp16, bf16"):
        build_tensorrt_engine("unused", "unused", precision="fp32")


# --- the export ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trt_engine_dir(fp16_engine_dir) -> Path:
    """``voxtral-export --target tensorrt --capacity 96`` of the fixture's model (shared with test_onnx)."""
    return fp16_engine_dir


def test_export_without_tensorrt_defers_the_plans(trt_engine_dir):
    engine = open_engine(trt_engine_dir)  # every file the manifest names is there
    manifest = engine.manifest
    assert engine.target == "tensorrt" and engine.precision == "fp16" and engine.capacity == 96
    assert manifest["tensorrt"]["plans"] == "deferred" and manifest["tensorrt"]["strongly_typed"]
    assert "tensorrt>=10" in manifest["tensorrt"]["deferred_reason"]
    assert set(manifest["graphs"]) == {"backbone", "flow_frame", "codec"}
    assert not (trt_engine_dir / "tensorrt").exists()
    from voxtral_tts.runtime.backends import default_backend

    assert default_backend(trt_engine_dir) == "tensorrt"


def test_loading_without_tensorrt_is_one_clear_error(trt_engine_dir):
    with pytest.raises(VoxtralError, match=r"the tensorrt backend needs tensorrt>=10 and cuda-python>=12") as info:
        voxtral_tts.load(trt_engine_dir)
    assert "\n" not in str(info.value)


def test_export_cli_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    from voxtral_tts.export.cli import main

    assert main([str(tiny_model_dir), "-o", str(tmp_path / "e"), "--target", "tensorrt", "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "precision 'int8' is not available for target tensorrt" in err
    assert not (tmp_path / "e").exists()


def test_check_of_a_bf16_engine_is_one_line(trt_engine_dir, reference_model_dir, tmp_path, capsys):
    """``--check`` re-runs the graphs on ONNX Runtime's CPU provider, which has no bf16 MatMul."""
    from voxtral_tts.export.cli import main

    engine_dir = shutil.copytree(trt_engine_dir, tmp_path / "engine")
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    (engine_dir / "manifest.json").write_text(json.dumps({**manifest, "precision": "bf16"}))
    assert main([str(reference_model_dir), "-o", str(engine_dir), "--check", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot run on ONNX Runtime's CPU provider" in err


def test_plans_are_reused_when_the_key_matches(trt_engine_dir, tmp_path):
    engine_dir = shutil.copytree(trt_engine_dir, tmp_path / "engine")
    engine = open_engine(engine_dir)
    key = cache_key(engine.identity, "fp16", (8, 9), "10.9.0", 96, 2)
    directory = plans_root(engine_dir) / key_digest(key)
    directory.mkdir(parents=True)
    for name in ("backbone", "flow_frame", "codec"):
        (directory / f"{name}.plan").write_bytes(b"built earlier")
    (directory / KEY_FILE).write_text(json.dumps(key))
    # a cache hit never touches the builder: this stand-in has nothing but a version
    found, found_key = ensure_plans(engine, 96, 2, (8, 9), types.SimpleNamespace(__version__="10.9.0"))
    assert found == directory and found_key == key


def test_tensorrt_engine_dir_runs_in_onnxruntime_with_a_device_style_cache(trt_engine_dir):
    """The fp16 graphs of a TensorRT engine directory run in ONNX Runtime; the CUDA path's cache
    (OrtValues, DLPack views, device-to-device row copies), run here on host memory, gives exactly
    the host cache's codes, audio and cache contents, one sequence or several."""
    host = voxtral_tts.load(trt_engine_dir, backend="onnxruntime", max_batch=2)
    device = voxtral_tts.load(trt_engine_dir, backend="onnxruntime", max_batch=2, kv_placement="device")
    for text, seed in (("Hello there.", 5), ("A second sentence, a little longer!", 6)):
        a = host.generate(text, voice="casual_male", seed=seed, max_frames=12)
        b = device.generate(text, voice="casual_male", seed=seed, max_frames=12)
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.audio, b.audio)
    np.testing.assert_array_equal(host.backend.k_cache, device.backend.k_cache.numpy())
    np.testing.assert_array_equal(host.backend.v_cache, device.backend.v_cache.numpy())
    embeds = host.prompt("Two at once.", host.voice_bank.get("neutral_female"))[1]
    rng = np.random.default_rng(0)
    steps = rng.standard_normal((2, host.config.backbone.dim)).astype(np.float32)
    outputs = []
    for tts in (host, device):
        tts.backend.prefill(embeds, slot=1)
        outputs.append(tts.backend.step(steps, [len(embeds), 3], [1, 0]))
    np.testing.assert_array_equal(*outputs)
    np.testing.assert_array_equal(host.backend.k_cache, device.backend.k_cache.numpy())


def test_codec_padding_leaves_the_audio_unchanged(trt_engine_dir):
    """The TensorRT codec runs one fixed 75-frame chunk: codes padded at the end must not change
    the audio of the frames before (the codec is causal)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(trt_engine_dir / "codec.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    config = open_engine(trt_engine_dir).config
    sizes = np.asarray(config.audio.codebook_sizes)
    codes = (rng.integers(0, sizes, size=(CODEC_FRAMES, len(sizes))) + 2).astype(np.int64)
    spf = config.samples_per_frame
    for frames in (1, 5, 30, CODEC_FRAMES):
        alone = session.run(None, {"codes": codes[None, :frames]})[0][0]
        padded = session.run(None, {"codes": pad_codec_chunk(codes[:frames])})[0][0][: frames * spf]
        err = float(np.abs(alone - padded).max() / np.abs(alone).max())
        assert err < 1e-5, (frames, err)


def test_bf16_retyping(trt_engine_dir, reference_model_dir, tmp_path):
    """bf16: each float16 matmul weight becomes the checkpoint's own bfloat16 bits, each cast to
    float16 a cast to bfloat16, the rest (norms, softmax, semantic head, codec) untouched."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from voxtral_tts.checkpoint import CheckpointReader
    from voxtral_tts.export.tensorrt import retype_bf16

    engine_dir = shutil.copytree(trt_engine_dir, tmp_path / "bf16")
    before = {g: onnx.load(str(engine_dir / f"{g}.onnx")) for g in ("backbone", "flow_frame")}
    retyped = retype_bf16(engine_dir, reference_model_dir)
    reader = CheckpointReader(reference_model_dir, ModelConfig.from_file(reference_model_dir))
    total = 0
    for graph_name, old in before.items():
        model = onnx.load(str(engine_dir / f"{graph_name}.onnx"))
        onnx.checker.check_model(model)
        inits = {i.name: i for i in model.graph.initializer}
        old_inits = {i.name: i for i in old.graph.initializer}
        half = [n for n, i in old_inits.items() if i.data_type == TensorProto.FLOAT16]
        assert half and not any(i.data_type == TensorProto.FLOAT16 for i in inits.values())
        for name in half:
            new = inits[name[: -len(".fp16")] + ".bf16"]
            assert new.data_type == TensorProto.BFLOAT16
            base = name[: -len(".fp16")]
            bits = reader.read(base[:-2] if base.endswith(".T") else base, raw_bf16=True)
            expected = bits.T if base.endswith(".T") else bits
            np.testing.assert_array_equal(numpy_helper.to_array(new).view(np.uint16), expected)
        assert sorted(n for n, i in inits.items() if i.data_type == TensorProto.FLOAT) == \
            sorted(n for n, i in old_inits.items() if i.data_type == TensorProto.FLOAT)
        producers = {o: n for n in model.graph.node for o in n.output}
        casts = lambda m, to: sum(n.op_type == "Cast" and n.attribute[0].i == to for n in m.graph.node)  # noqa: E731
        assert casts(model, TensorProto.FLOAT16) == 0
        assert casts(model, TensorProto.BFLOAT16) == casts(old, TensorProto.FLOAT16) > 0
        assert [n.op_type for n in model.graph.node] == [n.op_type for n in old.graph.node]
        for node in model.graph.node:
            weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
            if weight is not None and weight.data_type == TensorProto.BFLOAT16:
                down = producers[node.input[0]]
                assert down.op_type == "Cast" and down.attribute[0].i == TensorProto.BFLOAT16
        total += len(half)
    assert retyped == total
    flow = {i.name: i for i in onnx.load(str(engine_dir / "flow_frame.onnx")).graph.initializer}
    assert all(i.data_type == TensorProto.FLOAT for n, i in flow.items() if "semantic_codebook_output" in n)
    assert (engine_dir / "codec.onnx.data").read_bytes() == (trt_engine_dir / "codec.onnx.data").read_bytes()
    assert not (engine_dir / ".bf16").exists()
