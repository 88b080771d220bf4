"""A decode step costs its active rows: the KV cache laid out as wide as the sequences a step
names (:mod:`voxtral_tts.runtime.backends.kv_slots`), the graphs run at that many rows, and the
codes are those of each sequence decoded alone — also for a sequence moved to another row."""

from __future__ import annotations

import numpy as np
import pytest

from voxtral_tts.runtime.backends.kv_layout import KVLayout
from voxtral_tts.runtime.backends.kv_slots import CACHE, TO_SCRATCH, SlotPlacement


class HostCache:
    """A numpy cache driven by a placement: each filled (layer, position) row of a slot holds a
    value naming (slot, layer, position), checked after every move."""

    def __init__(self, layout: KVLayout, widths):
        self.placement = SlotPlacement(layout, widths)
        self.cache = np.zeros(layout.nbytes // 4, np.float32)
        self.scratch = np.zeros(int(np.prod(self.placement.scratch_shape)), np.float32)
        self.filled: dict[int, int] = {}

    def run(self, moves):
        for m in moves:
            dst, src = {CACHE: (self.cache, self.cache), TO_SCRATCH: (self.scratch, self.cache)}.get(
                m.kind, (self.cache, self.scratch))
            m.copy.apply(dst, src)

    def write(self, slot: int, start: int, stop: int):
        layout = self.placement.layout
        for layer in range(layout.n_layers):
            for position in range(start, stop):
                at = layout.offset(layer, position, self.placement.row(slot)) // 4
                self.cache[at: at + layout.row_bytes // 4] = 1000 * slot + 100 * layer + position
        self.filled[slot] = stop

    def check(self):
        layout = self.placement.layout
        assert sorted(self.placement.rows.values()) == list(range(len(self.placement.rows)))
        assert len(self.placement.rows) <= layout.slots
        for slot in self.placement.rows:
            for layer in range(layout.n_layers):
                for position in range(self.filled[slot]):
                    at = layout.offset(layer, position, self.placement.row(slot)) // 4
                    assert np.all(self.cache[at: at + layout.row_bytes // 4] == 1000 * slot + 100 * layer + position)

    def prefill(self, slot: int, length: int):
        self.run(self.placement.admit([slot], [length]))
        self.write(slot, 0, length)
        self.check()

    def step(self, slots):
        positions = [self.filled[s] for s in slots]
        self.run(self.placement.arrange(slots, positions))
        for slot in list(self.filled):
            if slot not in slots:
                del self.filled[slot]
        for slot, position in zip(slots, positions):
            self.write(slot, position, position + 1)
        self.check()


@pytest.mark.parametrize("widths", [[1, 2, 3, 4], [1, 2, 4]])
def test_placement_keeps_every_sequence_in_the_lowest_rows(widths):
    host = HostCache(KVLayout(3, 12, 4, 2, 4), widths)
    host.prefill(2, 3)
    assert host.placement.width == 1  # one sequence: a layout one slot wide
    host.step([2])
    host.prefill(0, 2)
    host.prefill(3, 4)
    assert host.placement.width in (3, 4)
    host.step([2, 0, 3])
    host.step([0, 3])  # 2 leaves from row 0: the highest row moves down into it
    assert host.placement.width == 2 and host.placement.row(3) == 0
    host.prefill(1, 5)
    host.prefill(2, 1)
    assert host.placement.width == 4
    host.step([3, 1, 2, 0])
    host.step([1])
    assert host.placement.width == 1 and host.placement.row(1) == 0
    host.step([1])


pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.runtime.decoding import FrameLoop, Sequence  # noqa: E402
from voxtral_tts.runtime.noise import NoiseSource  # noqa: E402


class Spy:
    """An ONNX Runtime session recording the rows of each run's first output."""

    def __init__(self, session):
        self.session, self.rows = session, []

    def io_binding(self):
        return self.session.io_binding()

    def run_with_iobinding(self, binding):
        self.session.run_with_iobinding(binding)
        self.rows.append(binding.get_outputs()[0].shape()[0])

    def run(self, *args, **kwargs):
        return self.session.run(*args, **kwargs)


@pytest.fixture(scope="module")
def engines(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir, max_batch=3), voxtral_tts.load(tiny_engine_dir)


def test_a_lone_request_runs_one_row(engines):
    batched, alone = engines
    spies = {name: Spy(batched.backend._sessions[name]) for name in ("backbone", "flow_frame")}
    try:
        batched.backend._sessions.update(spies)
        got = batched.generate("Hello there.", voice="casual_male", seed=3, max_frames=8)
    finally:
        batched.backend._sessions.update({name: spy.session for name, spy in spies.items()})
    assert spies["backbone"].rows and set(spies["backbone"].rows) == {1}  # prefill and every step
    assert spies["flow_frame"].rows and set(spies["flow_frame"].rows) == {1}
    np.testing.assert_array_equal(got.codes, alone.generate("Hello there.", voice="casual_male", seed=3,
                                                            max_frames=8).codes)


def joined(tts, texts) -> tuple[FrameLoop, list[Sequence]]:
    """A frame loop of ``tts``'s backend with one sequence per (text, frames), seeded by its index,
    all joined at once."""
    loop = FrameLoop(tts.backend)
    sequences = []
    for i, (text, frames) in enumerate(texts):
        _, embeds = tts.prompt(text, tts.voice_bank.get("neutral_female"))
        sequences.append(Sequence(embeds, NoiseSource(36, seed=i), frames))
    loop.join(*sequences)
    return loop, sequences


def test_steps_follow_the_active_count_and_moved_sequences_keep_their_codes(engines):
    batched, alone = engines
    texts = [("One that goes on for a while, longer than the others.", 14), ("Short.", 3),
             ("A third one.", 6)]
    expected = [alone.generate(t, voice="neutral_female", seed=i, max_frames=n).codes
                for i, (t, n) in enumerate(texts)]
    spy = Spy(batched.backend._sessions["backbone"])
    batched.backend._sessions["backbone"] = spy
    try:
        loop, sequences = joined(batched, texts)
        got = {id(s): [] for s in sequences}
        moved = False
        spy.rows.clear()
        active = []
        while loop.active:
            for sequence, codes in loop.step():
                if codes is not None:
                    got[id(sequence)].append(codes)
            active.append(sum(1 for s in loop.active))
            moved |= any(batched.backend.placement.row(s.slot) != s.slot for s in loop.active)
    finally:
        batched.backend._sessions["backbone"] = spy.session
    assert spy.rows == [n for n in active if n]  # each step at exactly its sequences
    assert moved  # the long one left its slot's row for a lower one
    for sequence, codes in zip(sequences, expected):
        np.testing.assert_array_equal(np.stack(got[id(sequence)]), codes)


def test_torch_cpu_steps_run_the_active_rows(tiny_model_dir):
    pytest.importorskip("torch")
    batched = voxtral_tts.load(tiny_model_dir, backend="torch", device="cpu", dtype="fp32", max_batch=3, capacity=400)
    alone = voxtral_tts.load(tiny_model_dir, backend="torch", device="cpu", dtype="fp32", capacity=400)
    rows = []
    hooks = [module.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
             for module in (batched.backend.model.backbone, batched.backend.model.acoustic_transformer)]
    try:
        texts = [("One that goes on for a while, longer than the others.", 10), ("Short.", 2), ("A third one.", 5)]
        loop, sequences = joined(batched, texts)
        rows.clear()
        got = {id(s): [] for s in sequences}
        expected_rows = []
        while loop.active:
            expected_rows.append(len(loop.active))  # the flow frame: every sequence in flight
            for sequence, codes in loop.step():
                if codes is not None:
                    got[id(sequence)].append(codes)
            if loop.active:
                expected_rows.append(len(loop.active))  # the step: those going on
    finally:
        for hook in hooks:
            hook.remove()
    assert rows == expected_rows
    for (text, frames), i, sequence in zip(texts, range(3), sequences):
        want = alone.generate(text, voice="neutral_female", seed=i, max_frames=frames).codes
        np.testing.assert_array_equal(np.stack(got[id(sequence)]), want)
