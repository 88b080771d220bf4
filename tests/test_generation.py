"""The decode loop and the TTS API on a freshly generated model (not the fixture's sizes)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from voxtral_tts.errors import CapacityError, VoxtralError
from voxtral_tts.runtime.codec import chunk_bounds

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    import voxtral_tts

    return voxtral_tts.load(tiny_model_dir, backend="torch", capacity=256, progress=False)


def test_prompt_layout(tts):
    r = tts.generate("Hi there.", voice="casual_male", max_frames=2, seed=0)
    n = tts.voice_bank.get("casual_male").n_audio_tokens
    text_ids = tts.tokenizer.encode("Hi there.")
    assert r.prompt_ids.tolist() == [1, 25] + [24] * n + [36] + text_ids + [35, 25]
    assert tts.tokenizer.speech_prompt_length("Hi there.", n) == len(r.prompt_ids)


def test_seed_reproduces_and_equals_explicit_noise(tts):
    a = tts.generate("Reproducible.", max_frames=6, seed=42)
    b = tts.generate("Reproducible.", max_frames=6, seed=42)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.audio, b.audio)
    noise = np.random.default_rng(42).standard_normal((6, 36)).astype(np.float32)
    c = tts.generate("Reproducible.", noise=noise)
    np.testing.assert_array_equal(a.codes, c.codes)
    d = tts.generate("Reproducible.", max_frames=6, seed=43)
    assert not np.array_equal(a.codes, d.codes)
    assert a.seed == 42 and c.seed is None


def test_frame_cap_and_output_shapes(tts):
    r = tts.generate("Cap me.", max_frames=7, seed=1)
    assert r.codes.shape == (7, 37) and r.codes.dtype == np.int64
    assert r.audio.shape == (7 * 1920,) and r.audio.dtype == np.float32
    assert not r.finished and r.sample_rate == 24000
    assert (r.codes[:, 0] >= 2).all() and (r.codes[:, 0] <= 8193).all()
    assert (r.codes[:, 1:] >= 2).all() and (r.codes[:, 1:] <= 22).all()


def test_chunked_decode_equals_one_shot(tts):
    """Chunks with 25 frames of left context give the one-shot waveform (the codec is causal)."""
    r = tts.generate("A longer utterance for the codec.", max_frames=60, seed=5)
    one_shot = tts.backend.model.audio_tokenizer(torch.from_numpy(r.codes)[None])[0].numpy()  # 60 frames at once
    diff = float(np.abs(r.audio - one_shot).max())
    print(f"chunked vs one-shot max abs diff {diff:.2e}")
    assert chunk_bounds(60) == [(0, 50), (50, 60)] and diff < 1e-4


def test_capacity_and_argument_errors(tts):
    with pytest.raises(CapacityError, match="KV cache holds 256"):
        tts.generate("Too many frames.", max_frames=400, seed=0)
    with pytest.raises(CapacityError, match="the prompt has"):
        tts.generate("x" * 300, seed=0)  # byte-level vocabulary: 300 tokens > 256 positions
    with pytest.raises(VoxtralError, match="either seed or noise"):
        tts.generate("Both.", seed=1, noise=np.zeros((2, 36), np.float32))
    with pytest.raises(VoxtralError, match="noise must be float32"):
        tts.generate("Bad noise.", noise=np.zeros((2, 35), np.float32))
    with pytest.raises(VoxtralError, match="noise has 2 rows but max_frames is 3"):
        tts.generate("Short noise.", noise=np.zeros((2, 36), np.float32), max_frames=3)
    with pytest.raises(VoxtralError, match="codes must be"):
        tts.codes_to_audio(np.zeros((3, 5), np.int64))


def test_synthesize_splits_long_text(tts):
    text = " ".join(["Sentence one is here."] * 3)
    r = tts.synthesize(text, max_frames=3, seed=2, part_chars=30)
    assert len(r.parts) == 3
    assert r.codes.shape == (9, 37) and r.audio.shape == (9 * 1920,)
    np.testing.assert_array_equal(r.audio[: 3 * 1920], r.parts[0].audio)


def test_runtime_import_is_torch_free():
    code = (
        "import sys, voxtral_tts, voxtral_tts.cli, voxtral_tts.runtime.scheduler, voxtral_tts.testing\n"
        "import voxtral_tts.runtime.backends.onnxruntime, voxtral_tts.runtime.backends.tensorrt\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_frame_budget_follows_the_text_and_names_its_limit():
    from voxtral_tts.runtime.decoding import frame_budget
    from voxtral_tts.runtime.noise import NoiseSource

    seeded, rows = NoiseSource(36, seed=0), NoiseSource(36, noise=np.zeros((30, 36), np.float32))
    assert frame_budget(4096, 300, None, seeded, text_chars=3) == (62, "text length")  # 50 + 4 × 3
    assert frame_budget(4096, 300, None, seeded, text_chars=1000) == (2048, "max_frames")
    assert frame_budget(400, 300, None, seeded, text_chars=100) == (101, "KV capacity")
    assert frame_budget(4096, 300, None, rows, text_chars=100) == (30, "noise rows")
    assert frame_budget(4096, 300, 500, seeded, text_chars=3) == (500, "max_frames")  # an explicit cap wins


def test_a_part_that_never_ends_stops_at_its_text_budget(tts, caplog):
    """The tiny random model never says END_AUDIO: without max_frames, "Hi." stops at 50 + 4 × 3
    frames (not 2048), reported as cut, with the limit named."""
    import logging

    with caplog.at_level(logging.INFO):
        r = tts.generate("Hi.", seed=0)
    assert r.n_frames == 62 and not r.finished
    assert "part 1 of 1 stopped at its frame budget (62 frames, the text length limit)" in caplog.text
    said = [record for record in caplog.records if "frame budget" in record.getMessage() or "frame cap" in
            record.getMessage()]
    assert len(said) == 1  # once: no second line from the frame loop


def test_every_part_is_checked_against_the_cache_before_generating(tts):
    """A later part that cannot fit is an error before any audio (not a failure mid-stream)."""
    text = "Short one. " + "x" * 395  # two parts (400 characters at most): the second needs 395+ positions
    with pytest.raises(CapacityError, match="part 2 of 2: the prompt has .* tokens but the KV cache holds 256"):
        tts.request(text)
    frames = []

    def cancelled():
        frames.append(1)
        return False

    with pytest.raises(CapacityError):
        list(tts.stream(text, cancelled=cancelled))
    assert frames == []  # nothing was stepped
