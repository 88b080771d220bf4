"""Long-form and batch jobs at max_batch 1 and N, side by side in one run (issue #26's figures).

    python benchmarks/bench_longform.py ENGINE_OR_MODEL_DIR [--max-batch 4] [--frames 12] [--repeats 2]

Three jobs, each timed on a model loaded with ``max_batch=1`` and one with ``max_batch=N`` (both in
this process, alternating run by run so that the machine's drift hits both alike), after a warm-up
that also fills each one's voice-prefix cache:

- **one long text**: :data:`PARTS` (8 sentences of ≤ 100 characters) spoken as one request with
  ``part_chars=100``: 8 parts, which the scheduler runs side by side where it has slots;
- **a batch of texts**: :data:`LINES` (20 short texts) through ``TTS.synthesize_many``, the way
  ``voxtral-run --batch`` runs them: utterances per minute;
- **a lone request**: one sentence, one part — a step costs what its active rows cost, so N slots
  with one in use must cost no more than one slot.

Every part makes exactly ``--frames`` frames (``max_frames``; a random model never says END_AUDIO
before that in practice: a part that ends early is counted and printed), so the work is the same
at both batch sizes and only the scheduling differs. Printed: the median wall time of each job at
each batch size, the ratio, and the git revision and command to commit with the output.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runtime import machine  # noqa: E402

#: one long text: 8 sentences of at most 100 characters each (one part each with part_chars=100)
PARTS = [
    "The morning train left the station a few minutes late, and nobody seemed to mind very much.",
    "Outside the window, fields of wheat rolled past under a pale and cloudless autumn sky.",
    "A conductor walked slowly down the aisle, checking tickets and answering questions.",
    "Two children in the front row were counting the cows they saw along the way.",
    "An old man near the door was reading a newspaper that was already three days old.",
    "By noon the train had crossed the river and was climbing into the quiet green hills.",
    "Lunch was served in the dining car: soup, fresh bread, and a small piece of cheese.",
    "When the train finally arrived, the platform was full of people waiting in the sun.",
]
#: a batch of 20 short texts (a data set's lines)
LINES = [f"This is line number {n} of the batch, read aloud for the data set." for n in range(1, 21)]
LONE = "A single sentence, spoken alone on a server with room for more."


def revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def job_long(tts, options) -> tuple[int, int]:
    """(parts, frames) of the 8-part text as one request."""
    result = tts.synthesize(" ".join(PARTS), options, part_chars=100)
    return len(result.parts), result.n_frames


def job_batch(tts, options) -> tuple[int, int]:
    """(utterances, frames) of the 20 lines through synthesize_many."""
    results = [result for _, result in tts.synthesize_many(LINES, options)]
    return len(results), sum(r.n_frames for r in results)


def job_lone(tts, options) -> tuple[int, int]:
    result = tts.generate(LONE, options)
    return 1, result.n_frames


JOBS = {"one 8-part text": job_long, "20 texts (synthesize_many)": job_batch, "a lone request": job_lone}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="engine or model directory")
    p.add_argument("--backend", help="default: the engine's own (voxtral_tts.load's choice)")
    p.add_argument("--max-batch", type=int, default=4, help="the batch size compared with 1")
    p.add_argument("--frames", type=int, default=12, help="frames per part (max_frames)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--voice", default="neutral_female")
    p.add_argument("--jobs", default=",".join(JOBS), help="which jobs, by name, comma-separated")
    args = p.parse_args()
    # every part is cut at --frames on purpose: the runtime's warning about it would be said each time
    logging.getLogger("voxtral_tts").setLevel(logging.ERROR)

    import voxtral_tts
    from voxtral_tts import SpeechOptions

    print(f"git revision: {revision()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    sizes = (1, args.max_batch)
    models = {}
    for size in sizes:
        start = time.perf_counter()
        models[size] = voxtral_tts.load(args.model, args.backend, max_batch=size, progress=False)
        print(f"loaded max_batch={size} ({models[size].backend.name}) in {time.perf_counter() - start:.1f} s")
    tokens = len(models[1].tokenizer.encode(PARTS[0]))
    print(f"model: {args.model}; {args.frames} frames per part; voice {args.voice}; the first part is {tokens} "
          f"text tokens")
    options = SpeechOptions(voice=args.voice, seed=0, max_frames=args.frames)
    for size in sizes:  # warm-up: the voice's prefix cached, every code path run once
        job_lone(models[size], options)

    wanted = [name.strip() for name in args.jobs.split(",")]
    print(f"\n{'job':30s} {'max_batch':>9s} {'median s':>9s} {'runs s':>18s} {'work':>16s}")
    for name in wanted:
        job = JOBS[name]
        times: dict[int, list[float]] = {size: [] for size in sizes}
        work = {}
        for _ in range(args.repeats):
            for size in sizes:
                start = time.perf_counter()
                work[size] = job(models[size], options)
                times[size].append(time.perf_counter() - start)
        for size in sizes:
            runs = ", ".join(f"{t:.2f}" for t in times[size])
            items, frames = work[size]
            print(f"{name:30s} {size:9d} {statistics.median(times[size]):9.2f} {runs:>18s} "
                  f"{items:4d} × {frames:5d} fr")
        one, many = (statistics.median(times[size]) for size in sizes)
        if name == "a lone request":
            print(f"{'':30s} max_batch {args.max_batch} / max_batch 1: {many / one:.3f}× the time (target ≤ 1.05)")
        else:
            print(f"{'':30s} max_batch {args.max_batch} vs 1: {one / many:.2f}× faster"
                  + (f"; {60 * work[1][0] / one:.1f} vs {60 * work[args.max_batch][0] / many:.1f} utterances/min"
                     if name.startswith("20") else ""))


if __name__ == "__main__":
    main()
