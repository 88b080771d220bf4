"""The default path: detected from the CPU's features, chosen at load time, logged in one line —
torch in bf16 where the CPU has native bf16 dot products, else an ONNX Runtime fp32 engine
exported once into the cache (with a disk-space check) — and float32 one option away."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import voxtral_tts
from voxtral_tts import api
from voxtral_tts.errors import VoxtralError
from voxtral_tts.runtime.hardware import bf16_from_cpuinfo

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {extra}\n"


def test_bf16_is_detected_from_cpuinfo():
    assert bf16_from_cpuinfo(X86.format(extra="avx512_bf16 avx512_vnni")) == "AVX-512 BF16"
    assert bf16_from_cpuinfo(X86.format(extra="avx512_bf16 amx_bf16 amx_tile")) == "AMX-BF16"
    assert bf16_from_cpuinfo("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n") == "Arm BF16"
    assert bf16_from_cpuinfo(X86.format(extra="avx512_vnni")) is None
    assert bf16_from_cpuinfo("processor\t: 0\nFeatures\t: fp asimd\n") is None


@pytest.mark.parametrize("feature", ["AVX-512 BF16", None])
def test_default_choice_follows_the_cpu(monkeypatch, caplog, tiny_model_dir, tiny_engine_dir, feature):
    monkeypatch.setattr(api, "cpu_bf16", lambda: feature)
    with caplog.at_level(logging.INFO, logger="voxtral_tts.api"):
        choice = api.default_choice(tiny_model_dir)
    lines = [r.getMessage() for r in caplog.records]
    if feature:
        assert choice == ("torch", "bf16") and lines == [
            "this CPU has AVX-512 BF16, native bf16 dot products: the torch backend by default "
            "(--dtype fp32 for the float32 reference)"]
    else:
        assert choice == ("onnxruntime", None) and len(lines) == 1
        assert lines[0].startswith("this CPU has no native bf16 dot products")
    # what the caller names wins; an engine runs on its own target
    assert api.default_choice(tiny_model_dir, dtype="fp32") == ("torch", "fp32")
    assert api.default_choice(tiny_model_dir, device="cuda") == ("torch", None)
    assert api.default_choice(tiny_model_dir, threads=2) == ("onnxruntime", None)
    assert api.default_choice(tiny_engine_dir) == ("onnxruntime", None)


def test_load_without_native_bf16_runs_the_cached_onnx_engine(monkeypatch, tiny_model_dir, tiny_engine_dir):
    """No bf16 on the CPU: the model directory's fp32 ONNX engine from the cache (the conftest
    exported it there on first use), giving exactly the engine's output."""
    monkeypatch.setattr(api, "cpu_bf16", lambda: None)
    tts = voxtral_tts.load(tiny_model_dir, progress=False)
    assert tts.backend.name == "onnxruntime" and tts.backend.engine.path == tiny_engine_dir
    expected = voxtral_tts.load(tiny_engine_dir).generate("Hi.", seed=1, max_frames=3)
    np.testing.assert_array_equal(tts.generate("Hi.", seed=1, max_frames=3).audio, expected.audio)


def test_load_with_native_bf16_runs_torch_in_bf16(monkeypatch, tiny_model_dir):
    torch = pytest.importorskip("torch")
    from voxtral_tts.runtime.backends import torch as torch_backend

    monkeypatch.setattr(api, "cpu_bf16", lambda: "AVX-512 BF16")
    tts = voxtral_tts.load(tiny_model_dir, progress=False)
    assert tts.backend.name == "torch" and tts.backend.dtype == torch.bfloat16
    assert voxtral_tts.load(tiny_model_dir, dtype="fp32", progress=False).backend.dtype == torch.float32
    # the torch backend's own default follows the same detection
    monkeypatch.setattr(torch_backend, "cpu_bf16", lambda: None)
    assert voxtral_tts.load(tiny_model_dir, backend="torch", progress=False).backend.dtype == torch.float32


def test_export_on_first_use_checks_disk_space_first(monkeypatch, tiny_model_dir, tmp_path):
    import shutil

    from voxtral_tts.export import build, engine_cache

    monkeypatch.setenv("VOXTRAL_TTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(build, "build_engine", lambda *a, **k: pytest.fail("exported despite the full disk"))
    with pytest.raises(VoxtralError, match=r"needs about .* GB in .*cache/engines, which has 0.0 GB free") as info:
        engine_cache.cached_engine(tiny_model_dir, progress=False)
    assert "\n" not in str(info.value)
