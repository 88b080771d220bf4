"""Text checks and splitting; PCM/WAV conversion."""

from __future__ import annotations

import numpy as np
import pytest

from voxtral_tts.audio import read_wav, to_pcm16, wav_bytes, write_wav
from voxtral_tts.errors import TextError
from voxtral_tts.text import check_text, split_text


def test_check_text():
    assert check_text("  Hello.\n") == "Hello."
    with pytest.raises(TextError, match="empty"):
        check_text(" \n\t ")
    with pytest.raises(TextError, match="5000 characters long; the limit is 4096"):
        check_text("a" * 5000)


def test_short_text_is_one_part():
    assert split_text("Hello world.") == ["Hello world."]


def test_long_text_splits_at_sentence_ends():
    sentences = [f"This is sentence number {i} of the test." for i in range(40)]
    parts = split_text(" ".join(sentences), max_chars=400)
    assert len(parts) > 1
    assert all(len(p) <= 400 for p in parts)
    assert all(p.endswith(".") for p in parts)  # every cut at a sentence end
    assert " ".join(parts) == " ".join(sentences)


def test_without_sentence_ends_cut_at_words_and_mark_the_clause():
    parts = split_text("word " * 200, max_chars=100)
    assert all(p.endswith(",") or p == parts[-1] for p in parts)
    assert " ".join(p.rstrip(",") for p in parts).split() == ["word"] * 200
    assert all(len(p.rstrip(",")) <= 100 for p in parts)


def test_pcm_clips_and_scales():
    pcm = to_pcm16(np.array([0.0, 0.5, 1.0, 1.7, -1.0, -3.0], np.float32))
    np.testing.assert_array_equal(pcm, [0, 16384, 32767, 32767, -32767, -32767])


def test_wav_round_trip(tmp_path):
    audio = np.sin(np.linspace(0, 100, 4800)).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", audio, 24000)
    back, rate = read_wav(tmp_path / "a.wav")
    assert rate == 24000 and back.shape == audio.shape
    assert np.abs(back - audio).max() < 1e-4
    assert wav_bytes(audio)[:4] == b"RIFF"


def test_text_of_only_whitespace_and_control_characters_is_empty():
    """What the server's schema calls sayable (``SAYABLE_PATTERN``) is what check_text accepts."""
    import re

    from voxtral_tts.text import SAYABLE_PATTERN

    for text in ["\x1d", " \t\n", "\ufeff", "\x00\x85 "]:
        assert not re.search(SAYABLE_PATTERN, text)
        with pytest.raises(TextError, match="text is empty"):
            check_text(text)
    assert check_text(" a\x1db ") == "a\x1db" and re.search(SAYABLE_PATTERN, "\x1da")
