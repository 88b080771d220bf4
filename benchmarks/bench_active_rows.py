"""What a decode step's idle slots cost: one engine loaded at ``max_batch`` 1 and N side by side,
measured alternately (so machine load falls on both alike) through the runtime's scheduler.

    python benchmarks/bench_active_rows.py ENGINE_DIR [--max-batch 4] [--frames 10] [--repeats 2]

Rows: a lone request at max_batch 1 and at max_batch N (ratio target ≤ 1.05: a step runs only its
active rows), and N requests together at max_batch N against the same N one after another at
max_batch 1. Every request runs ``--frames`` frames (END_AUDIO ignored, as in bench_gpu.py), the
voice-prefix cache off; wall time per request set (prefill included) and the steady time of one
frame (flow + backbone step), medians over ``--repeats`` measured rounds (each after a warm-up).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import voxtral_tts  # noqa: E402
from bench_gpu import measure  # noqa: E402

TEXT = "A lone request on a server with room for four should cost no more than on one sized for one."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("engine", type=Path)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--voice", default="neutral_female")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip()  # the code as it is imported
    print(f"# revision {revision}: python benchmarks/bench_active_rows.py {' '.join(sys.argv[1:])}", flush=True)
    options = {"threads": args.threads} if args.threads else {}
    one = voxtral_tts.load(args.engine, args.backend, max_batch=1, **options)
    many = voxtral_tts.load(args.engine, args.backend, max_batch=args.max_batch, **options)
    audio_s = args.frames * one.config.samples_per_frame / one.sample_rate
    n = args.max_batch
    cases = {"lone@1": (one, 1), f"lone@{n}": (many, 1), f"{n} together@{n}": (many, n)}
    wall = {name: [] for name in cases}
    frame = {name: [] for name in cases}
    for _ in range(args.repeats):  # alternate, so load drift hits every case
        for name, (tts, count) in cases.items():
            row = measure(tts, TEXT, args.voice, count, args.frames, cache=False, halves=False)
            wall[name].append(row["rtf"] * audio_s)
            frame[name].append(row["ms_per_frame"])
            print(f"  {name}: {wall[name][-1]:.2f} s, {row['ms_per_frame']:.0f} ms/frame", flush=True)
    print(f"# {platform.processor() or platform.machine()}, {args.backend}, "
          f"{args.engine}, {args.frames} frames per request, median of {args.repeats}")
    median = {name: statistics.median(times) for name, times in wall.items()}
    per_frame = {name: statistics.median(times) for name, times in frame.items()}
    for name, times in wall.items():
        print(f"{name:>16}: {median[name]:7.2f} s  ({', '.join(f'{t:.2f}' for t in times)}); "
              f"{per_frame[name]:.0f} ms per frame ({', '.join(f'{t:.0f}' for t in frame[name])})")
    print(f"lone request, max_batch {n} / max_batch 1: {median[f'lone@{n}'] / median['lone@1']:.3f}x wall, "
          f"{per_frame[f'lone@{n}'] / per_frame['lone@1']:.3f}x per frame")
    print(f"{n} requests together at max_batch {n} vs one after another at max_batch 1: "
          f"{n * median['lone@1'] / median[f'{n} together@{n}']:.2f}x faster")


if __name__ == "__main__":
    main()
