"""ONNX export and the torch-free ONNX Runtime backend: fixture, parity with torch, streaming,
engine checks, and the CLIs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.engine import MANIFEST, check_engine_matches, open_engine  # noqa: E402
from voxtral_tts.errors import CapacityError, EngineError, VoxtralError  # noqa: E402
from voxtral_tts.testing import flow_one  # noqa: E402


@pytest.fixture(scope="module")
def ort_tts(reference_engine_dir):
    return voxtral_tts.load(reference_engine_dir)


def test_engine_manifest(reference_engine_dir):
    engine = open_engine(reference_engine_dir)
    assert engine.target == "onnx" and engine.precision == "fp32" and engine.capacity == 4096
    assert set(engine.manifest["graphs"]) == {"backbone", "flow_frame", "codec", "flow_velocity"}
    backbone = engine.graph("backbone")
    names = [i["name"] for i in backbone["inputs"]]
    assert names[:5] == ["embeds", "positions", "past_lengths", "past_k.0", "past_v.0"]
    assert backbone["outputs"] == ["hidden", "present_k", "present_v"]
    assert backbone["data_files"] == ["backbone.onnx.data"]
    validation = engine.manifest["validation"]
    assert (
        validation["flow_frame codes"]["mismatches"] == 0 and validation["flow_frame sampled codes"]["mismatches"] == 0
    )
    assert max(v["relative"] for v in validation.values() if "relative" in v) < 1e-4
    assert {"params_sha256", "checkpoint_sha256", "tekken_sha256"} <= set(engine.identity)
    assert engine.manifest["exporter"]["torch"] and engine.manifest["exporter"]["onnxruntime"]


def test_exporting_again_in_one_process_reuses_the_trace(reference_engine_dir, reference_model_dir, tmp_path, caplog):
    """A second export of the same architecture (another precision, the tests) reuses each traced
    graph: the files are byte for byte those of the first export."""
    import filecmp
    import logging

    from voxtral_tts.export.build import build_engine

    with caplog.at_level(logging.INFO, logger="voxtral_tts.export.onnx"):
        again = build_engine(reference_model_dir, tmp_path / "again", with_velocity=True, validate=False,
                             progress=False)
    assert sum("traced before in this process" in r.message for r in caplog.records) == 4
    for name in ("backbone", "flow_frame", "codec", "flow_velocity"):
        for file in (f"{name}.onnx", f"{name}.onnx.data"):
            assert filecmp.cmp(again / file, reference_engine_dir / file, shallow=False), file


def test_export_says_what_it_exports_once_and_its_bars_count(reference_engine_dir, reference_model_dir, tmp_path,
                                                              caplog, capsys):
    """The checkpoint's count and storage dtype (from the file: BF16) beside the engine's own
    precision, in one line; each graph's bar counts the tensors written to its data file, to the
    last, with no remaining time or rate (the first tensor waits for the trace)."""
    import logging
    import re

    from voxtral_tts.export.build import build_engine

    out = tmp_path / "int8"
    with caplog.at_level(logging.INFO, logger="voxtral_tts"):
        build_engine(reference_model_dir, out, precision="int8", with_velocity=True, validate=False)
    assert [r.getMessage() for r in caplog.records if "parameters" in r.getMessage()] == [
        f"exporting {reference_model_dir} (2.2 M parameters stored as BF16) to an ONNX int8 engine in {out}"]
    assert sum(r.getMessage().startswith("engine written to") for r in caplog.records) == 1
    drawn = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if "%|" in line]
    for name in ("backbone", "flow_frame", "codec", "flow_velocity"):
        states = [line for line in drawn if line.startswith(f"{name}.onnx:")]
        done, total = re.search(r"(\d+)/(\d+) tensor", states[-1]).groups()
        assert done == total and all("<" not in s and "/s" not in s for s in states), states


def test_graphs_have_no_if_nodes_and_a_static_cache_interface(reference_engine_dir):
    import onnx

    for name in ("backbone", "flow_frame", "codec"):
        model = onnx.load(str(reference_engine_dir / f"{name}.onnx"), load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        assert "If" not in ops and "Loop" not in ops, (name, ops)


def test_fixture_reproduced_by_onnxruntime(ort_tts, golden):
    assert type(ort_tts.backend).__name__ == "OnnxBackend"
    r = ort_tts.generate("Hello world.", voice="casual_male", noise=golden["noise"])
    np.testing.assert_array_equal(r.prompt_ids, golden["prompt_ids"])
    np.testing.assert_array_equal(r.codes, golden["codes_decoded"])  # exact, with the stop at frame 9
    err = float(np.abs(r.audio - golden["waveform"]).max() / np.abs(golden["waveform"]).max())
    print(f"onnxruntime waveform vs fixture: {err:.2e} of peak")
    assert r.finished and err < 1e-4


def test_velocity_graph_matches_fixture(reference_engine_dir, golden):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(reference_engine_dir / "flow_velocity.onnx"), providers=["CPUExecutionProvider"])
    h = golden["frame_hidden"][:1]
    t_grid = np.linspace(0, 1, 8, dtype=np.float32)
    for k in range(7):
        x = golden["fm_x_t_frame0"][k : k + 1]
        cond = sess.run(None, {"x": x, "t": t_grid[k : k + 1], "hidden": h})[0][0]
        uncond = sess.run(None, {"x": x, "t": t_grid[k : k + 1], "hidden": np.zeros_like(h)})[0][0]
        ref = golden["fm_velocity_frame0"][k]
        assert np.abs(cond - ref[0]).max() <= 1e-4 * np.abs(ref).max()
        assert np.abs(uncond - ref[1]).max() <= 1e-4 * np.abs(ref).max()


def test_streaming_equals_one_shot(tiny_engine_dir):
    tts = voxtral_tts.load(tiny_engine_dir)
    one_shot = tts.synthesize("Streaming must equal one-shot output.", voice="casual_male", max_frames=70, seed=11)
    chunks = list(tts.stream("Streaming must equal one-shot output.", voice="casual_male", max_frames=70, seed=11))
    sizes = [len(c) // 1920 for c in chunks]
    assert sizes == [2, 3, 5, 5, 5, 5, 25, 20]  # the default schedule, the rest at the end
    diff = float(np.abs(np.concatenate(chunks) - one_shot.audio).max())
    print(f"streaming vs one-shot max abs diff: {diff:.2e}")
    assert diff < 1e-4


@pytest.mark.parametrize("voice", ["casual_male", "neutral_female"])
def test_codes_equal_torch_backend(tiny_model_dir, tiny_engine_dir, voice):
    pytest.importorskip("torch")
    ort_tts = voxtral_tts.load(tiny_engine_dir)
    torch_tts = voxtral_tts.load(tiny_model_dir, backend="torch", dtype="fp32", progress=False)
    for i, text in enumerate(["Hello world.", "A second, longer sentence to speak!", "Numbers: 1, 2, 3?"]):
        a = ort_tts.generate(text, voice=voice, max_frames=12, seed=100 + i)
        b = torch_tts.generate(text, voice=voice, max_frames=12, seed=100 + i)
        np.testing.assert_array_equal(a.prompt_ids, b.prompt_ids)
        np.testing.assert_array_equal(a.codes, b.codes)
        assert np.abs(a.audio - b.audio).max() <= 1e-4 * np.abs(b.audio).max()


def test_runtime_never_imports_torch(reference_engine_dir):
    code = (
        "import sys, numpy as np, voxtral_tts\n"
        f"tts = voxtral_tts.load({str(reference_engine_dir)!r})\n"
        "r = tts.generate('Hello world.', voice='casual_male', seed=1234, max_frames=16)\n"
        "chunks = list(tts.stream('Hello world.', voice='casual_male', seed=1234, max_frames=16))\n"
        "assert r.n_frames == 9, r.n_frames\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print('torch-free ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "torch-free ok" in proc.stdout


def test_capacity_is_a_runtime_setting(reference_engine_dir):
    tts = voxtral_tts.load(reference_engine_dir, capacity=20)
    assert tts.backend.k_cache.shape[1] == 20
    r = tts.generate("Hello world.", voice="casual_male", seed=1234, max_frames=4)  # 17 + 4 - 1 positions
    assert r.n_frames == 4
    with pytest.raises(CapacityError, match="KV cache holds 20"):
        tts.generate("Hello world.", voice="casual_male", seed=1234, max_frames=5)


def test_missing_execution_provider_is_a_clear_error(reference_engine_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(
        VoxtralError, match="needs onnxruntime.s CUDAExecutionProvider, which this onnxruntime build lacks"
    ):
        voxtral_tts.load(reference_engine_dir, device="cuda")


# --- engine checks -----------------------------------------------------------------------------------

@pytest.fixture
def engine_copy(reference_engine_dir, tmp_path):
    return shutil.copytree(reference_engine_dir, tmp_path / "engine")


def test_incomplete_engine(engine_copy):
    (engine_copy / "codec.onnx.data").unlink()
    with pytest.raises(EngineError, match="incomplete engine, missing codec.onnx.data"):
        open_engine(engine_copy)


def test_engine_from_another_version(engine_copy):
    manifest = json.loads((engine_copy / MANIFEST).read_text())
    manifest["format_version"] = 99
    (engine_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="format version 99"):
        voxtral_tts.load(engine_copy)


def test_engine_for_another_model(engine_copy):
    params = json.loads((engine_copy / "params.json").read_text())
    params["n_layers"] = 3
    (engine_copy / "params.json").write_text(json.dumps(params))
    with pytest.raises(EngineError, match="params.json differs"):
        open_engine(engine_copy)


def test_identity_mismatch(reference_engine_dir):
    engine = open_engine(reference_engine_dir)
    other = dict(engine.identity, checkpoint_sha256="0" * 64)
    with pytest.raises(EngineError, match="built for another model \\(checkpoint_sha256 differ\\)"):
        check_engine_matches(engine, other)


def test_not_an_engine(tmp_path):
    with pytest.raises(EngineError, match="not an engine directory"):
        open_engine(tmp_path)


# --- CLIs --------------------------------------------------------------------------------------------

def _cli(name, *args, env=None):
    exe = shutil.which(name)
    module = {"voxtral-run": "voxtral_tts.cli", "voxtral-export": "voxtral_tts.export.cli"}[name]
    cmd = [exe] if exe else [sys.executable, "-m", module]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_export_check_on_existing_engine(reference_engine_dir, reference_model_dir):
    proc = _cli("voxtral-export", reference_model_dir, "-o", reference_engine_dir, "--check")
    assert proc.returncode == 0, proc.stderr
    assert "backbone decode step" in proc.stdout and "every graph within its precision's tolerance" in proc.stdout
    assert f"validating the fp32 graphs of {reference_engine_dir} against the PyTorch reference, computed in " \
        "float32:" in proc.stdout.splitlines()


def test_export_errors_are_one_line(tmp_path):
    proc = _cli("voxtral-export", tmp_path / "nowhere", "-o", tmp_path / "e")
    assert proc.returncode == 2 and proc.stderr.startswith("voxtral-export: error:")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_voxtral_run_on_engine_and_on_model_dir_via_cache(reference_engine_dir, tiny_model_dir, tiny_engine_dir,
                                                          engine_cache, tmp_path):
    out = tmp_path / "a.wav"
    proc = _cli(
        "voxtral-run", reference_engine_dir, "-t", "Hello world.", "-v", "casual_male", "--seed", "1234", "-o", out
    )
    assert proc.returncode == 0, proc.stderr
    assert "9 frames" in proc.stderr
    # the session's tiny engine was exported on first use into this cache (conftest): reused here
    args = (tiny_model_dir, "--backend", "onnxruntime", "-t", "Hi.", "--max-frames", "3", "--seed", "4")
    cached = _cli("voxtral-run", *args, "-o", tmp_path / "b.wav", env={"VOXTRAL_TTS_CACHE": str(engine_cache)})
    assert cached.returncode == 0 and f"using the cached engine {tiny_engine_dir}" in cached.stderr, cached.stderr
    direct = _cli("voxtral-run", tiny_engine_dir, *args[3:], "-o", tmp_path / "c.wav")
    assert direct.returncode == 0 and (tmp_path / "b.wav").read_bytes() == (tmp_path / "c.wav").read_bytes()


def test_model_dir_is_exported_on_first_use_only(tiny_model_dir, tiny_engine_dir, tmp_path, monkeypatch):
    """First use exports into a staging directory renamed into place; later uses never export."""
    from voxtral_tts.export import build, engine_cache

    calls = []

    def export(model_dir, out, precision, progress):  # stands in for the real export (done by conftest)
        calls.append(out)
        shutil.copytree(tiny_engine_dir, out)

    monkeypatch.setenv("VOXTRAL_TTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "build_engine", export)
    first = engine_cache.cached_engine(tiny_model_dir, progress=False)
    second = engine_cache.cached_engine(tiny_model_dir, progress=False)
    assert len(calls) == 1 and calls[0].name.startswith(first.path.name + ".tmp")
    assert first.path == second.path and first.path.parent == tmp_path / "cache" / "engines"
    assert not calls[0].exists() and tiny_engine_dir.name == first.path.name


def test_fp16_engine(fp16_engine_dir, golden):
    """fp16 graphs (the TensorRT target's, run here in ONNX Runtime): float16 weights and matmuls,
    float32 norms/softmax/semantic logits; checked stage by stage against the fixture (golden
    inputs fed to each graph)."""
    import onnx

    path = fp16_engine_dir
    engine = open_engine(path)
    assert engine.precision == "fp16" and engine.manifest["tensorrt"]["validated_graphs"] == "fp16"
    assert engine.manifest["validation"]["backbone prefill hidden"]["relative"] < 2e-2
    graph = onnx.load(str(path / "backbone.onnx"), load_external_data=False).graph
    half = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert "backbone.layers.0.feed_forward.w1.weight.T.fp16" in half
    flow = onnx.load(str(path / "flow_frame.onnx"), load_external_data=False).graph
    assert not any("semantic_codebook_output" in i.name and i.data_type == onnx.TensorProto.FLOAT16
                   for i in flow.initializer)

    tts = voxtral_tts.load(path, backend="onnxruntime")
    hidden = tts.backend.prefill(golden["input_embeddings"])
    err = np.abs(hidden - golden["prefill_hidden"][-1]).max() / np.abs(golden["prefill_hidden"][-1]).max()
    print(f"fp16 prefill hidden: {err:.2e} of peak")
    assert err < 2e-2
    mismatched = sum(int((flow_one(tts.backend, h, x) != c).sum())
                     for h, x, c in zip(golden["frame_hidden"], golden["noise"], golden["codes"]))
    print(f"fp16 flow frame: {mismatched} of {golden['codes'].size} codes differ from the fixture")
    assert mismatched <= 0.1 * golden["codes"].size


def test_runtime_benchmark_runs_on_an_engine(reference_model_dir, reference_engine_dir):
    """benchmarks/bench_runtime.py's per-backend run (what its table is made of) on the fixture's
    engine: finite figures for each part of a frame, and a time to first audio."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_runtime.py"
    proc = subprocess.run([sys.executable, str(script), str(reference_model_dir), "--engine", str(reference_engine_dir),
                           "--backend", "onnxruntime", "--frames", "3", "--prompt-tokens", "40", "--repeats", "1",
                           "--batches", "1", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("frame_ms", "backbone_ms", "flow_ms", "ttfa_ms", "rtf"):
        assert 0 < row[key] < 1e5, (key, row)


def test_longform_benchmark_runs_on_an_engine(reference_engine_dir):
    """benchmarks/bench_longform.py (issue #26's figures) on the fixture's engine: each job at both
    batch sizes does the same work, and the ratios are printed."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_longform.py"
    proc = subprocess.run([sys.executable, str(script), str(reference_engine_dir), "--frames", "2", "--repeats", "1",
                           "--voice", "casual_male"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("one 8-part", "20 texts", "a lone"))]
    assert len(rows) == 6
    assert {tuple(row[-4:]) for row in rows[0:2]} == {("8", "×", "16", "fr")}  # 8 parts of 2 frames, both sizes
    assert {tuple(row[-4:]) for row in rows[2:4]} == {("20", "×", "40", "fr")}
    assert "the time (target ≤ 1.05)" in proc.stdout and "utterances/min" in proc.stdout
