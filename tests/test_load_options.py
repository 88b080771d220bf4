"""The typed load options (voxtral_tts.runtime.load_options): each bad value is one line where its
dataclass is built, an option of another backend is one line naming that backend, an unknown option
is refused before anything is read, and ``voxtral_tts.load`` / ``voxtral-run`` build them once."""

from __future__ import annotations

import dataclasses

import pytest

import voxtral_tts
from voxtral_tts.api import choose
from voxtral_tts.config import ModelConfig
from voxtral_tts.errors import VoxtralError
from voxtral_tts.runtime.backend import Backend
from voxtral_tts.runtime.load_options import (OPTIONS, CoreMLOptions, LoadOptions, OnnxOptions, TensorRTOptions,
                                              TorchOptions, TTSOptions, load_plan)


def one_line(match: str):
    """pytest.raises for a VoxtralError of one line matching ``match``."""
    return pytest.raises(VoxtralError, match=rf"^(?!.*\n).*{match}")


@pytest.mark.parametrize("build, message", [
    (lambda: LoadOptions(max_batch=0), "max_batch must be between 1 and 64, got 0"),
    (lambda: OnnxOptions(max_batch=65), "max_batch must be between 1 and 64, got 65"),
    (lambda: TorchOptions(capacity="big"), "capacity must be a whole number, got 'big'"),
    (lambda: CoreMLOptions(device=3), "device must be a name such as cpu or cuda, got 3"),
    (lambda: TorchOptions(dtype="fp8"), "unknown dtype 'fp8'; choose one of fp32, bf16, fp16"),
    (lambda: TorchOptions(weight_dtype="int4"), "unknown weight_dtype 'int4'"),
    (lambda: OnnxOptions(threads=0), "threads must be at least 1, got 0"),
    (lambda: OnnxOptions(kv_placement="disk"), "unknown kv_placement 'disk'; choose one of host, device"),
    (lambda: TTSOptions(prefix_cache_mb=-1), "the prefix cache's budget must be at least 0 MB, got -1"),
    (lambda: TTSOptions(prefix_cache="yes"), "prefix_cache must be True or False"),
    (lambda: TTSOptions(stream_chunks="0,5"), "stream schedule"),
    (lambda: load_plan("tpu"), "unknown backend 'tpu'; available: torch, onnxruntime, tensorrt, coreml"),
    (lambda: load_plan("torch", colour="blue"), "unknown option 'colour'; options: capacity, compile"),
])
def test_each_bad_value_is_one_line(build, message):
    with one_line(message):
        build()


@pytest.mark.parametrize("backend, option, value, message", [
    ("torch", "threads", 2, "--threads applies to the onnxruntime backend"),
    ("coreml", "threads", 2, "--threads applies to the onnxruntime backend"),
    ("tensorrt", "kv_placement", "device", "--kv-placement applies to the onnxruntime backend"),
    ("onnxruntime", "dtype", "bf16",
     r"--dtype applies to the torch backend \(an engine's precision is chosen at export\)"),
    ("tensorrt", "compile", True, "--compile applies to the torch backend"),
    ("coreml", "cuda_graphs", False, "--cuda-graphs applies to the torch backend"),
])
def test_an_option_of_another_backend_is_one_line(backend, option, value, message):
    with one_line(message):
        load_plan(backend, **{option: value})


def test_not_given_is_none_or_a_flags_default():
    """The command lines pass every flag: None (and --compile's False) are the backend's defaults."""
    plan = load_plan("onnxruntime", threads=None, dtype=None, compile=False, capacity=None, prefix_cache_mb=None,
                     stream_chunks=None, max_batch=3, prefix_cache=False)
    assert plan.backend == "onnxruntime" and plan.options == OnnxOptions(max_batch=3)
    assert plan.tts == TTSOptions(prefix_cache=False)
    assert load_plan("torch", threads=None, dtype="fp32").options == TorchOptions(dtype="fp32")
    assert TTSOptions(stream_chunks="5, 25").stream_chunks == (5, 25)


def test_options_are_frozen_and_each_backend_names_its_type():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TorchOptions().dtype = "bf16"
    assert [cls.backend for cls in (TorchOptions, OnnxOptions, TensorRTOptions, CoreMLOptions)] == list(OPTIONS)
    from voxtral_tts.runtime.backends import BACKENDS, backend_class

    pytest.importorskip("torch")
    assert tuple(OPTIONS) == BACKENDS
    for name in BACKENDS:
        assert backend_class(name).options_type is OPTIONS[name]


def test_an_unknown_option_is_refused_before_anything_is_read(tmp_path):
    with one_line("unknown option 'temprature'"):
        voxtral_tts.load(tmp_path / "missing", temprature=0.5)


def test_the_default_choice_becomes_the_plan(tiny_model_dir, tiny_engine_dir, monkeypatch):
    monkeypatch.setattr("voxtral_tts.api.cpu_bf16", lambda: "AMX")
    assert choose(tiny_model_dir).options == TorchOptions(dtype="bf16")
    assert choose(tiny_model_dir, threads=2).options == OnnxOptions(threads=2)
    assert choose(tiny_engine_dir, max_batch=2).options == OnnxOptions(max_batch=2)
    with one_line("--dtype applies to the torch backend"):
        choose(tiny_engine_dir, dtype="fp32")


def count_builds(monkeypatch) -> dict:
    """How many times each options type is built (checked) from now on."""
    counts: dict[str, int] = {}
    for cls in (TTSOptions, OnnxOptions):
        check = cls.__post_init__

        def counted(self, check=check, name=cls.__name__):
            counts[name] = counts.get(name, 0) + 1
            check(self)

        monkeypatch.setattr(cls, "__post_init__", counted)
    return counts


def test_load_builds_the_options_once(tiny_engine_dir, monkeypatch):
    pytest.importorskip("onnxruntime")
    counts = count_builds(monkeypatch)
    tts = voxtral_tts.load(tiny_engine_dir, max_batch=2, threads=1, prefix_cache_mb=64, stream_chunks="5,25")
    assert counts == {"OnnxOptions": 1, "TTSOptions": 1}
    assert tts.backend.max_batch == 2 and tts.scheduler.stream_chunks == (5, 25)
    assert tts.scheduler.prefix_cache.budget_bytes == 64 << 20


def test_voxtral_run_builds_the_options_once(tiny_engine_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from voxtral_tts.cli import main

    counts = count_builds(monkeypatch)
    monkeypatch.setattr("logging.basicConfig", lambda **kwargs: None)  # the test process's logging stays as is
    out = tmp_path / "a.wav"
    assert main([str(tiny_engine_dir), "-t", "Hi.", "-o", str(out), "--max-frames", "2", "--threads", "1", "-q"]) == 0
    assert counts == {"OnnxOptions": 1, "TTSOptions": 1} and out.stat().st_size > 44


def test_batch_prefill_only_where_the_backend_can(tiny_engine_dir):
    class OneByOne(Backend):
        name = "one-by-one"

        @classmethod
        def from_path(cls, path, options=None):
            return cls(ModelConfig.from_file(path), 16)

        def _prefill(self, items):
            raise AssertionError

        _step = _flow = _codec = _prefill

    backend = OneByOne.from_path(tiny_engine_dir)
    assert not backend.can_batch_prefill and not backend.batch_prefill
    backend.batch_prefill = False
    with one_line("the one-by-one backend cannot prefill several prompts in one call"):
        backend.batch_prefill = True
