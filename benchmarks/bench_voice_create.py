"""Voice creation's cost and round trip on one model: seconds per optimisation step and to a finished
voice for a sample of ``--seconds`` (issue #23), and how closely the codes come back.

    python benchmarks/bench_voice_create.py MODEL_DIR [--steps 40] [--seconds 10] [--seed 0] [--device cpu]
        [--threads N] [--compare-decoding]

The sample is the model's own codec output for random valid codes (seeded), so the true codes are
known: it is prepared as a recording would be (:func:`voxtral_tts.reference_audio.prepare`), its
codes found through the decoder (:func:`voxtral_tts.model.inversion.invert`, ``--steps`` at most,
then the straight-through pass) and embedded (:func:`voxtral_tts.voice_from_codes`). Printed: the
machine and its load average (before and after: the machine may be shared), the time to load the
codec, each step's seconds (first, median, mean), the time to a finished voice (load + prepare +
inversion + embedding), and the round trip against a baseline of the same codes shuffled in time:
per-codebook exact recovery (semantic; the 36 acoustic ones, and within one FSQ level), the rows'
relative error and the spectral distance of the decoded audio to the reference.

``--compare-decoding`` first times one step (the loss's forward and backward) side by side, taking
turns: the whole sample as one sequence with banded attention (what :func:`invert` does) against the
72-frame windows with full masked attention (what it did before).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from voxtral_tts.config import N_AUDIO_SPECIAL, ModelConfig  # noqa: E402
from voxtral_tts.model import inversion  # noqa: E402
from voxtral_tts.model.codec import banded_attention  # noqa: E402
from voxtral_tts.model.loading import load_model  # noqa: E402
from voxtral_tts.reference_audio import prepare  # noqa: E402
from voxtral_tts.voice_create import voice_from_codes  # noqa: E402


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" (1, 5, 15 min; {os.cpu_count()} cores)"
    except OSError:
        return "unknown"


def random_codes(config: ModelConfig, n: int, seed: int) -> np.ndarray:
    a = config.audio
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(0, a.semantic_codebook_size, (n, 1)),
                           rng.integers(0, a.acoustic_codebook_size, (n, a.n_acoustic_codebook))],
                          axis=1) + N_AUDIO_SPECIAL


@torch.no_grad()
def spectral_distance(decoder, codes: np.ndarray, reference: np.ndarray) -> float:
    """The multi-resolution STFT part of the inversion's loss (the waveform term taken out)."""
    audio = decoder(torch.from_numpy(codes)[None])[:, :len(reference)]
    target = torch.from_numpy(reference)[None]
    audio = audio * (target.pow(2).mean().sqrt() / audio.pow(2).mean().sqrt().clamp_min(1e-8))
    return float(inversion.stft_loss(audio, target)
                 - inversion.WAVEFORM_WEIGHT * (audio - target).abs().mean() / target.abs().mean())


def compare_decoding(decoder, sample: np.ndarray, n_frames: int, device: str, rounds: int = 3) -> None:
    """Seconds per step, one sequence with banded attention against 72-frame windows with full attention."""
    target = torch.from_numpy(np.ascontiguousarray(sample[:n_frames * decoder.args.samples_per_frame])).to(device)
    latent = torch.randn(n_frames, decoder.args.latent_dim, generator=torch.Generator().manual_seed(0))
    latent = latent.to(device).requires_grad_(True)
    whole = inversion._Decode(decoder, target, n_frames)
    windowed = inversion._Decode(decoder, target, n_frames, chunk=48)

    def step(decode) -> float:
        started = time.perf_counter()
        latent.grad = None
        decode.loss(latent).backward()
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"banded": [], "windows": []}
    for _ in range(rounds + 1):  # the first round warms up and is not counted
        with banded_attention(decoder):
            times["banded"].append(step(whole))
        times["windows"].append(step(windowed))
    banded, windows = statistics.median(times["banded"][1:]), statistics.median(times["windows"][1:])
    print(f"decoding per step (median of {rounds}, taking turns): one sequence of {n_frames} frames, banded attention "
          f"{banded:.2f} s; {len(windowed.spans)} windows of 72 frames, full attention {windows:.2f} s; "
          f"ratio {windows / banded:.2f}×", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory (params.json, consolidated.safetensors)")
    p.add_argument("--steps", type=int, default=40, help="optimisation steps at most (the first pass)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own choice)")
    p.add_argument("--compare-decoding", action="store_true",
                   help="first time a step with banded attention against the 72-frame windows")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()
    print(f"# revision {revision}: python benchmarks/bench_voice_create.py {' '.join(sys.argv[1:])}", flush=True)
    print(f"# machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads, device {args.device}", flush=True)
    print(f"# load average at start: {load_average()}", flush=True)

    config = ModelConfig.from_file(args.model)
    started = time.perf_counter()
    decoder = load_model(args.model, progress=False, blocks=("audio_tokenizer",)).audio_tokenizer.eval()
    load_s = time.perf_counter() - started
    n_params = sum(p.numel() for p in decoder.parameters())
    print(f"codec loaded in {load_s:.1f} s ({n_params / 1e6:.0f} M parameters)", flush=True)

    spf = config.samples_per_frame
    n_frames = int(round(args.seconds * config.sample_rate / spf))
    truth = random_codes(config, n_frames, args.seed)
    with torch.no_grad():
        sample = decoder(torch.from_numpy(truth)[None])[0].float().numpy()
    started = time.perf_counter()
    prepared = prepare(sample, config.sample_rate)
    prepare_s = time.perf_counter() - started
    if len(prepared) != len(sample):  # trimmed: the frames would no longer line up with the true codes
        print(f"note: preparing trimmed the sample ({len(sample)} → {len(prepared)} samples); inverting it "
              "level-set but untrimmed", flush=True)
        prepared = sample * (prepared.std() / max(sample.std(), 1e-8))
    print(f"sample: {n_frames} frames ({n_frames * spf / config.sample_rate:.1f} s), prepared in {prepare_s:.2f} s",
          flush=True)

    if args.compare_decoding:
        compare_decoding(decoder, prepared, n_frames, args.device)

    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(done: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        if done == 1 or done % 10 == 0 or done == total:
            print(f"  step {done}/{total}: {times[-1]:.2f} s, loss {loss:.4f}", flush=True)

    started = time.perf_counter()
    last[0] = started
    found = inversion.invert(decoder, prepared, steps=args.steps, seed=args.seed, device=args.device,
                             progress=False, on_step=on_step)
    invert_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = voice_from_codes(args.model, found.codes)
    embed_s = time.perf_counter() - started
    total_s = load_s + prepare_s + invert_s + embed_s
    print(f"steps taken: {found.steps} ({args.steps} at most + the straight-through pass); "
          f"per step: first {times[0]:.2f} s, median {statistics.median(times):.2f} s, "
          f"mean {statistics.mean(times):.2f} s")
    print(f"inversion {invert_s:.1f} s (with snapping and scoring), embedding {embed_s:.2f} s; "
          f"time to a finished voice: {total_s:.1f} s ({total_s / 60:.1f} min)")
    print(f"loss: continuous {found.continuous_loss:.4f}, snapped codes {found.loss:.4f}")

    rng = np.random.default_rng(0)
    shuffles = [truth[rng.permutation(n_frames)] for _ in range(3)]
    true_rows = voice_from_codes(args.model, truth)

    def recovery(codes):
        exact = (codes == truth).mean(axis=0)
        near = (np.abs(codes[:, 1:] - truth[:, 1:]) <= 1).mean(axis=0)
        error = np.linalg.norm(voice_from_codes(args.model, codes) - true_rows) / np.linalg.norm(true_rows)
        return exact, near, error

    exact, near, error = recovery(found.codes)
    print(f"round trip: semantic exact {100 * exact[0]:.1f} %; acoustic exact {100 * exact[1:].mean():.1f} % "
          f"(per codebook {100 * exact[1:].min():.0f}–{100 * exact[1:].max():.0f} %), within one level "
          f"{100 * near.mean():.1f} % ({100 * near.min():.0f}–{100 * near.max():.0f} %); rows' relative error "
          f"{error:.3f}; spectral distance {spectral_distance(decoder, found.codes, sample):.3f}")
    print("  per acoustic codebook, exact %: " + " ".join(f"{100 * x:.0f}" for x in exact[1:]))
    assert np.array_equal(rows, voice_from_codes(args.model, found.codes))
    for i, shuffled in enumerate(shuffles):
        s_exact, s_near, s_error = recovery(shuffled)
        print(f"shuffled {i}: semantic exact {100 * s_exact[0]:.1f} %; "
              f"acoustic exact {100 * s_exact[1:].mean():.1f} %, "
              f"within one level {100 * s_near.mean():.1f} %; rows' relative error {s_error:.3f}; spectral distance "
              f"{spectral_distance(decoder, shuffled, sample):.3f}", flush=True)
    print(f"# load average at end: {load_average()}")


if __name__ == "__main__":
    main()
