"""The PyTorch reference reproduces ../shared/fixtures/reference-tiny stage by stage.

Tolerance: the fixture was computed in float32 (mlx-audio) and cross-checked by an independent
PyTorch pipeline to 1.5e-6 (hidden states) and 3.2e-6 (waveform). Float32 implementations differ
by summation order only, ~1e-6 relative after a few layers; we allow 1e-4 of each array's peak
magnitude — 100× that noise, yet far below any real error (a wrong ALiBi convention, RoPE layout,
time embedding order or missing LayerScale changes results by 1e-1 or more; one such case is
asserted to fail below). Codes must match exactly: the smallest acoustic margin is 4e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voxtral_tts.model.codec import alibi_slopes  # noqa: E402
from voxtral_tts.model.kv import StaticCache  # noqa: E402
from voxtral_tts.model.loading import load_model  # noqa: E402
from voxtral_tts.voices import read_voice_file  # noqa: E402

RTOL = 1e-4


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> float:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = float(np.abs(actual - expected).max() / np.abs(expected).max())
    print(f"{what}: max error {err:.2e} of peak")
    assert err <= rtol, f"{what}: max error {err:.3e} of peak exceeds {rtol}"
    return err


@pytest.fixture(scope="module")
def model(reference_model_dir):
    return load_model(reference_model_dir, progress=False)


@pytest.fixture(scope="module")
def run(model, golden, reference_model_dir):
    """Prefill and the whole frame loop, keeping every stage the fixture records."""
    backbone, flow = model.backbone, model.acoustic_transformer
    ids = torch.from_numpy(golden["prompt_ids"].astype(np.int64))
    voice = torch.from_numpy(read_voice_file(reference_model_dir / "voice_embedding" / "casual_male.pt"))
    out = {}
    with torch.inference_mode():
        embeds = backbone.embed_tokens(ids)
        embeds[ids == 24] = voice
        out["input_embeddings"] = embeds.numpy()
        cache = StaticCache.for_backbone(backbone, 1, 64)
        P = len(ids)
        hidden = backbone(embeds[None], torch.arange(P), kv=cache)[0]
        out["prefill_hidden"] = hidden.numpy()
        h = hidden[-1:]
        out["semantic_logits_frame0"] = flow.semantic_logits(h)[0].numpy()
        noise = torch.from_numpy(golden["noise"])
        frames, hiddens, feedback, velocities, finals, states0 = [], [h], [], [], [], None
        for n in range(noise.shape[0]):
            trace = {}
            finals.append(flow.solve(h, noise[n : n + 1], trace)[0])
            velocities.append(trace["velocity"][:, :, 0])
            if n == 0:
                states0 = trace["x_t"][:, 0]
            codes = flow(h, noise[n : n + 1])
            frames.append(codes[0])
            if codes[0, 0] == 1:
                break
            e = backbone.embed_codes(codes)
            feedback.append(e[0])
            h = backbone(e[None], torch.tensor([P + n]), kv=cache)[0]
            hiddens.append(h)
    out.update(
        codes=torch.stack(frames).numpy(), frame_hidden=torch.cat(hiddens).numpy(),
        feedback_embeddings=torch.stack(feedback).numpy(), fm_velocity=torch.stack(velocities).numpy(),
        fm_x_final=torch.stack(finals).numpy(), fm_x_t_frame0=states0.numpy(),
    )
    return out


def test_prompt_embeddings(run, golden):
    assert_close(run["input_embeddings"], golden["input_embeddings"], "input_embeddings", rtol=0)


def test_prefill_hidden(run, golden):
    assert_close(run["prefill_hidden"], golden["prefill_hidden"], "prefill_hidden")


def test_semantic_logits_frame0(run, golden):
    assert_close(run["semantic_logits_frame0"], golden["semantic_logits_frame0"], "semantic_logits_frame0")


def test_euler_states_and_velocities_frame0(run, golden):
    assert_close(run["fm_x_t_frame0"], golden["fm_x_t_frame0"], "fm_x_t_frame0")
    assert_close(run["fm_velocity"][0], golden["fm_velocity_frame0"], "fm_velocity_frame0")


def test_velocities_and_final_states_every_frame(run, golden):
    assert_close(run["fm_velocity"], golden["fm_velocity"], "fm_velocity")
    assert_close(run["fm_x_final"], golden["fm_x_final"], "fm_x_final")


def test_codes_exact_and_stop_at_frame_9(run, golden):
    np.testing.assert_array_equal(run["codes"], golden["codes"])
    assert run["codes"].shape[0] == 10 and run["codes"][9, 0] == 1  # END_AUDIO at frame 9
    assert (run["codes"][9, 1:] == 2).all()


def test_frame_hidden_and_feedback(run, golden):
    assert_close(run["frame_hidden"], golden["frame_hidden"], "frame_hidden")
    assert_close(run["feedback_embeddings"], golden["feedback_embeddings"], "feedback_embeddings")


def test_codec_latent_and_waveform(model, golden):
    codes = torch.from_numpy(golden["codes_decoded"].astype(np.int64))[None]
    with torch.inference_mode():
        latent = model.audio_tokenizer.dequantize(codes)[0].numpy()
        wave = model.audio_tokenizer(codes)[0].numpy()
    assert_close(latent, golden["codec_latent"], "codec_latent")
    assert wave.shape == (9 * 1920,)
    assert_close(wave, golden["waveform"], "waveform")
    # the textbook ALiBi slopes give a clearly different waveform: the check can tell them apart
    far = float(np.abs(wave - golden["waveform_other_alibi"]).max() / np.abs(golden["waveform"]).max())
    assert far > 100 * RTOL


def test_alibi_slopes(golden):
    np.testing.assert_array_equal(alibi_slopes(4).numpy(), golden["alibi_slopes"])
    np.testing.assert_allclose(alibi_slopes(8).numpy(), [1, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128])


def test_weights_stored_in_bf16_compute_the_same(reference_model_dir, golden):
    """bf16 storage (for the full model on small machines) is exact: the checkpoint is bf16."""
    model = load_model(reference_model_dir, weight_dtype=torch.bfloat16, progress=False)
    assert model.backbone.layers[0].attention.wq.weight.dtype == torch.bfloat16
    ids = torch.from_numpy(golden["prompt_ids"].astype(np.int64))
    with torch.inference_mode():
        embeds = torch.from_numpy(golden["input_embeddings"])
        hidden = model.backbone(embeds[None], torch.arange(len(ids)))[0]
    assert_close(hidden.numpy(), golden["prefill_hidden"], "prefill_hidden (bf16 storage)")


def test_api_reproduces_the_fixture(reference_model_dir, golden):
    """End to end through voxtral_tts.load: noise given explicitly, or as the fixture's seed."""
    import voxtral_tts

    tts = voxtral_tts.load(reference_model_dir, backend="torch", dtype="fp32", progress=False)
    for kwargs in ({"noise": golden["noise"]}, {"seed": 1234, "max_frames": 16}):
        r = tts.generate("Hello world.", voice="casual_male", **kwargs)
        np.testing.assert_array_equal(r.prompt_ids, golden["prompt_ids"])
        np.testing.assert_array_equal(r.codes, golden["codes_decoded"])
        assert r.finished and r.sample_rate == 24000 and r.audio.dtype == np.float32
        assert_close(r.audio, golden["waveform"], f"waveform via API {sorted(kwargs)}")
        assert_close(tts.codes_to_audio(r.codes), golden["waveform"], "tts.codes_to_audio")
