"""The one request path: the scheduler's admission, events, finish reasons, failures confined to
their requests, cancellation and clean-up — on the tiny ONNX engine (two decoding slots)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.config import END_AUDIO  # noqa: E402
from voxtral_tts.errors import CapacityError  # noqa: E402
from voxtral_tts.runtime.noise import NoiseSource  # noqa: E402
from voxtral_tts.runtime.request import (AudioChunk, Cancelled, PartFinished, Request, RequestDone,  # noqa: E402
                                         RequestFailed, Usage)
from voxtral_tts.runtime.scheduler import Scheduler  # noqa: E402
from voxtral_tts.testing import Forwarding  # noqa: E402

TEXTS = [("Hello there.", 1, 12), ("A second request, somewhat longer than the first!", 2, 7),
         ("Third.", 3, 9)]


@pytest.fixture(scope="module")
def tts(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir, max_batch=2)


def run_all(scheduler: Scheduler, requests) -> list:
    for request in requests:
        scheduler.submit(request)
    events = []
    while not scheduler.idle:
        events += scheduler.step()
    return events


def test_requests_in_flight_together_get_their_solo_audio(tts):
    """Three requests on two slots: the third joins when a slot frees; each one's chunks, part
    events and usage are exactly what it gets alone."""
    requests = [tts.request(text, voice="casual_male", max_frames=n, seed=seed) for text, seed, n in TEXTS]
    events = run_all(Scheduler(tts.backend, tts.prompt), requests)
    for request, (text, seed, frames) in zip(requests, TEXTS):
        mine = [e for e in events if e.request is request]
        kinds = [type(e) for e in mine]
        assert kinds == [AudioChunk] * (len(kinds) - 2) + [PartFinished, RequestDone]
        alone = list(tts.stream(text, voice="casual_male", max_frames=frames, seed=seed))
        chunks = [e.audio for e in mine if isinstance(e, AudioChunk)]
        assert [len(c) for c in chunks] == [len(c) for c in alone]
        np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate(alone))
        finished = mine[-2]
        assert finished.codes.shape == (frames, 37) and finished.finish_reason == "length"
        text_tokens = len(tts.tokenizer.encode(text))
        assert mine[-1].usage == Usage(text_tokens=text_tokens, frames=frames) == request.usage


def test_a_failure_is_confined_to_its_request(tts):
    """A prompt that does not fit the cache fails its own request (CapacityError) at admission;
    a codec failure fails only the request whose chunk it was; the others complete."""
    small = voxtral_tts.load(tts.backend.engine.path, max_batch=2, capacity=40)
    with pytest.raises(CapacityError):  # TTS.request refuses it up front…
        small.request("word " * 40, seed=0, max_frames=4)
    text = "word " * 40  # …and the scheduler, handed it anyway, fails that request alone at admission
    too_long = Request(text, (text,), small.voice_bank.get(None), NoiseSource(36, seed=0), max_frames=4)
    fine = small.request("Fine.", seed=1, max_frames=4)
    events = run_all(small.scheduler, [too_long, fine])
    failed = [e for e in events if isinstance(e, RequestFailed)]
    assert [e.request for e in failed] == [too_long] and isinstance(failed[0].error, CapacityError)
    assert any(isinstance(e, RequestDone) and e.request is fine for e in events)

    class CodecFailsOnce(Forwarding):
        failed = False

        def _codec(self, codes):
            if not CodecFailsOnce.failed:
                CodecFailsOnce.failed = True
                raise RuntimeError("codec broke")
            return self.inner.codec(codes)

    scheduler = Scheduler(CodecFailsOnce(tts.backend), tts.prompt)
    first, second = (tts.request(t, seed=s, max_frames=n) for t, s, n in TEXTS[:2])
    events = run_all(scheduler, [first, second])
    assert [type(e) for e in events if e.request is first] == [RequestFailed]
    assert isinstance([e for e in events if e.request is second][-1], RequestDone)


def test_end_audio_ends_a_part_and_parts_run_in_order(tts):
    """END_AUDIO ends a part (finish reason "end", the frame not audio); the next part starts
    from a fresh prompt, the noise continuing."""

    class EndsAtFrame3(Forwarding):
        def _flow(self, hidden, noise, semantic, expressiveness):
            codes = self.inner.flow(hidden, noise, semantic, expressiveness).copy()
            self.frames = getattr(self, "frames", 0) + 1
            if self.frames % 4 == 0:
                codes[:, 0] = END_AUDIO
            return codes

    scheduler = Scheduler(EndsAtFrame3(tts.backend), tts.prompt)
    request = tts.request("First sentence here. Second one follows.", seed=5, part_chars=25, max_frames=10)
    assert len(request.parts) == 2
    events = run_all(scheduler, [request])
    parts = [e for e in events if isinstance(e, PartFinished)]
    assert [(p.part, p.text, p.finish_reason, len(p.codes)) for p in parts] == [
        (0, "First sentence here.", "end", 3), (1, "Second one follows.", "end", 3)]
    audio = sum(len(e.audio) for e in events if isinstance(e, AudioChunk))
    assert audio == 6 * 1920 and events[-1].usage.frames == 6


def test_cancel_frees_the_slot_and_stopping_early_cleans_up(tts):
    """A cancelled request leaves at the next step with Cancelled; a caller that stops reading a
    stream takes its request out (the slot is free again)."""
    scheduler = tts.scheduler
    going, cancelled = tts.request("Keep going.", seed=1, max_frames=8), tts.request("Stop me.", seed=2, max_frames=8)
    scheduler.submit(going)
    scheduler.submit(cancelled)
    scheduler.step()
    cancelled.cancel()
    events = scheduler.step()
    failure = [e for e in events if e.request is cancelled]
    assert len(failure) == 1 and isinstance(failure[0].error, Cancelled)
    while not scheduler.idle:
        scheduler.step()
    assert cancelled.usage.frames == 1 and going.usage.frames == 8

    stream = tts.stream("A long one.", seed=3, max_frames=40)
    next(stream)
    stream.close()  # the caller went away: the generator's clean-up takes the request out
    assert scheduler.idle and sorted(scheduler._loop.free) == [0, 1]
    with pytest.raises(Cancelled):
        list(tts.stream("Cancelled by its caller.", seed=4, max_frames=40, cancelled=lambda: True))
    assert scheduler.idle
