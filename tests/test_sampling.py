"""Sampling the semantic code at a temperature: the Gumbel-max draw, its seeding, its wiring through
every runnable backend's flow graph, and the request path (library, CLI, server). Temperature 0
is the reference's argmax: the fixture's goldens stay as they are."""

from __future__ import annotations

import numpy as np
import pytest

import voxtral_tts
from voxtral_tts.config import EMPTY_AUDIO, END_AUDIO
from voxtral_tts.errors import VoxtralError
from voxtral_tts.runtime.noise import NoiseSource, check_temperature
from voxtral_tts.testing import flow_one

ROWS = 8320  # semantic_head_rows of the fixture and of the tiny models


def softmax(x):
    e = np.exp(x - x[np.isfinite(x)].max())
    return e / e.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_the_draw_follows_softmax_at_the_temperature(temperature):
    """argmax(logits + temperature × Gumbel) is distributed as softmax(logits / temperature); masked
    (−∞) entries are never drawn."""
    logits = np.array([0.0, 1.0, 2.0, -np.inf, 0.5], np.float32)
    source = NoiseSource(36, seed=11, temperature=temperature, logits=len(logits))
    draws = np.array([np.argmax(logits + source.take()[1]) for _ in range(20000)])
    frequencies = np.bincount(draws, minlength=len(logits)) / len(draws)
    assert frequencies[3] == 0
    np.testing.assert_allclose(frequencies, softmax(logits / temperature), atol=0.015)


def test_sampling_keeps_the_seeds_x0_and_is_reproducible():
    seed = 5
    expected = np.random.default_rng(seed).standard_normal((4, 36)).astype(np.float32)
    greedy, hot, again = (NoiseSource(36, seed=seed, temperature=t, logits=ROWS) for t in (0.0, 0.8, 0.8))
    for n in range(4):
        (x0, none), (x0_hot, sample), (x0_again, sample_again) = greedy.take(), hot.take(), again.take()
        assert none is None and sample.shape == (ROWS,) and sample.dtype == np.float32
        np.testing.assert_array_equal(x0, expected[n])  # the fixture's contract holds at any temperature
        np.testing.assert_array_equal(x0_hot, expected[n])
        np.testing.assert_array_equal(x0_again, expected[n])
        np.testing.assert_array_equal(sample, sample_again)
    other = NoiseSource(36, seed=seed + 1, temperature=0.8, logits=ROWS).take()[1]
    assert not np.array_equal(other, NoiseSource(36, seed=seed, temperature=0.8, logits=ROWS).take()[1])
    # explicit noise: the same array gives the same samples, another array others
    samples = [NoiseSource(36, noise=noise, temperature=1.0, logits=ROWS).take()[1]
               for noise in (expected, expected.copy(), expected + 1)]
    np.testing.assert_array_equal(samples[0], samples[1])
    assert not np.array_equal(samples[0], samples[2])


@pytest.mark.parametrize("value", [-0.1, 2.5, float("nan"), float("inf"), True, "1", None])
def test_temperature_is_checked(value):
    with pytest.raises(VoxtralError, match="temperature must be a number from 0"):
        check_temperature(value)
    assert check_temperature(0) == 0.0 and check_temperature(2) == 2.0


# --- the flow graph of each backend --------------------------------------------------------------------

@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def tiny_tts(request, tiny_engine_dir, tiny_model_dir):
    if request.param == "torch":
        pytest.importorskip("torch")
        return voxtral_tts.load(tiny_model_dir, backend="torch", dtype="fp32", capacity=256, max_batch=4,
                                progress=False)
    return voxtral_tts.load(tiny_engine_dir, max_batch=4)


def forcing(*codes) -> np.ndarray:
    """Semantic noise that makes each row's semantic code ``codes[i]`` (None: zeros, greedy)."""
    rows = np.zeros((len(codes), ROWS), np.float32)
    for row, code in zip(rows, codes):
        if code is not None:
            row[code] = 1e4
    return rows


def test_the_flow_graph_adds_the_semantic_noise(tiny_tts):
    """Through the batched call and the one-row fast path: a forced code is taken, a masked one
    never (EMPTY_AUDIO stays −∞), rows without noise keep the argmax, and a greedy call after a
    sampled one is greedy again (no sample left in a bound buffer)."""
    backend = tiny_tts.backend
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, backend.config.backbone.dim)).astype(np.float32)
    noise = rng.standard_normal((3, 36)).astype(np.float32)
    greedy = backend.flow(hidden, noise)
    assert (greedy[:, 0] != 100).all()
    sampled = backend.flow(hidden, noise, forcing(None, 100, EMPTY_AUDIO))
    np.testing.assert_array_equal(sampled[0], greedy[0])
    assert sampled[1, 0] == 100
    np.testing.assert_array_equal(sampled[1, 1:], greedy[1, 1:])  # x0 alone decides the acoustic codes
    np.testing.assert_array_equal(sampled[2], greedy[2])
    ended = flow_one(backend, hidden[0], noise[0], forcing(END_AUDIO)[0])
    assert ended[0] == END_AUDIO and (ended[1:] == EMPTY_AUDIO + 2).all()
    assert flow_one(backend, hidden[0], noise[0], forcing(100)[0])[0] == 100
    np.testing.assert_array_equal(flow_one(backend, hidden[0], noise[0]), greedy[0])
    with pytest.raises(VoxtralError, match="semantic sampling noise must be"):
        backend.flow(hidden, noise, forcing(1, 2))


# --- the request path ----------------------------------------------------------------------------------

def test_generation_at_a_temperature(tiny_tts):
    """Reproducible for a seed, different from the argmax, and the same codes on every backend
    (compared through the module-level cache below)."""
    kwargs = dict(max_frames=8, voice="casual_male")
    greedy = tiny_tts.generate("Sampled speech.", seed=3, temperature=0, **kwargs)
    a = tiny_tts.generate("Sampled speech.", seed=3, temperature=1.0, **kwargs)
    b = tiny_tts.generate("Sampled speech.", seed=3, temperature=1.0, **kwargs)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.array_equal(a.codes[:, 0], greedy.codes[:, 0])
    CODES.setdefault("sampled", []).append(a.codes)
    assert all(np.array_equal(c, a.codes) for c in CODES["sampled"])  # torch fp32 == onnxruntime fp32
    noise = np.random.default_rng(3).standard_normal((8, 36)).astype(np.float32)
    explicit = [tiny_tts.generate("Sampled speech.", noise=noise, temperature=1.0, voice="casual_male").codes
                for _ in range(2)]
    np.testing.assert_array_equal(*explicit)
    with pytest.raises(VoxtralError, match="temperature must be"):
        tiny_tts.generate("Too hot.", temperature=3.0)


CODES: dict[str, list] = {}


def test_temperature_zero_reproduces_the_fixture(reference_engine_dir, golden):
    tts = voxtral_tts.load(reference_engine_dir)
    r = tts.generate("Hello world.", voice="casual_male", noise=golden["noise"], temperature=0.0)
    np.testing.assert_array_equal(r.codes, golden["codes_decoded"])  # exact, with the stop at frame 9
    assert r.finished


def test_cli_temperature(tiny_engine_dir, tmp_path, capsys):
    from voxtral_tts.audio import read_wav, to_pcm16
    from voxtral_tts.cli import main

    out = tmp_path / "hot.wav"
    assert main([str(tiny_engine_dir), "-t", "Sampled speech.", "-o", str(out), "--max-frames", "6", "--seed", "4",
                 "--temperature", "0.9", "-q"]) == 0
    expected = voxtral_tts.load(tiny_engine_dir).generate("Sampled speech.", max_frames=6, seed=4, temperature=0.9)
    np.testing.assert_array_equal(to_pcm16(read_wav(out)[0]), to_pcm16(expected.audio))
    assert main([str(tiny_engine_dir), "-t", "Hi.", "-o", str(out), "--temperature", "2.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["voxtral-run: error: --temperature must be a number from 0 (greedy) to 2, got 2.5"]
