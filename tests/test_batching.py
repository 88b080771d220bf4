"""Several sequences per graph call: per-sequence positions in the KV cache, sequences joining and
leaving between frames, and the same codes as decoding each sequence alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.runtime.decoding import BatchDecoder, NoiseSource, Sequence  # noqa: E402

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
    decoder = BatchDecoder(batched.model)
    assert batched.model.max_batch == 3
    sequences = []
    for text, voice, seed, frames in REQUESTS:
        _, embeds = batched.prompt(text, batched.voice_bank.get(voice))
        sequences.append(Sequence(embeds, NoiseSource(36, seed=seed), frames, tag=text))
    got = {s.tag: [] for s in sequences}
    waiting = list(sequences)
    decoder.join(waiting.pop(0))
    decoder.join(waiting.pop(0))
    step = 0
    slots_seen = {}
    while decoder.active or waiting:
        if step >= 2 and waiting and decoder.has_room:  # joins between frames, into a free slot
            seq = waiting.pop(0)
            decoder.join(seq)
            slots_seen[seq.tag] = seq.slot
        for seq, codes in decoder.step():
            if codes is not None:
                got[seq.tag].append(codes)
        step += 1
    # the fourth request waited for the third (6 frames) to leave, and reused its slot
    assert slots_seen[REQUESTS[3][0]] == slots_seen[REQUESTS[2][0]] == 2
    for (text, *_), codes in zip(REQUESTS, expected):
        np.testing.assert_array_equal(np.stack(got[text]), codes)


def test_flow_frames_batch_equals_single(batched):
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, batched.config.backbone.dim)).astype(np.float32)
    noise = rng.standard_normal((3, 36)).astype(np.float32)
    together = batched.model.flow_frames(hidden, noise)
    apart = np.stack([batched.model.flow_frame(h, x) for h, x in zip(hidden, noise)])
    np.testing.assert_array_equal(together, apart)


def test_max_batch_bounds(tiny_engine_dir):
    with pytest.raises(voxtral_tts.VoxtralError, match="max_batch must be between 1 and 64"):
        voxtral_tts.load(tiny_engine_dir, max_batch=0)
