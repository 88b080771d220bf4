"""The one consumer of a request's events (runtime/results.Collector), on events made by hand: order,
finish reason, counts, usage, per-part results, the error, and the cut-part warning said once."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from voxtral_tts.errors import VoxtralError
from voxtral_tts.runtime.noise import NoiseSource
from voxtral_tts.runtime.request import AudioChunk, PartFinished, Request, RequestDone, RequestFailed, Usage
from voxtral_tts.runtime.results import Collector
from voxtral_tts.voices import Voice

RATE = 24000


def request(parts=("One.", "Two.")) -> Request:
    return Request(" ".join(parts), tuple(parts), Voice("v", np.zeros((2, 4), np.float32)), NoiseSource(36, seed=7))


def finished(req, part, frames, reason="end", bound="max_frames"):
    return PartFinished(req, part, req.parts[part], np.arange(3), np.full((frames, 37), part, np.int64), reason, bound)


def audio(req, part, samples, value):
    return AudioChunk(req, part, np.full(samples, value, np.float32))


def test_results_in_order_with_the_finish_reason_and_counts(caplog):
    req = request()
    events = [audio(req, 0, 1920, 0.1), audio(req, 0, 1920, 0.2), finished(req, 0, 2),
              audio(req, 1, 1920, 0.3), finished(req, 1, 1, "length"), RequestDone(req, Usage(5, 3))]
    collector = Collector(req, RATE, keep_audio=True)
    with caplog.at_level(logging.INFO):
        chunks = list(collector.audio(events))
    assert [c[0] for c in chunks] == pytest.approx([0.1, 0.2, 0.3])
    assert collector.finish_reason == "length" and collector.frames == 3 and collector.samples == 3 * 1920
    assert collector.usage == Usage(5, 3) and collector.done and collector.part == 1
    result = collector.result()
    assert [p.finished for p in result.parts] == [True, False] and not result.finished
    np.testing.assert_array_equal(result.audio, np.concatenate(chunks))
    assert result.codes.shape == (3, 37) and result.seed == 7 and result.duration == 3 * 1920 / RATE
    cut = [r for r in caplog.records if "stopped at its frame budget" in r.getMessage()]
    assert len(cut) == 1 and cut[0].levelno == logging.WARNING
    assert "part 2 of 2 stopped at its frame budget (1 frames, the max_frames limit)" in cut[0].getMessage()


def test_a_part_without_audio_is_said_and_a_capacity_bound_names_its_flag(caplog):
    req = request(("Only.",))
    collector = Collector(req, RATE)
    with caplog.at_level(logging.WARNING):
        collector.take(finished(req, 0, 0, "length", "KV capacity"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("END_AUDIO at the first frame: no audio" in m for m in messages)
    assert any("raise --capacity to allow more" in m for m in messages)
    assert collector.result().audio.shape == (0,)


def test_the_requests_error_is_raised_where_it_failed():
    req = request()
    collector = Collector(req, RATE)
    events = iter([audio(req, 0, 10, 0.5), RequestFailed(req, VoxtralError("broken")), audio(req, 0, 10, 0.5)])
    got = collector.audio(events)
    assert next(got)[0] == 0.5
    with pytest.raises(VoxtralError, match="broken"):
        next(got)
    assert isinstance(collector.error, VoxtralError) and not collector.done


def test_audio_is_kept_only_when_asked():
    req = request(("Only.",))
    collector = Collector(req, RATE)
    list(collector.audio([audio(req, 0, 1920, 0.1), finished(req, 0, 1), RequestDone(req, Usage())]))
    assert collector.result().audio.shape == (0,) and collector.samples == 1920
