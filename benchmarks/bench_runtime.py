"""Speed of the backends side by side, on one machine, in one run, against the machine's roofline.

    python benchmarks/bench_runtime.py MODEL_DIR [--engine ENGINE_DIR ...] [--no-torch]
                                       [--frames 20] [--prompt-tokens 200]

Rows: the torch backend on MODEL_DIR in each ``--torch-dtypes`` compute dtype (default fp32, the
reference, and bf16), then onnxruntime on each ``--engine`` (one per precision; default: the
engine cache's fp32 export of MODEL_DIR); the row that ``voxtral_tts.load(MODEL_DIR)`` picks on
this machine is marked. Each runs in its own subprocess (so peak RSS is its own) over the same prompt and the
same fixed number of frames (END_AUDIO is ignored: random weights decide nothing, and the
cost per frame does not depend on values). Printed per backend: load time, prefill ms, ms per
frame split into backbone step / flow frame / feedback embedding, codec ms per second of audio,
steady-state real-time factor (frames + codec, per second of audio), time to first audio
(streaming: prefill + the first chunk's frames + its codec call), peak RSS. Then the roofline
(``roofline.py``: bandwidth and matmul throughput measured here, bytes and FLOPs per frame per
precision) and each row's ms/frame as a multiple of its precision's floor (torch bf16: bf16
weights at the measured bandwidth, bf16 matmuls at torch's measured throughput).

``--first-audio``: time to first audio instead, voice-prefix cache off and on side by side, for
each ``--text`` (default: the 20-word :data:`SENTENCE`, and :data:`SHORT`) with ``--voice``
(default neutral_female), one request and ``--together`` requests arriving at once, through the
runtime's scheduler (the server's path: ``bench_gpu.measure``). Per row: the prefill calls' ms,
the time to first audio (median and worst), and — for the arrivals together, cache on — the
prefill batched into one padded call against one call per request. A random model's tokenizer
is byte-level (one token per byte: the 20-word sentence is 102 tokens); :data:`SHORT` is 24 bytes,
about what the sentence is to a vocabulary of whole words like the released one.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available, {platform.system()} {platform.release()}"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - start) * 1000.0


#: the first-audio benchmark's sentence: 20 words
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on, and everyone in the square claps."
#: 24 bytes: 24 tokens in a random model's byte-level vocabulary
SHORT = "The band plays on today."


def load_arguments(args) -> tuple[str, dict]:
    """What ``voxtral_tts.load`` is given for this run's backend: the engine or model, and options
    (onnxruntime's threads; torch's dtype, its threads set on torch itself)."""
    path = args.engine[0] if args.backend == "onnxruntime" and args.engine else args.model
    options = {"progress": False}
    if args.backend == "onnxruntime" and args.threads:
        options["threads"] = args.threads
    if args.backend == "torch":
        options["dtype"] = args.dtype
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
    return path, options


def first_audio(args) -> list[dict]:
    """Time to first audio with the prefix cache off and on, for 1 and ``--together`` requests."""
    import voxtral_tts
    from bench_gpu import measure, variants_of

    path, options = load_arguments(args)
    rows = []
    for n in (1, args.together):
        gc.collect()
        tts, load_ms = timed(voxtral_tts.load, path, args.backend, max_batch=n, capacity=args.capacity, **options)
        precision = tts.backend.engine.precision if args.backend == "onnxruntime" else args.dtype
        label = f"{args.backend} {precision}"
        voice = args.voice or "neutral_female"
        for text in args.text or [SENTENCE, SHORT]:
            for _, cache, batched in variants_of(tts.backend, [n]):
                row = measure(tts, text, voice, n, args.frames, cache, rounds=1, halves=False, batched=batched)
                row.update(backend=label, load_s=load_ms / 1000, text_tokens=len(tts.tokenizer.encode(text)),
                           prompt_tokens=len(tts.prompt(text, tts.voice_bank.get(voice))[0]))
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
        del tts
    return rows


def print_first_audio(rows: list[dict]) -> None:
    print(f"{'backend':22s} {'text':>4s} {'prompt':>6s} {'N':>2s} {'cache':>5s} {'prefill':>10s} {'prefill ms':>10s} "
          f"{'TTFA ms med':>11s} {'TTFA ms max':>11s}")
    for r in rows:
        print(
            f"{r['backend']:22s} {r['text_tokens']:4d} {r['prompt_tokens']:6d} {r['concurrency']:2d} "
            f"{r['prefix_cache']:>5s} "
            f"{'batched' if r['batched'] else 'one by one':>10s} {r['prefill_ms']:10.0f} "
            f"{r['ttfa_ms_median']:11.0f} {r['ttfa_ms_max']:11.0f}"
        )
    key = {(r["backend"], r["text_tokens"], r["concurrency"], r["prefix_cache"], r["batched"]): r for r in rows}
    for (backend, tokens, n, cache, batched), r in key.items():
        if cache == "off":
            on = key.get((backend, tokens, n, "on", batched))
            if on:
                print(
                    f"{backend}, {tokens}-token text, N={n}: with the prefix cache, time to first audio "
                    f"×{r['ttfa_ms_median'] / on['ttfa_ms_median']:.2f} lower (median; worst "
                    f"×{r['ttfa_ms_max'] / on['ttfa_ms_max']:.2f}), prefill ×{r['prefill_ms'] / on['prefill_ms']:.2f}"
                )
        elif batched:
            alone = key.get((backend, tokens, n, cache, False))
            if alone:
                print(
                    f"{backend}, {tokens}-token text, N={n} cache {cache}: prefill batched in one call "
                    f"×{alone['prefill_ms'] / r['prefill_ms']:.2f} faster than one call per request (TTFA median "
                    f"{alone['ttfa_ms_median']:.0f} → {r['ttfa_ms_median']:.0f} ms)"
                )


def run_one(args) -> dict:
    import voxtral_tts
    from voxtral_tts.runtime.codec import codec_audio
    from voxtral_tts.runtime.noise import NoiseSource
    from voxtral_tts.testing import flow_one, step_one

    path, options = load_arguments(args)
    tts, load_ms = timed(voxtral_tts.load, path, args.backend, **options)
    model = tts.backend
    voice = tts.voice_bank.get(args.voice)
    # a prompt of about --prompt-tokens tokens: voice rows + text
    words = "The quick brown fox jumps over the lazy dog while the band plays on. "
    text = words
    while tts.tokenizer.speech_prompt_length(text, voice.n_audio_tokens) < args.prompt_tokens:
        text += words
    ids, embeds = tts.prompt(text.strip(), voice)

    model.prefill(embeds)  # warm-up
    prefill = [timed(model.prefill, embeds)[1] for _ in range(args.repeats)]

    noise = NoiseSource(tts.config.audio.n_acoustic_codebook, seed=0)
    hidden = model.prefill(embeds)
    step_ms, flow_ms, feed_ms, frames = [], [], [], []
    for n in range(args.frames + 1):  # frame 0 is a warm-up
        codes, t_flow = timed(flow_one, model, hidden, noise.take()[0])
        codes = codes.copy()
        codes[0] = max(int(codes[0]), 2)  # keep going past END_AUDIO: a fixed frame count
        embed, t_feed = timed(model.embed_codes, codes)
        hidden, t_step = timed(step_one, model, embed, len(ids) + n)
        frames.append(codes)
        if n:
            step_ms.append(t_step)
            flow_ms.append(t_flow)
            feed_ms.append(t_feed)
    codes = np.stack(frames[1:])
    _, codec_ms = timed(codec_audio, model.codec, codes, tts.config.samples_per_frame)
    audio_s = codes.shape[0] * tts.config.samples_per_frame / tts.sample_rate

    start = time.perf_counter()
    next(iter(tts.stream(text.strip(), voice=args.voice, seed=0, max_frames=args.frames)))
    ttfa_ms = (time.perf_counter() - start) * 1000.0

    frame_ms = float(np.median(step_ms) + np.median(flow_ms) + np.median(feed_ms))
    batch_fps = {}
    if args.backend == "onnxruntime":
        from voxtral_tts.runtime.decoding import FrameLoop, Sequence

        width = tts.config.audio.n_acoustic_codebook
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        del tts
        for batch in args.batches:
            if batch > 1:  # one engine in memory at a time: a second fp32 copy would not fit
                model = None
                gc.collect()
                model = voxtral_tts.load(path, args.backend, max_batch=batch, **options).backend
            loop = FrameLoop(model)
            for i in range(batch):
                loop.join(Sequence(embeds, NoiseSource(width, seed=i), 10**6))
            loop.step()  # warm-up
            start, produced = time.perf_counter(), 0
            for _ in range(args.frames):
                produced += sum(codes is not None for _, codes in loop.step())
            batch_fps[batch] = produced / (time.perf_counter() - start)
            del loop
    else:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    # steady-state real-time factor: generation + codec time per second of audio (the prefill is
    # paid once per utterance and shows in the time to first audio)
    total_ms = frame_ms * codes.shape[0] + codec_ms
    precision = model.engine.precision if args.backend == "onnxruntime" else args.dtype
    return {
        "backend": f"{args.backend} {precision}",
        "precision": precision,
        "load_s": load_ms / 1000.0,
        "prompt_tokens": int(len(ids)),
        "prefill_ms": float(np.median(prefill)),
        "frame_ms": frame_ms,
        "backbone_ms": float(np.median(step_ms)),
        "flow_ms": float(np.median(flow_ms)),
        "feedback_ms": float(np.median(feed_ms)),
        "codec_ms_per_audio_s": codec_ms / audio_s,
        "rtf": total_ms / 1000.0 / audio_s,
        "ttfa_ms": ttfa_ms,
        "peak_rss_gb": peak_rss,  # while synthesising one sequence (before the batched reloads)
        "frames": int(codes.shape[0]),
        "batch_fps": batch_fps,
    }


COLUMNS = [
    ("load_s", "load s", "{:.1f}"), ("prefill_ms", "prefill ms", "{:.1f}"), ("frame_ms", "ms/frame", "{:.1f}"),
    ("backbone_ms", "backbone", "{:.1f}"), ("flow_ms", "flow", "{:.1f}"), ("feedback_ms", "feedback", "{:.2f}"),
    ("codec_ms_per_audio_s", "codec ms/audio s", "{:.1f}"), ("rtf", "RTF", "{:.2f}"), ("ttfa_ms", "TTFA ms", "{:.0f}"),
    ("peak_rss_gb", "peak RSS GB", "{:.2f}"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory (the torch backend, and the export source)")
    p.add_argument("--engine", type=Path, action="append", help="engine directory for onnxruntime (repeatable)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch rows")
    p.add_argument("--torch-dtypes", default="fp32,bf16", help="torch compute dtypes, a row each")
    p.add_argument("--dtype", help=argparse.SUPPRESS)  # internal: the torch row's dtype
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--prompt-tokens", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--voice", default=None)
    p.add_argument("--threads", type=int)
    p.add_argument("--batches", default="1,2,4", help="onnxruntime: sequences per call to measure (aggregate frames/s)")
    p.add_argument("--first-audio", action="store_true",
                   help="time to first audio, prefix cache off and on (see the module's docstring)")
    p.add_argument("--together", type=int, default=4, help="--first-audio: requests arriving together")
    p.add_argument("--text", action="append", help="--first-audio: a text to measure (repeatable)")
    p.add_argument("--capacity", type=int, default=1024, help="--first-audio: KV positions per slot")
    p.add_argument("--backend", help=argparse.SUPPRESS)  # internal: run one backend, print JSON
    args = p.parse_args()
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    if args.backend:
        print(json.dumps(first_audio(args) if args.first_audio else run_one(args)))
        return
    rows = []
    runs = ([] if args.no_torch else [("torch", None, d) for d in args.torch_dtypes.split(",") if d]) + \
        [("onnxruntime", e, None) for e in (args.engine or [None])]
    for backend, engine, dtype in runs:
        cmd = [sys.executable, __file__, str(args.model), "--backend", backend, "--frames", str(args.frames),
               "--prompt-tokens", str(args.prompt_tokens), "--repeats", str(args.repeats),
               "--batches", ",".join(map(str, args.batches)), "--together", str(args.together),
               "--capacity", str(args.capacity)] + (["--first-audio"] if args.first_audio else [])
        for text in args.text or []:
            cmd += ["--text", text]
        for flag, value in (("--engine", engine), ("--voice", args.voice), ("--threads", args.threads),
                            ("--dtype", dtype)):
            if value:
                cmd += [flag, str(value)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{backend} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows += result if args.first_audio else [result]
    print(f"machine: {machine()}")
    if args.first_audio:
        texts = args.text or [SENTENCE, SHORT]
        print(f"model: {args.model}  texts: {', '.join(map(repr, texts))}; {args.frames} frames per request")
        print_first_audio(rows)
        return
    from voxtral_tts.api import default_choice

    default_backend, default_dtype = default_choice(args.model)
    default = f"{default_backend} {default_dtype or 'fp32'}"
    print(f"voxtral_tts.load(MODEL_DIR) picks here: {default}")
    print(f"model: {args.model}  prompt {rows[0]['prompt_tokens']} tokens, {rows[0]['frames']} frames")
    print(f"{'backend':28s} " + " ".join(f"{title:>16s}" for _, title, _ in COLUMNS))
    for row in rows:
        label = row["backend"] + (" (default)" if row["backend"] == default else "")
        print(f"{label:28s} " + " ".join(f"{fmt.format(row[key]):>16s}" for key, _, fmt in COLUMNS))
    if len(rows) > 1:
        base = rows[0]
        for row in rows[1:]:
            print(f"{row['backend']} vs {base['backend']}: ms/frame ×{base['frame_ms'] / row['frame_ms']:.2f} faster, "
                  f"prefill ×{base['prefill_ms'] / row['prefill_ms']:.2f}, RTF {base['rtf']:.2f} → {row['rtf']:.2f}")

    for row in rows:
        if row["batch_fps"]:
            print(f"{row['backend']:18s} batched, aggregate frames/s: " + ", ".join(
                f"batch {b}: {fps:.2f} ({fps / row['batch_fps'][min(row['batch_fps'])]:.2f}×)"
                for b, fps in sorted(row["batch_fps"].items(), key=lambda kv: int(kv[0]))))

    from roofline import floor_ms, measure

    from voxtral_tts.config import ModelConfig
    from voxtral_tts.runtime.backends.onnxruntime import physical_cores

    hardware = measure(args.threads or physical_cores())
    config = ModelConfig.from_file(args.model)
    print(f"roofline: memory read {hardware['bandwidth_gbs']:.1f} GB/s; matmul fp32 {hardware['fp32_gflops']:.0f} "
          f"GFLOP/s, int8 {hardware['int8_gflops']:.0f}, int4 {hardware['int4_gflops']:.0f}, "
          f"bf16 {hardware.get('bf16_gflops', 0):.0f} (measured now)")
    for row in rows:
        if row["backend"] != "torch fp32":  # float32 compute over bf16 storage: no floor of its own
            r = floor_ms(config, row["precision"], hardware)
            print(
                f"{row['backend']:18s} {r['bytes_gb']:.2f} GB + {r['gflop']:.1f} GFLOP per frame; "
                f"floor {r['floor_ms']:.0f} ms "
                f"(memory {r['memory_ms']:.0f}, compute {r['compute_ms']:.0f}); measured {row['frame_ms']:.0f} ms = "
                f"{row['frame_ms'] / r['floor_ms']:.2f}× the floor"
            )


if __name__ == "__main__":
    main()
