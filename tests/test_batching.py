"""Several sequences per graph call: per-sequence positions in the KV cache, sequences joining and
leaving between frames, and the same codes as decoding each sequence alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.runtime.decoding import FrameLoop, Sequence  # noqa: E402
from voxtral_tts.runtime.noise import NoiseSource  # noqa: E402
from voxtral_tts.testing import flow_one  # noqa: E402

REQUESTS = [  # text, voice, seed, frames
    ("Hello there.", "casual_male", 1, 9),
    ("A somewhat longer sentence, to make the prompts differ in length!", "neutral_female", 2, 12),
    ("Short.", "neutral_female", 3, 6),
    ("The fourth one takes the first free slot.", "casual_male", 4, 7),
]


@pytest.fixture(scope="module")
def batched(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir, max_batch=3)


@pytest.fixture(scope="module")
def alone(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir)


def test_batched_codes_equal_one_at_a_time(batched, alone):
    expected = [alone.generate(t, voice=v, seed=s, max_frames=n).codes for t, v, s, n in REQUESTS]
    loop = FrameLoop(batched.backend)
    assert batched.backend.max_batch == 3
    utterances = []
    for text, voice, seed, frames in REQUESTS:
        _, embeds = batched.prompt(text, batched.voice_bank.get(voice))
        utterances.append(Sequence(embeds, NoiseSource(36, seed=seed), frames))
    got = {id(u): [] for u in utterances}
    waiting = list(utterances)
    loop.join(waiting.pop(0))
    loop.join(waiting.pop(0))
    step = 0
    while loop.active or waiting:
        if step >= 2 and waiting and loop.has_room:  # joins between frames, into a free slot
            loop.join(waiting.pop(0))
        for utterance, codes in loop.step():
            if codes is not None:
                got[id(utterance)].append(codes)
        step += 1
    # the fourth request waited for the third (6 frames) to leave, and reused its slot
    assert utterances[3].slot == utterances[2].slot == 2
    for utterance, codes in zip(utterances, expected):
        np.testing.assert_array_equal(np.stack(got[id(utterance)]), codes)


def test_flow_frames_batch_equals_single(batched):
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, batched.config.backbone.dim)).astype(np.float32)
    noise = rng.standard_normal((3, 36)).astype(np.float32)
    together = batched.backend.flow(hidden, noise)
    apart = np.stack([flow_one(batched.backend, h, x) for h, x in zip(hidden, noise)])
    np.testing.assert_array_equal(together, apart)


def test_max_batch_bounds(tiny_engine_dir):
    with pytest.raises(voxtral_tts.VoxtralError, match="max_batch must be between 1 and 64"):
        voxtral_tts.load(tiny_engine_dir, max_batch=0)
