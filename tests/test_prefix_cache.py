"""Time to first audio: the voice-prefix KV cache, batched prefill, the stream schedule.

Exactness in float32: with the cache on (the default) the fixture's goldens reproduce, from the
cache and not; the codes equal those with the cache off; a prefix is never reused across voices,
backends, precisions or capacities; eviction keeps the byte budget and an evicted voice gives
the same codes again.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.errors import VoxtralError  # noqa: E402
from voxtral_tts.runtime.backend import PrefillItem  # noqa: E402
from voxtral_tts.runtime.codec import parse_stream_chunks, stream_chunk_frames  # noqa: E402
from voxtral_tts.runtime.load_options import TTSOptions  # noqa: E402
from voxtral_tts.runtime.prefix_cache import PrefixCache  # noqa: E402
from voxtral_tts.runtime.request import AudioChunk, PartFinished  # noqa: E402
from voxtral_tts.testing import Forwarding  # noqa: E402
from voxtral_tts.tokenizer import PREFIX_OVERHEAD  # noqa: E402

TEXTS = ["Hello there.", "A second sentence, somewhat longer than the first one!", "Third."]


def same_model(tts, prefix_cache=True, **options):
    """Another TTS over the same backend (a cache of its own, or none; or ``prefix_cache`` itself)."""
    if isinstance(prefix_cache, PrefixCache):
        return voxtral_tts.TTS(tts.backend, tts.tokenizer, tts.voice_bank, TTSOptions(**options), prefix_cache)
    return voxtral_tts.TTS(tts.backend, tts.tokenizer, tts.voice_bank, TTSOptions(prefix_cache, **options))


@pytest.fixture(scope="module")
def ort_tts(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir, max_batch=3, capacity=256)


@pytest.fixture(scope="module")
def torch_tts(tiny_model_dir):
    pytest.importorskip("torch")
    return voxtral_tts.load(tiny_model_dir, backend="torch", dtype="fp32", max_batch=3, capacity=256, progress=False)


@pytest.fixture(params=["onnxruntime", "torch"])
def tts(request, ort_tts, torch_tts):
    return ort_tts if request.param == "onnxruntime" else torch_tts


class CountingPrefill(Forwarding):
    """Records each prefill call's items (lengths after the prefix, prefix lengths)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls: list[list[tuple[int, int]]] = []

    def prefill_many(self, items):
        self.calls.append([(len(i.embeds), 0 if i.prefix is None else i.prefix.length) for i in items])
        return super().prefill_many(items)


# --- the goldens, through voxtral_tts.load(...).generate with the cache on --------------------------

@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_goldens_reproduce_with_the_cache_on(backend, reference_model_dir, reference_engine_dir, golden):
    if backend == "torch":
        pytest.importorskip("torch")
        tts = voxtral_tts.load(reference_model_dir, backend="torch", dtype="fp32", progress=False)
    else:
        tts = voxtral_tts.load(reference_engine_dir)
    cache = tts.scheduler.prefix_cache
    assert cache is not None  # on by default
    for _ in range(2):  # computed, then from the cache
        r = tts.generate("Hello world.", voice="casual_male", noise=golden["noise"])
        np.testing.assert_array_equal(r.prompt_ids, golden["prompt_ids"])
        np.testing.assert_array_equal(r.codes, golden["codes_decoded"])
    assert (cache.stats.misses, cache.stats.hits, cache.stats.entries) == (1, 1, 1)


def test_codes_equal_with_the_cache_off(tts):
    """float32: the same codes with the cache on (miss and hit) and off, every voice, several texts."""
    on, off = same_model(tts), same_model(tts, prefix_cache=False)
    assert off.scheduler.prefix_cache is None
    for _round in range(2):
        for i, text in enumerate(TEXTS):
            for voice in ("casual_male", "neutral_female"):
                a = on.generate(text, voice=voice, max_frames=8, seed=i)
                b = off.generate(text, voice=voice, max_frames=8, seed=i)
                np.testing.assert_array_equal(a.codes, b.codes)
    stats = on.scheduler.prefix_cache.stats
    assert (stats.misses, stats.entries) == (2, 2) and stats.hits == 2 * len(TEXTS) * 2 - 2


def test_only_the_rest_of_the_prompt_is_prefilled(ort_tts):
    counting = CountingPrefill(ort_tts.backend)
    tts = voxtral_tts.TTS(counting, ort_tts.tokenizer, ort_tts.voice_bank)
    r = tts.generate("Hello there.", voice="neutral_female", max_frames=2, seed=0)
    n = ort_tts.voice_bank.get("neutral_female").n_audio_tokens + PREFIX_OVERHEAD
    assert counting.calls == [[(len(r.prompt_ids) - n, n)]]


def test_custom_voice_files_are_keyed_by_content(ort_tts, tmp_path):
    """A copy of a preset under another name hits the preset's entry; other rows do not."""
    import shutil

    src = next(ort_tts.voice_bank.directory.glob("casual_male.*"))
    renamed = tmp_path / f"renamed{src.suffix}"
    shutil.copy(src, renamed)
    tts = same_model(ort_tts)
    a = tts.generate("Same rows.", voice="casual_male", max_frames=4, seed=1)
    b = tts.generate("Same rows.", voice=str(renamed), max_frames=4, seed=1)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert (tts.scheduler.prefix_cache.stats.misses, tts.scheduler.prefix_cache.stats.hits) == (1, 1)
    tts.generate("Same rows.", voice="neutral_female", max_frames=4, seed=1)
    assert tts.scheduler.prefix_cache.stats.misses == 2


# --- never reused where it does not belong ----------------------------------------------------------

def test_never_reused_across_voices_backends_precisions_or_capacities(ort_tts, torch_tts, tiny_engine_dir,
                                                                      tiny_model_dir):
    """One cache shared by five models: an entry each per voice and model, no hit across them."""
    shared = PrefixCache()
    models = [same_model(ort_tts, shared), same_model(torch_tts, shared),
              same_model(voxtral_tts.load(tiny_engine_dir, capacity=128), shared),  # another capacity
              same_model(voxtral_tts.load(tiny_model_dir, backend="torch", dtype="bf16", capacity=256,
                                          progress=False), shared)]  # another precision
    identities = {tts.backend.prefix_identity for tts in models}
    assert len(identities) == len(models)
    for tts in models:
        for voice in ("casual_male", "neutral_female"):
            tts.generate("Hi.", voice=voice, max_frames=2, seed=0)
    assert (shared.stats.misses, shared.stats.hits, shared.stats.entries) == (8, 0, 8)
    for tts in models:  # and each one hits its own
        tts.generate("Hi again.", voice="casual_male", max_frames=2, seed=0)
    assert shared.stats.hits == len(models)


def test_a_prefix_from_another_backend_is_refused(ort_tts, tiny_engine_dir):
    other = voxtral_tts.load(tiny_engine_dir, capacity=128).backend
    embeds = ort_tts.prompt("Hi.", ort_tts.voice_bank.get("casual_male"))[1]
    prefix = other.compute_prefix(embeds[:5])
    with pytest.raises(VoxtralError, match="another backend"):
        ort_tts.backend.prefill(embeds[5:], 0, prefix)


# --- the byte budget ------------------------------------------------------------------------------

def test_eviction_keeps_the_budget_and_an_evicted_voice_gives_the_same_codes(ort_tts):
    sizes = []
    for voice in ("neutral_female", "casual_male"):
        probe = same_model(ort_tts)
        probe.generate("x", voice=voice, max_frames=1, seed=0)
        sizes.append(probe.scheduler.prefix_cache.stats.bytes)
    largest = max(sizes)
    tts = same_model(ort_tts, PrefixCache(budget_bytes=largest))  # room for one voice at a time
    cache = tts.scheduler.prefix_cache
    first = tts.generate("Evicted and back.", voice="neutral_female", max_frames=6, seed=3)
    tts.generate("Another voice.", voice="casual_male", max_frames=2, seed=0)
    assert (cache.stats.entries, cache.stats.evictions) == (1, 1) and cache.stats.bytes <= largest
    again = tts.generate("Evicted and back.", voice="neutral_female", max_frames=6, seed=3)
    assert (cache.stats.misses, cache.stats.hits, cache.stats.evictions) == (3, 0, 2)
    np.testing.assert_array_equal(first.codes, again.codes)
    np.testing.assert_array_equal(first.audio, again.audio)


def test_a_prefix_over_the_whole_budget_is_used_not_kept(ort_tts):
    tts = same_model(ort_tts, PrefixCache(budget_bytes=0))
    off = same_model(ort_tts, prefix_cache=False)
    a = tts.generate("Budget zero.", voice="casual_male", max_frames=5, seed=4)
    np.testing.assert_array_equal(a.codes, off.generate("Budget zero.", voice="casual_male", max_frames=5,
                                                        seed=4).codes)
    stats = tts.scheduler.prefix_cache.stats
    assert (stats.entries, stats.bytes, stats.misses) == (0, 0, 1)
    with pytest.raises(VoxtralError, match="at least 0 MB"):
        same_model(ort_tts, prefix_cache_mb=-1)


# --- batched prefill --------------------------------------------------------------------------------

@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_requests_arriving_together_are_prefilled_in_one_call(tts, cached, batched, monkeypatch):
    """Three requests (two voices: prefixes of different lengths, texts of different lengths) in
    one prefill call — one padded graph call, or one after another inside it — and every request
    gets exactly its solo codes and audio."""
    monkeypatch.setattr(tts.backend, "batch_prefill", batched)
    counting = CountingPrefill(tts.backend)
    together = voxtral_tts.TTS(counting, tts.tokenizer, tts.voice_bank, TTSOptions(prefix_cache=cached))
    voices = ["casual_male", "neutral_female", "casual_male"]
    requests = [together.request(text, voice=voice, max_frames=6, seed=i)
                for i, (text, voice) in enumerate(zip(TEXTS, voices))]
    scheduler = together.scheduler
    for request in requests:
        scheduler.submit(request)
    events = []
    while not scheduler.idle:
        events += scheduler.step()
    assert len(counting.calls) == 1 and len(counting.calls[0]) == 3
    assert all((prefix > 0) == cached for _, prefix in counting.calls[0])
    solo = same_model(tts, prefix_cache=cached)
    for i, (request, text, voice) in enumerate(zip(requests, TEXTS, voices)):
        alone = solo.generate(text, voice=voice, max_frames=6, seed=i)
        codes = [e.codes for e in events if isinstance(e, PartFinished) and e.request is request][0]
        np.testing.assert_array_equal(codes, alone.codes)
        audio = np.concatenate([e.audio for e in events if isinstance(e, AudioChunk) and e.request is request])
        np.testing.assert_allclose(audio, alone.audio, atol=1e-5)  # streamed chunks vs one-shot


def test_batched_prefill_defaults(ort_tts, torch_tts):
    """Batched where it measured faster (torch on the CPU), one by one elsewhere (README)."""
    assert torch_tts.backend.batch_prefill and not ort_tts.backend.batch_prefill
    assert ort_tts.backend.can_batch_prefill  # it can, when asked


def test_padded_rows_give_the_hidden_states_of_one_call_each(tts, monkeypatch):
    embeds = [tts.prompt(text, tts.voice_bank.get(voice))[1] for text, voice in
              zip(TEXTS, ["casual_male", "neutral_female", "casual_male"])]
    prefix = tts.backend.compute_prefix(embeds[0][:9])
    items = [PrefillItem(embeds[0][9:], 2, prefix), PrefillItem(embeds[1], 0), PrefillItem(embeds[2], 1)]
    monkeypatch.setattr(tts.backend, "batch_prefill", True)
    batched = tts.backend.prefill_many(items)
    monkeypatch.setattr(tts.backend, "batch_prefill", False)
    alone = tts.backend.prefill_many(items)
    for a, b in zip(batched, alone):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_device_placed_kv_with_prefixes_and_batches(tiny_engine_dir, ort_tts):
    """The GPU path's copies (OrtValues, DLPack views), run on the CPU: same codes as numpy's."""
    device = voxtral_tts.load(tiny_engine_dir, max_batch=3, capacity=256, kv_placement="device")
    device.backend.batch_prefill = True  # the padded call's copies too
    requests = [device.request(text, voice="neutral_female", max_frames=5, seed=i) for i, text in enumerate(TEXTS)]
    for request in requests:
        device.scheduler.submit(request)
    codes = {}
    while not device.scheduler.idle:
        for event in device.scheduler.step():
            if isinstance(event, PartFinished):
                codes[event.request] = event.codes
    for i, (request, text) in enumerate(zip(requests, TEXTS)):
        np.testing.assert_array_equal(codes[request], ort_tts.generate(text, voice="neutral_female", max_frames=5,
                                                                       seed=i).codes)


# --- the stream schedule ----------------------------------------------------------------------------

def test_stream_schedule():
    sizes, emitted = [], 0
    while emitted < 80:
        sizes.append(stream_chunk_frames(emitted))
        emitted += sizes[-1]
    assert sizes == [2, 3, 5, 5, 5, 5, 25, 25, 25]
    assert parse_stream_chunks("5, 25") == (5, 25) and parse_stream_chunks([2, 25]) == (2, 25)
    for bad in ("", "0,5", "a,b", "5,51", "-2"):
        with pytest.raises(VoxtralError, match="stream schedule"):
            parse_stream_chunks(bad)


def test_first_chunk_after_two_frames_and_a_schedule_of_ones_own(ort_tts):
    default = [len(c) // 1920 for c in ort_tts.stream("Streamed.", voice="casual_male", max_frames=12, seed=2)]
    assert default == [2, 3, 5, 2]
    old = same_model(ort_tts, stream_chunks="5,25")
    chunks = list(old.stream("Streamed.", voice="casual_male", max_frames=12, seed=2))
    assert [len(c) // 1920 for c in chunks] == [5, 7]  # 5, then 25s: the rest at the end
    whole = ort_tts.generate("Streamed.", voice="casual_male", max_frames=12, seed=2).audio
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5)


def test_cli_options(tiny_engine_dir, tmp_path):
    from voxtral_tts.cli import main as run_main

    out = tmp_path / "a.wav"
    assert run_main([str(tiny_engine_dir), "-t", "Hi.", "-o", str(out), "--no-prefix-cache", "--seed", "1",
                     "--max-frames", "3", "-q"]) == 0
    assert out.stat().st_size > 44
    assert run_main([str(tiny_engine_dir), "-t", "Hi.", "-o", str(out), "--prefix-cache-mb", "-1", "-q"]) == 2


def test_server_options(tiny_engine_dir, capsys):
    from voxtral_tts.server.cli import main as serve_main

    assert serve_main([str(tiny_engine_dir), "--stream-chunks", "0,5"]) == 2
    assert "stream schedule" in capsys.readouterr().err
    assert serve_main([str(tiny_engine_dir), "--prefix-cache-mb", "-5"]) == 2
