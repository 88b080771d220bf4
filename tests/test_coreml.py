"""Core ML target and backend: conversion of the fixture's model (runs on Linux), the packages'
specs, the traced modules against the fixture, the backend's host logic, its errors, and — on
macOS 15+ only — Core ML prediction stage by stage against the fixture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")

import voxtral_tts  # noqa: E402
from voxtral_tts.engine import FORMAT_VERSION, open_engine  # noqa: E402
from voxtral_tts.errors import EngineError, VoxtralError  # noqa: E402
from voxtral_tts.runtime.backends.coreml import CoreMLBackend, coreml_unavailable  # noqa: E402
from voxtral_tts.runtime.load_options import CoreMLOptions, load_plan  # noqa: E402
from voxtral_tts.testing import flow_one, step_one  # noqa: E402

CAPACITY = 64
ON_MAC = coreml_unavailable() is None
needs_coreml = pytest.mark.skipif(not ON_MAC, reason=f"Core ML prediction not run: {coreml_unavailable()}")


def voxtral_export(*args):
    exe = shutil.which("voxtral-export")
    cmd = [exe] if exe else [sys.executable, "-m", "voxtral_tts.export.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def export_run(reference_model_dir, tmp_path_factory):
    """``voxtral-export --target coreml`` on the fixture's model, with validation (one conversion
    shared by every test here)."""
    out = tmp_path_factory.mktemp("coreml") / "engine"
    proc = voxtral_export(reference_model_dir, "-o", out, "--target", "coreml", "--capacity", CAPACITY, "-q")
    return proc, out


@pytest.fixture(scope="module")
def engine_dir(export_run):
    proc, out = export_run
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def reference_model(reference_model_dir):
    import torch

    from voxtral_tts.model.loading import load_model

    return load_model(reference_model_dir, weight_dtype=torch.float32, progress=False)


@pytest.fixture(scope="module")
def traced(reference_model_dir):
    """The modules the export converts, traced from a model of their own (the traced backbone owns its cache)."""
    import torch

    from voxtral_tts.export.coreml import trace_graphs
    from voxtral_tts.model.loading import load_model

    return trace_graphs(load_model(reference_model_dir, weight_dtype=torch.float32, progress=False), CAPACITY)


def spec_of(engine_dir: Path, name: str):
    return ct.models.MLModel(str(engine_dir / f"{name}.mlpackage"), skip_model_load=True).get_spec()


def relative(actual, expected) -> float:
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


# --- export ----------------------------------------------------------------------------------------

def test_cli_exports_and_validates_the_traced_modules(export_run):
    proc, out = export_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for label in ("traced backbone prefill", "traced backbone step", "traced flow_frame codes",
                  "traced flow_frame sampled codes", "traced flow_frame guided codes", "traced codec (padded chunk)"):
        assert label in proc.stdout
    assert sorted(p.name for p in out.glob("*.mlpackage")) == ["backbone.mlpackage", "codec.mlpackage",
                                                               "flow_frame.mlpackage"]


def test_manifest(engine_dir):
    engine = open_engine(engine_dir)  # packages (directories) are accepted as the manifest's files
    m = engine.manifest
    assert engine.target == "coreml" and engine.precision == "fp16" and engine.capacity == CAPACITY
    assert m["format_version"] == FORMAT_VERSION and m["deployment_target"] == "macOS15" and m["spec_version"] == 9
    assert m["codec_frames"] == 75
    assert {k: g["file"] for k, g in m["graphs"].items()} == {
        "backbone": "backbone.mlpackage", "flow_frame": "flow_frame.mlpackage", "codec": "codec.mlpackage"}
    assert m["graphs"]["backbone"]["inputs"] == [
        {"name": "embeds", "dtype": "float32", "shape": [1, [1, CAPACITY], 64]},
        {"name": "positions", "dtype": "int32", "shape": [[1, CAPACITY]]}]
    assert m["graphs"]["backbone"]["states"][0] == {"name": "cache_layers_0_k", "dtype": "float16",
                                                     "shape": [1, 2, CAPACITY, 32]}
    assert m["graphs"]["codec"]["inputs"] == [{"name": "codes", "dtype": "int32", "shape": [1, 75, 37]}]
    assert set(m["embeddings"]) == {"tokens", "codebooks"} and m["voices"] == ["casual_male", "neutral_female"]
    assert {"params_sha256", "checkpoint_sha256", "tekken_sha256"} <= set(engine.identity)
    assert m["exporter"]["coremltools"] == ct.__version__ and m["exporter"]["torch"]
    v = m["validation"]
    for label in ("traced flow_frame codes", "traced flow_frame sampled codes", "traced flow_frame guided codes"):
        assert v[label]["mismatches"] == 0 and v[label]["count"] == 4 * 37
    assert v["traced codec (padded chunk)"]["relative"] < 1e-5  # causal: end padding changes nothing
    assert v["traced backbone prefill"]["relative"] < 5e-3 and v["traced backbone step"]["relative"] < 5e-3
    if not ON_MAC:
        assert "macOS 15+" in v["coreml"]["skipped"]


def test_package_specs(engine_dir):
    from coremltools.proto import FeatureTypes_pb2 as ft

    f32, f16, i32 = (ft.ArrayFeatureType.FLOAT32, ft.ArrayFeatureType.FLOAT16, ft.ArrayFeatureType.INT32)

    def inputs(spec):
        out = {}
        for f in spec.description.input:
            arr = f.type.multiArrayType
            ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
            out[f.name] = (arr.dataType, ranges or list(arr.shape))
        return out

    specs = {name: spec_of(engine_dir, name) for name in ("backbone", "flow_frame", "codec")}
    for spec in specs.values():
        assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion == 9  # macOS 15 / iOS 18
    bb = specs["backbone"]
    assert inputs(bb) == {"embeds": (f32, [(1, 1), (1, CAPACITY), (64, 64)]), "positions": (i32, [(1, CAPACITY)])}
    assert [o.name for o in bb.description.output] == ["hidden"]
    states = {s.name: s.type.stateType.arrayType for s in bb.description.state}
    assert sorted(states) == [f"cache_layers_{i}_{kv}" for i in range(2) for kv in "kv"]
    for arr in states.values():
        assert arr.dataType == f16 and list(arr.shape) == [1, 2, CAPACITY, 32]
    assert inputs(specs["flow_frame"]) == {"hidden": (f32, [1, 64]), "noise": (f32, [1, 36]),
                                           "semantic_noise": (f32, [1, 8320]), "guidance": (f32, [1, 2])}
    (codes,) = specs["flow_frame"].description.output
    assert codes.name == "codes" and codes.type.multiArrayType.dataType == i32
    assert inputs(specs["codec"]) == {"codes": (i32, [1, 75, 37])}
    (audio,) = specs["codec"].description.output
    assert audio.name == "audio" and list(audio.type.multiArrayType.shape) == [1, 75 * 1920]


def test_fp16_keeps_positions_and_norm_statistics_in_float32(engine_dir):
    from coremltools.proto import MIL_pb2

    def ops(name):
        fn = spec_of(engine_dir, name).mlProgram.functions["main"]
        for op in fn.block_specializations[fn.opset].operations:
            if op.outputs:
                yield op.type, op.outputs[0].name, MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType)

    backbone = list(ops("backbone"))
    dtypes = {(kind, dtype) for kind, _, dtype in backbone}
    assert {("cos", "FLOAT32"), ("sin", "FLOAT32")} <= dtypes  # RoPE tables from positions
    assert ("mul", "FLOAT32") in {(k, d) for k, n, d in backbone if n == "angles"}
    for name in ("backbone", "flow_frame", "codec"):
        found = list(ops(name))
        norm = [d for k, _, d in found if k in ("pow", "reduce_mean", "rsqrt")]
        heavy = [d for k, _, d in found if k in ("linear", "matmul")]
        assert norm and set(norm) == {"FLOAT32"}, name
        assert heavy and set(heavy) == {"FLOAT16"}, name


def test_export_refuses_bad_options(reference_model_dir, tmp_path):
    proc = voxtral_export(reference_model_dir, "-o", tmp_path / "e", "--target", "coreml", "--precision", "int8")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "voxtral-export: error: precision 'int8' is not available for target coreml; " \
                                  "available: fp16, fp32"
    from voxtral_tts.export.build import build_engine

    with pytest.raises(VoxtralError, match="capacity must be at least 2"):
        build_engine(reference_model_dir, tmp_path / "e", target="coreml", capacity=1)


def test_engine_with_an_incomplete_package_is_refused(engine_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(engine_dir, broken)
    (broken / "codec.mlpackage" / "Manifest.json").unlink()
    with pytest.raises(EngineError, match=r"incomplete engine, missing codec\.mlpackage$"):
        open_engine(broken)


# --- what is converted, against the fixture -----------------------------------------------------------

def test_codec_end_padding_is_exact(reference_model, golden):
    """The claim the fixed 75-frame codec rests on, checked on the reference codec."""
    import torch

    from voxtral_tts.runtime.codec import pad_codec_chunk

    codes = golden["codes_decoded"].astype(np.int64)
    padded = pad_codec_chunk(codes, 75, np.int32)
    assert padded.shape == (1, 75, 37) and padded.dtype == np.int32
    assert (padded[0, 9:] == codes[-1]).all()
    with torch.no_grad():
        alone = reference_model.audio_tokenizer(torch.from_numpy(codes)[None])[0].numpy()
        chunk = reference_model.audio_tokenizer(torch.from_numpy(padded.astype(np.int64)))[0].numpy()
    assert chunk.shape == (75 * 1920,)
    assert relative(chunk[: 9 * 1920], alone) < 1e-5
    assert relative(alone, golden["waveform"]) < 1e-4
    # …and the padding frames' audio is not silence: trimming it matters
    assert np.abs(chunk[9 * 1920 :]).max() > 0.1 * np.abs(alone).max()


def test_traced_modules_reproduce_the_fixture(traced, golden):
    import torch

    from voxtral_tts.export.coreml import reset_cache

    bb = traced["backbone"]
    reset_cache(bb)
    with torch.no_grad():
        emb = torch.from_numpy(golden["input_embeddings"])[None]
        prefill = bb(emb, torch.arange(17))[0].numpy()
        # float16 keys/values, as in the Core ML state
        assert relative(prefill, golden["prefill_hidden"]) < 2e-3
        for n, feedback in enumerate(golden["feedback_embeddings"]):
            hidden = bb(torch.from_numpy(feedback)[None, None], torch.tensor([17 + n]))[0, 0].numpy()
            assert relative(hidden, golden["frame_hidden"][n + 1]) < 2e-3, n
        reset_cache(bb)
        for n, h in enumerate(golden["frame_hidden"]):
            codes = traced["flow_frame"](torch.from_numpy(h)[None], torch.from_numpy(golden["noise"][n])[None],
                                         torch.zeros(1, 8320), torch.tensor([[1.2, 1 - 1.2]]))
            np.testing.assert_array_equal(codes[0].numpy(), golden["codes"][n])
        from voxtral_tts.runtime.codec import pad_codec_chunk

        audio = traced["codec"](torch.from_numpy(pad_codec_chunk(golden["codes_decoded"], 75)))[0]
    assert relative(audio[: 9 * 1920].numpy(), golden["waveform"]) < 1e-4


# --- the backend ------------------------------------------------------------------------------------

class FakeState(dict):
    """MLState's ``read_state`` / ``write_state`` (by the package's state names,
    ``cache_layers_0_k``) over the traced module's buffers (``cache.layers.0.k``)."""

    def read_state(self, name):
        return self[name.replace("_", ".")].numpy().copy()

    def write_state(self, name, value):
        import torch

        target = self[name.replace("_", ".")]
        assert tuple(value.shape) == tuple(target.shape) and value.dtype == target.numpy().dtype
        target.copy_(torch.from_numpy(value))


class TracedPackage:
    """A package's traced module behind MLModel's ``predict`` / ``make_state``, checking every feed
    against the package's own spec: runs the backend's host code on Linux (no Core ML here). A
    state is a copy of the module's KV buffers, swapped in for each call."""

    def __init__(self, module, spec):
        self.module, self.spec = module, spec
        self.buffers = {n: b for n, b in module.named_buffers() if n.startswith("cache.")}

    def make_state(self):
        return FakeState({n: b.new_zeros(b.shape) for n, b in self.buffers.items()})

    def get_spec(self):
        return self.spec

    def predict(self, feeds, state=None):
        import torch
        from coremltools.proto import FeatureTypes_pb2 as ft

        numpy_dtype = {ft.ArrayFeatureType.FLOAT32: np.float32, ft.ArrayFeatureType.INT32: np.int32}
        declared = {f.name: f.type.multiArrayType for f in self.spec.description.input}
        assert set(feeds) == set(declared)
        for name, arr in declared.items():
            value = feeds[name]
            assert value.dtype == numpy_dtype[arr.dataType], name
            bounds = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges] or [(d, d) for d in arr.shape]
            assert len(value.shape) == len(bounds) and all(lo <= n <= hi for n, (lo, hi) in zip(value.shape, bounds))
        assert (state is not None) == bool(self.spec.description.state)
        with torch.no_grad():
            for name, buf in self.buffers.items():
                buf.copy_(state[name])
            # the traced modules take int64 positions / codes
            args = [torch.from_numpy(feeds[f.name]) for f in self.spec.description.input]
            out = self.module(*[a.long() if a.dtype == torch.int32 else a for a in args]).numpy()
            for name, buf in self.buffers.items():
                state[name].copy_(buf)
        (output,) = self.spec.description.output
        return {output.name: out.astype(np.int32) if output.name == "codes" else out}


@pytest.fixture(scope="module")
def host_tts(engine_dir, traced):
    from voxtral_tts.runtime.tts import read_model_dir

    models = {name: TracedPackage(traced[name], spec_of(engine_dir, name)) for name in traced}
    backend = CoreMLBackend(open_engine(engine_dir), CoreMLOptions(max_batch=2), models=models)
    return voxtral_tts.TTS(backend, *read_model_dir(engine_dir)[1:])


def test_backend_host_logic_against_the_fixture(host_tts, golden):
    backend = host_tts.backend
    assert backend.capacity == CAPACITY and backend.max_batch == 2
    r = host_tts.generate("Hello world.", voice="casual_male", noise=golden["noise"])
    np.testing.assert_array_equal(r.prompt_ids, golden["prompt_ids"])
    np.testing.assert_array_equal(r.codes, golden["codes_decoded"])  # fp16 cache: no code flipped here
    assert r.finished and relative(r.audio, golden["waveform"]) < 1e-4
    # more frames than one codec call: chunked with left context, equal to a one-shot decode
    long = host_tts.codes_to_audio(np.concatenate([golden["codes_decoded"]] * 10))
    assert long.shape == (90 * 1920,)
    assert relative(long[: 9 * 1920], golden["waveform"]) < 1e-4
    with pytest.raises(VoxtralError, match="beyond the KV cache"):
        step_one(backend, golden["feedback_embeddings"][0], CAPACITY)


def test_backend_feeds_the_semantic_noise(host_tts, golden):
    """The package's semantic_noise input: a forced code is taken, and zeros (no noise) are the argmax."""
    hidden, noise = golden["frame_hidden"][:2], golden["noise"][:2]
    semantic = np.zeros((2, 8320), np.float32)
    semantic[1, 100] = 1e4
    codes = host_tts.backend.flow(hidden, noise, semantic)
    np.testing.assert_array_equal(codes[0], golden["codes"][0])
    assert codes[1, 0] == 100
    np.testing.assert_array_equal(host_tts.backend.flow(hidden, noise), golden["codes"][:2])


def test_backend_feeds_the_guidance(host_tts, reference_model, golden):
    """The package's guidance input: each frame at its own expressiveness, as the reference computes
    it; the default's codes are the fixture's, another scale's differ."""
    import torch

    from voxtral_tts.runtime.guidance import guidance_weights

    hidden, noise = golden["frame_hidden"][:2], golden["noise"][:2]
    scales = np.array([1.2, 2.5])
    codes = host_tts.backend.flow(hidden, noise, None, scales)
    with torch.no_grad():
        expected = reference_model.acoustic_transformer(torch.from_numpy(hidden), torch.from_numpy(noise), None,
                                                        torch.from_numpy(guidance_weights(scales))).numpy()
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(codes[0], golden["codes"][0])
    assert (codes[1, 1:] != golden["codes"][1, 1:]).any()  # the acoustic codes move


def test_backend_sequences_in_flight_keep_their_own_state(host_tts, golden):
    from voxtral_tts.runtime.decoding import FrameLoop, Sequence
    from voxtral_tts.runtime.noise import NoiseSource

    voice = host_tts.voice_bank.get("casual_male")
    texts = ("Hello world.", "A second, longer sentence.")
    alone = [host_tts.generate(t, voice="casual_male", max_frames=8, seed=5).codes for t in texts]
    loop = FrameLoop(host_tts.backend)
    utterances = [Sequence(host_tts.prompt(t, voice)[1], NoiseSource(36, seed=5), 8) for t in texts]
    frames = {id(u): [] for u in utterances}
    for utterance in utterances:
        loop.join(utterance)
    while loop.active:
        for utterance, codes in loop.step():
            if codes is not None:
                frames[id(utterance)].append(codes)
    for utterance, solo in zip(utterances, alone):
        np.testing.assert_array_equal(np.stack(frames[id(utterance)]), solo)


def test_runtime_module_is_torch_free():
    code = ("import sys, voxtral_tts.runtime.backends.coreml; "
            "assert 'torch' not in sys.modules and 'coremltools' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(ON_MAC, reason="checks the refusal off macOS")
def test_backend_refuses_off_macos(engine_dir):
    from voxtral_tts.runtime.backends import default_backend

    assert default_backend(engine_dir) == "coreml"
    with pytest.raises(VoxtralError) as info:
        voxtral_tts.load(engine_dir)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the coreml backend runs on macOS 15+ (this is Linux)")
    assert "--backend onnxruntime" in message


@pytest.mark.skipif(ON_MAC, reason="checks the refusal off macOS")
def test_voxtral_run_refuses_off_macos_in_one_line(engine_dir, tmp_path):
    exe = shutil.which("voxtral-run")
    cmd = [exe] if exe else [sys.executable, "-m", "voxtral_tts.cli"]
    proc = subprocess.run(cmd + [str(engine_dir), "-t", "Hi.", "-o", str(tmp_path / "a.wav")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxtral-run: error: the coreml backend runs on macOS 15+")


@pytest.mark.skipif(ON_MAC, reason="on macOS the check runs Core ML for real (test_coreml_prediction_*)")
def test_export_check_of_a_coreml_engine_off_macos_is_one_line(engine_dir, reference_model_dir):
    """``voxtral-export --check`` validates with Core ML, which needs macOS: one clear line here."""
    proc = voxtral_export(reference_model_dir, "-o", engine_dir, "--check", "-q")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the coreml backend runs on macOS 15+" in lines[0], proc.stderr


def test_backend_option_and_engine_errors(engine_dir, reference_model_dir, tmp_path):
    with pytest.raises(VoxtralError, match="needs an engine directory"):
        CoreMLBackend.from_path(reference_model_dir)
    with pytest.raises(VoxtralError, match="--threads applies to the onnxruntime backend"):
        CoreMLBackend.from_path(engine_dir, load_plan("coreml", threads=2).options)
    with pytest.raises(VoxtralError, match="max_batch must be between 1 and 64, got 0"):
        CoreMLBackend.from_path(engine_dir, CoreMLOptions(max_batch=0))
    with pytest.raises(VoxtralError, match=f"KV cache holds {CAPACITY} positions"):
        CoreMLBackend.from_path(engine_dir, CoreMLOptions(capacity=4096))
    with pytest.raises(VoxtralError, match="unknown Core ML device 'cuda'"):
        CoreMLBackend.from_path(engine_dir, CoreMLOptions(device="cuda"))
    other = tmp_path / "onnx-like"
    shutil.copytree(engine_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "target": "onnx"}))
    with pytest.raises(VoxtralError, match="is a onnx engine; the coreml backend runs engines exported with"):
        CoreMLBackend.from_path(other)


# --- Core ML prediction (macOS 15+ only) ------------------------------------------------------------

@needs_coreml
def test_coreml_prediction_stage_by_stage(engine_dir, golden):
    """fp16 moves some codes, so each stage is fed the fixture's inputs, not its own outputs."""
    backend = CoreMLBackend.from_path(engine_dir)
    hidden = backend.prefill(golden["input_embeddings"])
    assert relative(hidden, golden["frame_hidden"][0]) < 2e-2
    for n, feedback in enumerate(golden["feedback_embeddings"]):
        assert relative(step_one(backend, feedback, 17 + n), golden["frame_hidden"][n + 1]) < 2e-2, n
    codes = np.stack([flow_one(backend, h, x) for h, x in zip(golden["frame_hidden"], golden["noise"])])
    assert codes.dtype == np.int64 and codes.shape == (10, 37)
    assert (codes[:, 0] == golden["codes"][:, 0]).all()  # semantic codes and the stop at frame 9
    assert (codes != golden["codes"]).mean() <= 0.1
    audio = backend.codec(golden["codes_decoded"])
    assert audio.shape == (9 * 1920,) and relative(audio, golden["waveform"]) < 2e-2


@needs_coreml
def test_coreml_generates_end_to_end(engine_dir, golden):
    tts = voxtral_tts.load(engine_dir)
    assert type(tts.backend).__name__ == "CoreMLBackend"
    r = tts.generate("Hello world.", voice="casual_male", noise=golden["noise"])
    np.testing.assert_array_equal(r.prompt_ids, golden["prompt_ids"])
    assert r.audio.shape == (r.n_frames * 1920,) and np.isfinite(r.audio).all() and r.n_frames >= 1
