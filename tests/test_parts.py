"""The parts of a long text side by side in the scheduler: results independent of scheduling (each
part's noise from the seed and its index), events strictly in order per request, explicit noise
rows taken part after part, the fairness rule, and a failure or cancellation taking every running
part out — on the tiny model in torch fp32 (batched frames equal one-at-a-time ones exactly)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import voxtral_tts  # noqa: E402
from voxtral_tts.runtime.request import AudioChunk, Cancelled, PartFinished, RequestDone, RequestFailed  # noqa: E402
from voxtral_tts.runtime import scheduler as scheduler_module  # noqa: E402
from voxtral_tts.runtime.scheduler import Scheduler  # noqa: E402
from voxtral_tts.testing import Forwarding  # noqa: E402

TEXT = "First part is here. Second part follows now. And a third one. Fourth and last."
SPLIT = {"part_chars": 22, "max_frames": 6}  # four parts of six frames


def load(model, max_batch):
    return voxtral_tts.load(model, backend="torch", dtype="fp32", capacity=256, max_batch=max_batch, progress=False)


@pytest.fixture(scope="module")
def one(tiny_model_dir):
    return load(tiny_model_dir, 1)


@pytest.fixture(scope="module")
def four(tiny_model_dir):
    return load(tiny_model_dir, 4)


def run_all(scheduler: Scheduler, requests, each_step=None) -> list:
    for request in requests:
        scheduler.submit(request)
    events = []
    while not scheduler.idle:
        events += scheduler.step()
        if each_step is not None:
            each_step(scheduler)
    return events


def running_parts(scheduler: Scheduler) -> list[tuple[int, int]]:
    return [(id(s.request), s.part) for s in scheduler._running]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_max_batch_does_not_change_the_audio(one, four, temperature):
    """The same seed gives the same codes and audio with one slot (parts one after another) and
    with four (all parts at once), whole and streamed, greedy and sampled."""
    a = one.synthesize(TEXT, seed=3, temperature=temperature, **SPLIT)
    seen = []
    b = four.synthesize(TEXT, seed=3, temperature=temperature, **SPLIT)
    assert len(a.parts) == 4
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.audio, b.audio)
    streamed = np.concatenate(list(four.stream(TEXT, seed=3, temperature=temperature, **SPLIT)))
    np.testing.assert_allclose(streamed, a.audio, atol=1e-5)
    request = four.request(TEXT, seed=3, temperature=temperature, **SPLIT)
    run_all(four.scheduler, [request], lambda s: seen.append(len(s._running)))
    assert seen[0] == 4  # the four parts really ran together


def test_each_parts_noise_comes_from_the_seed_and_its_index(one):
    """Part 0 keeps the seed's own stream (the fixture's contract); part k ≥ 1 takes
    ``SeedSequence(seed, spawn_key=(2, k))``'s."""
    r = one.synthesize(TEXT, seed=11, **SPLIT)
    first = one.generate(r.parts[0].text, seed=11, max_frames=6)
    np.testing.assert_array_equal(r.parts[0].codes, first.codes)
    for k in (1, 3):
        rows = np.random.default_rng(np.random.SeedSequence(11, spawn_key=(2, k))).standard_normal((6, 36))
        alone = one.generate(r.parts[k].text, noise=rows.astype(np.float32))
        np.testing.assert_array_equal(r.parts[k].codes, alone.codes)
    assert r.seed == 11 and all(p.seed == 11 for p in r.parts)


def test_events_stay_in_order_while_later_parts_finish_first(four, one):
    """Parts 1 and 3 finish before part 0: their chunks and PartFinished are held until part 0's
    are out; the request's events are exactly those of running the parts one after another."""
    budgets = {0: 9, 1: 3, 2: 6, 3: 2}

    def set_budgets(scheduler):
        for sequence in scheduler._running:
            sequence.budget = budgets[sequence.part]

    request = four.request(TEXT, seed=5, part_chars=22, max_frames=9)
    events = []
    four.scheduler.submit(request)
    events += four.scheduler.step()  # admits all four parts and runs their first frame
    set_budgets(four.scheduler)
    assert len(four.scheduler._running) == 4
    while not four.scheduler.idle:
        events += four.scheduler.step()
    parts = [e.part for e in events if isinstance(e, (AudioChunk, PartFinished))]
    assert parts == sorted(parts)  # part 0's events, then part 1's, …
    kinds = [type(e) for e in events]
    assert kinds[-1] is RequestDone and kinds.count(PartFinished) == 4
    assert [len(e.codes) for e in events if isinstance(e, PartFinished)] == [9, 3, 6, 2]

    alone = one.request(TEXT, seed=5, part_chars=22, max_frames=9)
    one_events = []
    one.scheduler.submit(alone)
    while not one.scheduler.idle:
        one_events += one.scheduler.step()
        set_budgets(one.scheduler)
    chunks = [e.audio for e in events if isinstance(e, AudioChunk)]
    expected = [e.audio for e in one_events if isinstance(e, AudioChunk)]
    assert [len(c) for c in chunks] == [len(c) for c in expected]
    np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate(expected))
    assert events[-1].usage == one_events[-1].usage


def test_parts_run_a_bounded_distance_ahead(four, monkeypatch):
    """A part starts at most PARTS_AHEAD_PER_SLOT × max_batch parts after the one whose events go
    out next: here one per slot, so while part 0 runs long, only parts 1–3 run beside it."""
    monkeypatch.setattr(scheduler_module, "PARTS_AHEAD_PER_SLOT", 1)
    text = " ".join(f"Sentence {n} is here." for n in "ABCDEF")
    request = four.request(text, seed=1, part_chars=20, max_frames=6)
    four.scheduler.submit(request)
    four.scheduler.step()
    for sequence in four.scheduler._running:
        sequence.budget = 6 if sequence.part == 0 else 2
    started = [p for _, p in running_parts(four.scheduler)]
    while not four.scheduler.idle:
        four.scheduler.step()
        started += [p for _, p in running_parts(four.scheduler) if p not in started]
        if 4 in started:
            assert 0 not in [p for _, p in running_parts(four.scheduler)]  # part 4 waited for part 0
    assert started[:4] == [0, 1, 2, 3] and 4 in started


def test_explicit_noise_rows_run_the_parts_in_order(four):
    """With explicit noise the parts run one after another, each taking the rows after the
    previous part's: part k's codes are those of its text alone with its slice of the rows."""
    rows = np.random.default_rng(0).standard_normal((20, 36)).astype(np.float32)
    request = four.request(TEXT, noise=rows, part_chars=22, max_frames=5)
    seen = []
    events = run_all(four.scheduler, [request], lambda s: seen.append(len(s._running)))
    assert max(seen) == 1
    finished = [e for e in events if isinstance(e, PartFinished)]
    assert [len(e.codes) for e in finished] == [5, 5, 5, 5]
    for k, event in enumerate(finished):
        alone = four.generate(event.text, noise=rows[5 * k: 5 * k + 5])
        np.testing.assert_array_equal(event.codes, alone.codes)


def test_a_long_request_does_not_starve_a_short_one(tiny_model_dir):
    """Two slots, a six-part request alone takes both; a one-part request arriving next gets the
    first slot that frees, and finishes before the long one's last parts start."""
    tts = load(tiny_model_dir, 2)
    scheduler = tts.scheduler
    text = " ".join(f"Sentence {n} is here." for n in "ABCDEF")
    long = tts.request(text, seed=1, part_chars=20, max_frames=3)
    assert len(long.parts) == 6
    scheduler.submit(long)
    scheduler.step()
    assert running_parts(scheduler) == [(id(long), 0), (id(long), 1)]
    short = tts.request("Short.", seed=2, max_frames=3)
    scheduler.submit(short)
    events, started = [], []
    while not scheduler.idle:
        events += scheduler.step()
        started += [p for p in running_parts(scheduler) if p not in started]
    assert started.index((id(short), 0)) < started.index((id(long), 3))
    done = [e.request for e in events if isinstance(e, RequestDone)]
    assert done == [short, long]

    # submitted together, each gets a slot at once
    again = tts.request(text, seed=1, part_chars=20, max_frames=3), tts.request("Short.", seed=2, max_frames=3)
    scheduler.submit(again[0])
    scheduler.submit(again[1])
    scheduler.step()
    assert running_parts(scheduler) == [(id(again[0]), 0), (id(again[1]), 0)]
    while not scheduler.idle:
        scheduler.step()


def test_failure_and_cancellation_take_every_running_part_out(four):
    """A codec failure in one part fails its request once, all its parts leave; a cancelled
    request leaves with all its parts; the slots are free again."""

    class CodecFails(Forwarding):
        def _codec(self, codes):
            raise RuntimeError("codec broke")

    scheduler = Scheduler(CodecFails(four.backend), four.prompt)
    request = four.request(TEXT, seed=1, part_chars=22, max_frames=4)
    events = run_all(scheduler, [request])
    assert [type(e) for e in events] == [RequestFailed]
    assert sorted(scheduler._loop.free) == [0, 1, 2, 3]

    scheduler = four.scheduler
    request = four.request(TEXT, seed=1, part_chars=22, max_frames=8)
    scheduler.submit(request)
    scheduler.step()
    assert len(scheduler._running) == 4
    request.cancel()
    events = scheduler.step()
    assert len(events) == 1 and isinstance(events[0].error, Cancelled)
    assert "after 4 frames" in str(events[0].error)
    assert scheduler.idle and sorted(scheduler._loop.free) == [0, 1, 2, 3]
