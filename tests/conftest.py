"""Shared test fixtures: paths to the ground truth in ../shared, read in place (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; VOXTRAL_TTS_SHARED names another copy (a GPU machine that
# receives the checkout alone)
SHARED = Path(os.environ.get("VOXTRAL_TTS_SHARED", ROOT.parent / "shared"))
SPEC = SHARED / "spec"
REFERENCE_TINY = SHARED / "fixtures" / "reference-tiny"
REFERENCE_MODEL = REFERENCE_TINY / "model"


# Fixtures that make every test using them slow (`pytest -m "not slow"` leaves those tests out): the
# engine exports, tens of seconds each on first use (this file's three and test_coreml's Core ML
# conversion), Ray Serve (test_ray_serve) and the browser (test_web). A fixture that reaches one of
# those through request.getfixturevalue marks its slow parameters itself (test_expressiveness).
# test_voice_create's round_trip: a codec inversion, about 10 s.
SLOW_FIXTURES = {"reference_engine_dir", "tiny_engine_dir", "fp16_engine_dir", "export_run", "ray_serve", "browser",
                 "round_trip"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"ground truth missing: {path} (the tests read ../shared beside the checkout)")
    return path


@pytest.fixture(autouse=True)
def _root_logging():
    """Each test leaves the root logger as it found it: a CLI's main() run in-process sets up the
    process's logging (voxtral-serve: a handler on the sys.stderr of the moment, which capsys
    closes when its test ends), and a later test's log lines must not reach that handler."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    return _require(SPEC)


@pytest.fixture(scope="session")
def reference_model_dir() -> Path:
    return _require(REFERENCE_MODEL)


@pytest.fixture(scope="session")
def golden() -> dict:
    with np.load(_require(REFERENCE_TINY / "golden_A.npz")) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A freshly generated random model in the released format, with other sizes than the fixture."""
    from voxtral_tts.testing import tiny_params, write_random_model

    params = tiny_params(dim=48, n_layers=2, head_dim=12, hidden_dim=96, n_heads=4, n_kv_heads=1,
                         vocab_size=1536, flow_layers=1, codec_dim=32, codec_heads=2, semantic_dim=16)
    return write_random_model(tmp_path_factory.mktemp("tiny") / "model", params, seed=7)


@pytest.fixture(scope="session")
def reference_engine_dir(tmp_path_factory, reference_model_dir) -> Path:
    """The fixture's model exported to ONNX (with the raw velocity graph), validated on export."""
    pytest.importorskip("onnx")
    from voxtral_tts.export.build import build_engine

    return build_engine(reference_model_dir, tmp_path_factory.mktemp("engines") / "reference", with_velocity=True,
                        progress=False)


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory) -> Path:
    """The user cache of this test session ($VOXTRAL_TTS_CACHE, for this process and the commands it
    starts): engines exported on first use land here, never in the real user's cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOXTRAL_TTS_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_engine_dir(engine_cache, tiny_model_dir) -> Path:
    """The tiny model's ONNX engine, made the way ``voxtral_tts.load(MODEL_DIR, backend="onnxruntime")``
    makes it: exported on first use (validated) into the session's engine cache."""
    pytest.importorskip("onnx")
    from voxtral_tts.export.engine_cache import cached_engine

    return cached_engine(tiny_model_dir, progress=False).path


@pytest.fixture(scope="session")
def fp16_engine_dir(tmp_path_factory, reference_model_dir) -> Path:
    """``voxtral-export --target tensorrt`` of the fixture's model, in process: fp16 ONNX graphs,
    validated against the reference on export, TensorRT plans deferred (no TensorRT here)."""
    pytest.importorskip("onnx")
    from voxtral_tts.export.cli import main

    out = tmp_path_factory.mktemp("engines") / "fp16"
    assert main([str(reference_model_dir), "-o", str(out), "--target", "tensorrt", "--capacity", "96", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def mistral(server):
    """Mistral's own SDK pointed at the requesting module's ``server`` fixture (a live server): its URL is
    the only change from Mistral's hosted API."""
    client_module = pytest.importorskip("mistralai.client")
    with client_module.Mistral(api_key="unused", server_url=server.url) as client:
        yield client
