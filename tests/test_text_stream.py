"""Text that arrives while it is spoken: ``TTS.stream_text`` over an open request on the tiny engine —
the segments become the parts of one request in order, audio starts while later text is still
coming, and for a fixed seed the audio does not depend on how the text was split or timed; and the
scheduler's open requests on their own (parts appended while running, done once closed)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.errors import VoxtralError  # noqa: E402
from voxtral_tts.runtime.options import SpeechOptions  # noqa: E402
from voxtral_tts.runtime.request import AudioChunk, PartFinished, Request, RequestDone, RequestFailed  # noqa: E402
from voxtral_tts.segmenter import segments  # noqa: E402

from test_server import FRAMES  # noqa: E402

TEXT = "Hello there. How are you today? Fine, thanks."
SPF = 1920


@pytest.fixture(scope="module")
def reference_tts(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir)


def pieces_of(text: str, size: int, delay: float = 0.0):
    for i in range(0, len(text), size):
        if delay:
            time.sleep(delay)
        yield text[i:i + size]


def test_segments_are_the_parts_of_one_request_and_timing_does_not_matter(reference_tts):
    whole = np.concatenate(list(reference_tts.stream_text([TEXT], seed=3, max_frames=FRAMES, normalize=False)))
    assert whole.shape == (len(segments(TEXT)) * FRAMES * SPF,)  # one part per segment, each FRAMES frames
    slow = np.concatenate(list(reference_tts.stream_text(pieces_of(TEXT, 3, 0.01), seed=3, max_frames=FRAMES,
                                                         normalize=False)))
    assert np.array_equal(slow, whole)
    # part 0 draws the seed's own noise: it is what generate() says for the first segment
    first = reference_tts.generate(segments(TEXT)[0], seed=3, max_frames=FRAMES, normalize=False).audio
    assert np.abs(whole[: FRAMES * SPF] - first).max() < 1e-5


def test_audio_starts_while_the_text_is_still_arriving(reference_tts):
    heard = threading.Event()

    def producer():
        yield "Hello there. "
        yield "And"  # completes the first sentence (a capital after the stop)
        assert heard.wait(30), "no audio before the text ended"
        yield " then some more."

    chunks = []
    for chunk in reference_tts.stream_text(producer(), seed=1, max_frames=FRAMES):
        chunks.append(chunk)
        heard.set()
    assert sum(len(c) for c in chunks) == 2 * FRAMES * SPF


def test_an_async_iterable_gives_the_same_audio(reference_tts):
    async def produce():
        for piece in pieces_of(TEXT, 5):
            await asyncio.sleep(0.005)
            yield piece

    async def collect():
        return [c async for c in reference_tts.stream_text(produce(), seed=3, max_frames=FRAMES, normalize=False)]

    got = np.concatenate(asyncio.run(collect()))
    expected = np.concatenate(list(reference_tts.stream_text([TEXT], seed=3, max_frames=FRAMES, normalize=False)))
    assert np.array_equal(got, expected)


def test_an_error_in_the_pieces_ends_the_stream_with_it(reference_tts):
    def broken():
        yield "Hello there. And "
        raise KeyError("the producer failed")

    with pytest.raises(KeyError, match="the producer failed"):
        list(reference_tts.stream_text(broken(), max_frames=FRAMES))
    with pytest.raises(VoxtralError, match="string"):
        list(reference_tts.stream_text([b"bytes"], max_frames=FRAMES))
    with pytest.raises(VoxtralError, match="streaming mode"):
        reference_tts.stream_text(["Hi."], mode="fast")
    assert reference_tts.scheduler.idle


def test_text_with_nothing_to_say_is_an_empty_stream(reference_tts):
    assert list(reference_tts.stream_text(["😀 ", "... ", "!"], max_frames=FRAMES)) == []


def test_an_open_request_in_the_scheduler(reference_tts):
    scheduler = reference_tts.scheduler
    voice = reference_tts.voice_bank.get(None)
    noise = reference_tts.noise_source(SpeechOptions(seed=0))
    request = Request("", (), voice, noise, max_frames=4, open=True)
    scheduler.submit(request)
    assert scheduler.idle  # waiting for text: nothing to step
    request.append("One.")
    events = []
    while not scheduler.idle:
        events += scheduler.step()
    assert [type(e) for e in events if not isinstance(e, AudioChunk)] == [PartFinished]  # open: not done
    request.append("Two.")
    request.close()
    while not scheduler.idle:
        events += scheduler.step()
    assert isinstance(events[-1], RequestDone) and events[-1].usage.frames == 8
    assert [e.part for e in events if isinstance(e, PartFinished)] == [0, 1]
    with pytest.raises(VoxtralError, match="open request"):
        request.append("Three.")
    # closed with no parts at all: done at the next step; failed by its caller's error
    empty = Request("", (), voice, noise, open=True)
    scheduler.submit(empty)
    empty.close()
    assert [type(e) for e in scheduler.step()] == [RequestDone]
    failing = Request("", (), voice, noise, open=True)
    scheduler.submit(failing)
    failing.cancel(KeyError("why"))
    (failed,) = scheduler.step()
    assert isinstance(failed, RequestFailed) and isinstance(failed.error, KeyError) and scheduler.idle


def test_an_open_requests_next_part_waits_for_the_first_audio_of_the_part_being_heard(tiny_engine_dir):
    """A later part's prefill must not delay the audio being heard: with slots free, part 1 starts
    only once part 0's first chunk is out (a request submitted whole starts both at once)."""
    tts = voxtral_tts.load(tiny_engine_dir, max_batch=4)
    scheduler = tts.scheduler
    voice = tts.voice_bank.get(None)
    noise = tts.noise_source(SpeechOptions(seed=0))
    request = Request("", (), voice, noise, max_frames=8, open=True)
    scheduler.submit(request)
    request.append("One.")
    request.append("Two.")
    request.close()  # closed before it started: still paced, as it was submitted open
    started, heard = [], False
    while not scheduler.idle:
        events = scheduler.step()
        started.append((len(scheduler._running), heard))
        heard = heard or any(isinstance(e, AudioChunk) and e.part == 0 for e in events)
    assert started[0] == (1, False)  # part 0 alone until its first chunk is out
    assert (2, True) in started and (2, False) not in started
    whole = tts.request("One. Two.", voice=voice, seed=0, max_frames=8, part_chars=5)
    scheduler.submit(whole)
    assert [len(scheduler._running) for _ in [scheduler.step()]] == [2]  # side by side from the start
    while not scheduler.idle:
        scheduler.step()
