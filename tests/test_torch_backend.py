"""The torch backend's decoding machinery — slotted static KV cache, shape buckets, batching, bf16
compute and (on a GPU) CUDA graphs — against the reference fixture.

Every test runs on the CPU; the ``cuda`` variants run where torch sees a GPU and are skipped
elsewhere with the reason. float32 must reproduce the fixture's codes exactly. bf16 flips some
acoustic codes (the smallest acoustic margin is 4e-4, bf16's resolution 4e-3), after which a free
run diverges, so bf16 is checked stage by stage with the golden codes fed back (fixture README).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import voxtral_tts  # noqa: E402
from voxtral_tts.model.loading import load_model  # noqa: E402
from voxtral_tts.runtime.backends.buckets import bucket_for, power_buckets  # noqa: E402
from voxtral_tts.runtime.backends.torch import MIN_KV_BUCKET, TorchBackend  # noqa: E402
from voxtral_tts.runtime.decoding import FrameLoop, Sequence  # noqa: E402
from voxtral_tts.runtime.noise import NoiseSource  # noqa: E402
from voxtral_tts.runtime.load_options import TorchOptions  # noqa: E402
from voxtral_tts.testing import step_one  # noqa: E402

from test_reference import assert_close  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch on this machine")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def backend(model_dir, device, dtype, **kwargs) -> TorchBackend:
    return TorchBackend(load_model(model_dir, progress=False), TorchOptions(device=device, dtype=dtype, **kwargs))


def flow_all(inf, hidden, noise):
    """Frames of any number of sequences, ``max_batch`` per flow call."""
    step = inf.max_batch
    return np.concatenate([inf.flow(hidden[i : i + step], noise[i : i + step]) for i in range(0, len(hidden), step)])


def test_buckets():
    assert power_buckets(1) == [1]
    assert power_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert power_buckets(24) == [1, 2, 4, 8, 16, 24]
    assert power_buckets(4097, 256) == [256, 512, 1024, 2048, 4096, 4097]
    assert [bucket_for(n, power_buckets(24)) for n in (1, 2, 3, 5, 17, 24)] == [1, 2, 4, 8, 24, 24]
    with pytest.raises(voxtral_tts.errors.CapacityError, match="25 positions exceed the KV cache .24 positions."):
        bucket_for(25, power_buckets(24))


@pytest.mark.parametrize("device", DEVICES)
def test_fp32_reproduces_the_fixture(reference_model_dir, golden, device):
    """Through the API: prompt, prefill into a slot, bucketed steps, flow, codec — codes exact."""
    tts = voxtral_tts.load(reference_model_dir, backend="torch", device=device, dtype="fp32", max_batch=2,
                           capacity=300, progress=False)
    assert tts.backend.device.type == device and tts.backend.capacity == 300
    for _ in range(2):  # the voice prefix computed, then from the prefix cache (written into the slot)
        r = tts.generate("Hello world.", voice="casual_male", noise=golden["noise"])
        np.testing.assert_array_equal(r.codes, golden["codes_decoded"])
        assert r.finished
        assert_close(r.audio, golden["waveform"], f"waveform ({device}, fp32)")
    assert tts.scheduler.prefix_cache.stats.hits == 1
    if device == "cuda":  # one graph per (rows, KV bucket) of the step, one per rows of the flow
        assert set(tts.backend.graphs._graphs) == {("step", 1, MIN_KV_BUCKET), ("flow", 1)}


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_stage_by_stage(reference_model_dir, golden, device):
    """bf16 compute, each stage from the golden inputs of that stage (golden codes fed back).

    Bounds: bf16 keeps 8 significant bits (relative step 3.9e-3); through the fixture's two layers
    the hidden states land at ~1e-2 of peak (measured 7e-3 / 9.5e-3 on the CPU), the Euler result
    at ~2e-3; a real error (wrong RoPE for the slotted cache, a missed cache row, a float32/bf16 mix-
    up in the flow) is 1e-1 or more. Semantic codes come from float32 logits and must all agree;
    acoustic codes may flip where their margin is under bf16's resolution (measured 98.6 % agree).
    """
    inf = backend(reference_model_dir, device, "bf16", capacity=64, max_batch=2)
    assert inf.dtype == torch.bfloat16 and inf.kv_cache.layers[0].k.dtype == torch.bfloat16
    assert inf.model.acoustic_transformer.semantic_codebook_output.weight.dtype == torch.float32
    P = len(golden["prompt_ids"])
    h0 = inf.prefill(golden["input_embeddings"], slot=1)
    err = assert_close(h0, golden["frame_hidden"][0], "prefill hidden (bf16)", rtol=3e-2)
    assert err > 1e-4, "bf16 compute gave float32 accuracy: is bf16 really used?"
    hidden = []
    for n, codes in enumerate(golden["codes_decoded"]):
        embed = inf.embed_codes(codes)
        assert_close(embed, golden["feedback_embeddings"][n], f"feedback {n}", rtol=1e-6)
        hidden.append(step_one(inf, embed, P + n, slot=1))
    assert_close(np.stack(hidden), golden["frame_hidden"][1:], "frame hidden (bf16, golden codes fed back)", rtol=3e-2)

    flow = inf.model.acoustic_transformer
    frames = len(golden["codes"])
    with torch.no_grad():
        h = torch.from_numpy(golden["frame_hidden"]).to(inf.device)
        logits = flow.semantic_logits(h[:1]).cpu().numpy()[0]
        x_final = flow.solve(h, torch.from_numpy(golden["noise"][:frames]).to(inf.device)).cpu().numpy()
    assert_close(logits, golden["semantic_logits_frame0"], "semantic logits (float32 head)", rtol=1e-4)
    assert_close(x_final, golden["fm_x_final"], "Euler result (bf16 velocity network)", rtol=1e-2)
    codes = flow_all(inf, golden["frame_hidden"], golden["noise"][:frames])
    np.testing.assert_array_equal(codes[:, 0], golden["codes"][:, 0])
    agree = float((codes[:, 1:] == golden["codes"][:, 1:]).mean())
    print(f"acoustic codes agreeing with float32: {agree:.1%}")
    assert agree >= 0.95


REQUESTS = [  # text, voice, seed, frames
    ("Hello there.", "casual_male", 1, 9),
    ("A somewhat longer sentence, to make the prompts differ in length!", "neutral_female", 2, 12),
    ("Short.", "neutral_female", 3, 6),
    ("The fourth one takes the first free slot.", "casual_male", 4, 7),
]


def decode_together(tts, requests, join_after: int = 2) -> dict:
    """Two utterances join at once, the others between frames as slots free up; codes per text."""
    loop = FrameLoop(tts.backend)
    texts, waiting = {}, []
    for text, voice, seed, frames in requests:
        _, embeds = tts.prompt(text, tts.voice_bank.get(voice))
        waiting.append(Sequence(embeds, NoiseSource(36, seed=seed), frames))
        texts[id(waiting[-1])] = text
    got = {text: [] for text in texts.values()}
    loop.join(waiting.pop(0))
    loop.join(waiting.pop(0))
    step = 0
    while loop.active or waiting:
        if step >= join_after and waiting and loop.has_room:
            loop.join(waiting.pop(0))
        for utterance, codes in loop.step():
            if codes is not None:
                got[texts[id(utterance)]].append(codes)
        step += 1
    return {text: np.stack(codes) for text, codes in got.items()}


@pytest.mark.parametrize("device", DEVICES)
def test_batched_codes_equal_one_at_a_time(tiny_model_dir, device):
    """Sequences at different positions in one step (dummy rows for free slots, the slot reused by
    a later sequence) give exactly the codes each gets alone."""
    batched = voxtral_tts.load(tiny_model_dir, backend="torch", device=device, dtype="fp32", max_batch=3,
                               capacity=400, progress=False)
    alone = voxtral_tts.load(tiny_model_dir, backend="torch", device=device, dtype="fp32", capacity=400,
                             progress=False)
    got = decode_together(batched, REQUESTS)
    for text, voice, seed, frames in REQUESTS:
        expected = alone.generate(text, voice=voice, seed=seed, max_frames=frames).codes
        np.testing.assert_array_equal(got[text], expected)


def test_torch_codes_equal_onnxruntime(tiny_model_dir, tiny_engine_dir):
    """The torch backend's new decode path and the exported graphs agree on the tiny model."""
    pytest.importorskip("onnxruntime")
    torch_tts = voxtral_tts.load(tiny_model_dir, backend="torch", dtype="fp32", capacity=512, progress=False)
    ort_tts = voxtral_tts.load(tiny_engine_dir)
    for text, voice, seed, frames in REQUESTS[:2]:
        a = torch_tts.generate(text, voice=voice, seed=seed, max_frames=frames)
        b = ort_tts.generate(text, voice=voice, seed=seed, max_frames=frames)
        np.testing.assert_array_equal(a.codes, b.codes)


@CUDA
def test_cuda_graphs_equal_eager(reference_model_dir, tiny_model_dir):
    """Graph replay computes exactly what the eager calls compute, bf16 included, batched."""
    for dtype in ("fp32", "bf16"):
        runs = {}
        for graphs in (True, False):
            tts = voxtral_tts.load(tiny_model_dir, backend="torch", device="cuda", dtype=dtype, max_batch=3,
                                   capacity=400, cuda_graphs=graphs, progress=False)
            runs[graphs] = decode_together(tts, REQUESTS)
            if graphs:
                assert len(tts.backend.graphs) >= 4
        for text in runs[True]:
            np.testing.assert_array_equal(runs[True][text], runs[False][text])


def test_option_errors(reference_model_dir, tiny_engine_dir):
    model = load_model(reference_model_dir, progress=False)
    with pytest.raises(voxtral_tts.VoxtralError, match="max_batch must be between 1 and 64"):
        TorchBackend(model, TorchOptions(max_batch=0))
    with pytest.raises(voxtral_tts.VoxtralError, match="unknown dtype 'fp8'"):
        TorchBackend(model, TorchOptions(dtype="fp8"))
    with pytest.raises(voxtral_tts.VoxtralError, match="CUDA graphs need device 'cuda'"):
        TorchBackend(model, TorchOptions(cuda_graphs=True))
    inf = TorchBackend(model, TorchOptions(dtype="fp32", capacity=20))
    dim = model.config.backbone.dim
    with pytest.raises(voxtral_tts.errors.CapacityError, match="prompt of 21 tokens exceeds the KV cache"):
        inf.prefill(np.zeros((21, dim), np.float32))
    with pytest.raises(voxtral_tts.VoxtralError, match=r"slots \[1\] are not distinct slots of 0..0"):
        inf.prefill(np.zeros((3, dim), np.float32), slot=1)
    with pytest.raises(voxtral_tts.errors.CapacityError, match="position 20 is beyond the KV cache"):
        step_one(inf, np.zeros(dim, np.float32), 20)
    with pytest.raises(voxtral_tts.VoxtralError, match="a flow call takes 1 to 1"):
        inf.flow(np.zeros((2, dim), np.float32), np.zeros((2, 36), np.float32))
    with pytest.raises(voxtral_tts.VoxtralError, match="a codec call takes 1 to 75 frames"):
        inf.codec(np.full((76, 37), 2))
    with pytest.raises(voxtral_tts.VoxtralError, match="is an engine directory; the torch backend needs a model"):
        TorchBackend.from_path(tiny_engine_dir)
    if not torch.cuda.is_available():
        with pytest.raises(voxtral_tts.VoxtralError, match="sees no CUDA GPU"):
            TorchBackend(model, TorchOptions(device="cuda"))


@pytest.mark.slow  # a benchmark script in a subprocess
def test_gpu_benchmark_script_runs_on_the_cpu(tmp_path):
    """benchmarks/bench_gpu.py end to end on a tiny random model (its GPU rows need a GPU): the
    table has a row per concurrency with finite figures, and absent backends are named."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(script), "--random", "tiny", "--device", "cpu", "--concurrency", "1,2",
                           "--frames", "6", "--prompt-tokens", "40", "--capacity", "128", "--dtypes", "fp32",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["concurrency"], r["prefix_cache"], r["batched"]) for r in rows] == [
        (1, "off", True), (1, "on", True), (2, "off", True), (2, "on", True), (2, "on", False)]
    assert all(r["backend"] == "torch cpu fp32" for r in rows)
    assert [r["prefill_calls"] for r in rows] == [1] * 5  # N requests arriving together: one prefill call
    for r in rows:
        assert 0 < r["ms_per_frame"] and 0 < r["ttfa_ms_median"] <= r["ttfa_ms_max"] and 0 < r["rtf"]
        assert r["prompt_tokens"] > 40 - 5
    assert "onnxruntime cuda / tensorrt: not run" in proc.stdout
    assert "lower with the prefix cache" in proc.stdout and "faster than one by one" in proc.stdout


@pytest.mark.slow  # torch.compile of the blocks
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_blocks_match(reference_model_dir, golden, device):
    """``compile=True`` (torch.compile-fused blocks inside the captured calls) computes the same
    function: bf16 stage by stage within the bounds of test_bf16_stage_by_stage."""
    inf = backend(reference_model_dir, device, "bf16", capacity=64, max_batch=2, compile=True)
    P = len(golden["prompt_ids"])
    inf.prefill(golden["input_embeddings"], slot=0)
    hidden = [step_one(inf, inf.embed_codes(c), P + n) for n, c in enumerate(golden["codes_decoded"][:4])]
    assert_close(np.stack(hidden), golden["frame_hidden"][1:5], "frame hidden (bf16, compiled blocks)", rtol=3e-2)
    codes = flow_all(inf, golden["frame_hidden"], golden["noise"][: len(golden["codes"])])
    np.testing.assert_array_equal(codes[:, 0], golden["codes"][:, 0])
    assert float((codes[:, 1:] == golden["codes"][:, 1:]).mean()) >= 0.95
    if device == "cuda":
        assert len(inf.graphs) == 2  # the step at rows 1 (one KV bucket), the flow at rows 2


def test_packed_bf16_linears_are_exact(reference_model_dir):
    """CPU bf16: the oneDNN-packed weights compute exactly what F.linear computes in bf16, for a
    step, the flow head's rows and a prompt; the semantic head stays float32 and unpacked."""
    from voxtral_tts.model.layers import Linear
    from voxtral_tts.runtime.backends.torch import pack_linears, set_precision

    model = load_model(reference_model_dir, progress=False)
    set_precision(model, torch.bfloat16)
    linears = [m for block in (model.backbone, model.acoustic_transformer) for m in block.modules()
               if isinstance(m, Linear) and m.weight.dtype == torch.bfloat16]
    layer = model.backbone.layers[0].feed_forward.w1
    xs = [torch.randn(shape, dtype=torch.bfloat16) for shape in ((1, 64), (6, 64), (2, 17, 64))]
    with torch.no_grad():
        before = [layer(x) for x in xs]
        assert pack_linears(model) == len(linears) > 0
        assert "weight" not in layer._parameters and layer.packed_weight.is_mkldnn
        for x, expected in zip(xs, before):
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
    assert model.acoustic_transformer.semantic_codebook_output.weight.dtype == torch.float32
    with pytest.raises(voxtral_tts.VoxtralError, match="packed for bf16 on the CPU by another torch backend"):
        TorchBackend(model, TorchOptions(dtype="fp32"))
