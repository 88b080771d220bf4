"""GPU speed: ms/frame, real-time factor and time to first audio at several concurrencies, for each
GPU backend present, on one machine in one run.

    python benchmarks/bench_gpu.py --random full [--concurrency 1,8,32] [--frames 50]
    python benchmarks/bench_gpu.py MODEL_DIR [--engine ENGINE_DIR ...] [--dtypes bf16,fp32]

``--random full`` is the full-size model with random bf16 weights made directly on the GPU (the
released shapes; no checkpoint is read — the cost of a step does not depend on the values); a
MODEL_DIR loads a checkpoint. Rows, where present: the torch backend on CUDA per ``--dtypes`` with
CUDA graphs, with ``torch.compile``-fused blocks inside them (``--compile``), and without graphs
(``eager``) for comparison; onnxruntime's CUDA execution provider and
the tensorrt backend on each ``--engine`` when those libraries are installed (otherwise the reason
is printed).

At concurrency N, N requests with the same ~``--prompt-tokens`` prompt arrive together and are
decoded as one batch (``BatchDecoder``, as the server does). END_AUDIO is ignored (random weights
decide nothing; a fixed frame count). Measured per row:

- TTFA: from arrival until a request's first audio chunk (5 frames) is decoded — prefills of all N,
  5 batched steps, the codec calls; median and worst over the N requests;
- ms/frame: one batched step (flow frame + backbone step for all N: one frame for each stream),
  then each half timed alone (``flow``, ``backbone``: host copies included);
- frames/s: N / step time, all streams together;
- RTF: wall time of ``--frames`` frames for every stream, with their audio decoded in 25-frame
  chunks as a streaming server does, over the audio duration of one stream (< 1: faster than real
  time).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voxtral_tts.config import END_AUDIO  # noqa: E402
from voxtral_tts.runtime.decoding import (BatchDecoder, Forwarding, Inference, NoiseSource,  # noqa: E402
                                          Sequence, STREAM_CHUNK_FRAMES, STREAM_FIRST_FRAMES, decode_span)


class FixedLength(Forwarding):
    """A backend whose frames never say END_AUDIO: every request runs its full frame count."""

    max_batch = property(lambda self: self.inner.max_batch)

    def decode_steps(self, embeds, positions, slots):
        return self.inner.decode_steps(embeds, positions, slots)

    def flow_frame(self, hidden, noise):
        return self.flow_frames(hidden[None], noise[None])[0]

    def flow_frames(self, hidden, noise):
        codes = self.inner.flow_frames(hidden, noise).copy()
        codes[codes[:, 0] == END_AUDIO, 0] = END_AUDIO + 1
        return codes


def synchronize() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass


def measure(model: Inference, embeds: np.ndarray, n: int, frames: int, spf: int, rounds: int = 2) -> dict:
    """One concurrency level; the first round warms up (graph capture, allocator), the last is kept."""
    model = FixedLength(model)
    width = model.config.audio.n_acoustic_codebook
    for _ in range(rounds):
        decoder = BatchDecoder(model)
        synchronize()
        start = time.perf_counter()
        seqs = []
        prefill_ms = []
        for i in range(n):
            seq = Sequence(embeds, NoiseSource(width, seed=i), frames, tag=[])
            t = time.perf_counter()
            decoder.join(seq)
            prefill_ms.append((time.perf_counter() - t) * 1000)
            seqs.append(seq)
        ttfa, step_ms, emitted = {}, [], {id(s): 0 for s in seqs}
        while decoder.active:
            t = time.perf_counter()
            for seq, codes in decoder.step():
                seq.tag.append(codes)
            step_ms.append((time.perf_counter() - t) * 1000)
            for seq in seqs:  # decode each stream's chunk when it is due, as the server streams
                done = len(seq.tag)
                due = STREAM_FIRST_FRAMES if emitted[id(seq)] == 0 else STREAM_CHUNK_FRAMES
                if done - emitted[id(seq)] >= due or (seq.done and done > emitted[id(seq)]):
                    decode_span(model.decode_audio, seq.tag, emitted[id(seq)], done, spf)
                    synchronize()
                    if emitted[id(seq)] == 0:
                        ttfa[id(seq)] = (time.perf_counter() - start) * 1000
                    emitted[id(seq)] = done
        total_s = time.perf_counter() - start
    audio_s = frames * spf / model.config.sample_rate
    steady = step_ms[STREAM_FIRST_FRAMES:] or step_ms
    # the step's two halves, timed alone (the finished sequences' slots, past their last position)
    hidden = np.stack([s.hidden for s in seqs])
    noise = np.random.default_rng(0).standard_normal((n, width)).astype(np.float32)
    flow_ms, backbone_ms = [], []
    for _ in range(10):
        t = time.perf_counter()
        codes = model.flow_frames(hidden, noise)
        flow_ms.append((time.perf_counter() - t) * 1000)
        embeds_n = np.stack([model.embed_codes(c) for c in codes])
        t = time.perf_counter()
        model.decode_steps(embeds_n, np.full(n, len(embeds) + frames, np.int64), np.arange(n))
        backbone_ms.append((time.perf_counter() - t) * 1000)
    return {
        "flow_ms": statistics.median(flow_ms),
        "backbone_ms": statistics.median(backbone_ms),
        "concurrency": n,
        "prefill_ms": statistics.median(prefill_ms),
        "ttfa_ms_median": statistics.median(ttfa.values()),
        "ttfa_ms_max": max(ttfa.values()),
        "ms_per_frame": statistics.median(steady),
        "frames_per_s": n / (statistics.median(steady) / 1000),
        "rtf": total_s / audio_s,
    }


def gpu_info() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            return (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
                    f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    except ImportError:
        pass
    return "no CUDA GPU visible to torch"


def torch_rows(args, config, tts_parts, text) -> list[dict]:
    import torch

    from voxtral_tts.model.backend import TorchInference
    from voxtral_tts.model.loading import load_model, random_model

    rows = []
    for dtype_name in args.dtypes:
        weight_dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
        started = time.perf_counter()
        if args.random:
            model = random_model(config, weight_dtype=weight_dtype, device=args.device, seed=0)
        else:
            model = load_model(args.model, weight_dtype=weight_dtype, progress=False)
        load_s = time.perf_counter() - started
        cuda = args.device == "cuda"
        variants = [("", True, False)] if cuda else [("", False, False)]
        if cuda and args.compile:
            variants.append((" compiled", True, True))
        if cuda and args.eager:
            variants.append((" eager", False, False))
        for suffix, graphs, compiled in variants:
            started_variant = time.perf_counter()
            inf = TorchInference(model, capacity=args.capacity, device=args.device, dtype=dtype_name,
                                 max_batch=max(args.concurrency), cuda_graphs=graphs, compile=compiled)
            embeds = prompt_embeds(inf, tts_parts, text)
            label = f"torch {args.device} {dtype_name}{suffix}"
            for n in args.concurrency:
                row = {"backend": label, "load_s": load_s, "prompt_tokens": len(embeds),
                       **measure(inf, embeds, n, args.frames, config.samples_per_frame)}
                if cuda:
                    row["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
                row["variant_s"] = time.perf_counter() - started_variant  # set-up, captures, compiles included
                print(json.dumps(row), flush=True)
                rows.append(row)
            del inf
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        del model
        gc.collect()
    return rows


def engine_rows(args, config, tts_parts, text) -> tuple[list[dict], list[str]]:
    import voxtral_tts
    from voxtral_tts.errors import VoxtralError

    rows, skipped = [], []
    for engine in args.engine or []:
        for backend, device in (("onnxruntime", "cuda"), ("tensorrt", "cuda")):
            label = f"{backend} {device} ({Path(engine).name})"
            try:
                started = time.perf_counter()
                tts = voxtral_tts.load(engine, backend, device=device, max_batch=max(args.concurrency),
                                       progress=False)
                load_s = time.perf_counter() - started
            except (VoxtralError, ImportError) as exc:
                skipped.append(f"{label}: not run — {exc}")
                continue
            embeds = prompt_embeds(tts.model, tts_parts, text)
            for n in args.concurrency:
                row = {"backend": label, "load_s": load_s, "prompt_tokens": len(embeds),
                       **measure(tts.model, embeds, n, args.frames, config.samples_per_frame)}
                print(json.dumps(row), flush=True)
                rows.append(row)
            del tts
            gc.collect()
    if not args.engine:
        skipped.append("onnxruntime cuda / tensorrt: not run — no --engine given")
    return rows, skipped


def prompt_embeds(model: Inference, tts_parts, text: str) -> np.ndarray:
    """The prompt's embeddings as the runtime builds them (``TTS.prompt``) on ``model``."""
    from voxtral_tts.runtime.tts import TTS

    tokenizer, voices, voice = tts_parts
    return TTS(model, tokenizer, voices).prompt(text, voice)[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", type=Path, help="model directory (omit with --random)")
    p.add_argument("--random", choices=("full", "tiny"), help="random weights of that size, made on the GPU")
    p.add_argument("--engine", action="append", help="engine directory for onnxruntime-cuda / tensorrt rows")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--frames", type=int, default=50, help="frames per request (80 ms each)")
    p.add_argument("--prompt-tokens", type=int, default=200)
    p.add_argument("--capacity", type=int, default=1024, help="KV positions per slot")
    p.add_argument("--dtypes", default="bf16", help="torch compute dtypes to measure (bf16, fp32)")
    p.add_argument("--no-eager", dest="eager", action="store_false", help="skip the rows without CUDA graphs")
    p.add_argument("--compile", action="store_true",
                   help="also rows with torch.compile-fused transformer blocks inside the CUDA graphs")
    p.add_argument("--voice", default="neutral_female")
    p.add_argument("--device", default="cuda", help="torch rows' device (cpu: to check this script without a GPU)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if (args.model is None) == (args.random is None):
        p.error("give a MODEL_DIR or --random")

    from voxtral_tts.runtime.tts import read_model_dir
    from voxtral_tts.testing import RELEASED_VOICES, full_params, tiny_params, write_random_model

    if args.random:
        light = Path(tempfile.mkdtemp(prefix="voxtral-bench-")) / "model"
        params = full_params() if args.random == "full" else tiny_params()
        write_random_model(light, params, voices=RELEASED_VOICES if args.random == "full" else None,
                           checkpoint=False)
        config, tokenizer, voices = read_model_dir(light)
    else:
        config, tokenizer, voices = read_model_dir(args.model)
    voice = voices.get(args.voice if args.voice in voices.names else None)
    words = "The quick brown fox jumps over the lazy dog while the band plays on. "
    text = words
    while len(tokenizer.encode(text)) + voice.n_audio_tokens + 5 < args.prompt_tokens:
        text += words
    parts = (tokenizer, voices, voice)

    print(f"machine: {gpu_info()}; {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"model: {'random ' + args.random if args.random else args.model}; {args.frames} frames per request")
    rows, skipped = [], []
    try:
        import torch

        if torch.cuda.is_available() or args.device == "cpu":
            rows += torch_rows(args, config, parts, text.strip())
        else:
            skipped.append("torch cuda: not run — no CUDA GPU visible to torch")
    except ImportError:
        skipped.append("torch cuda: not run — torch is not installed")
    more, why = engine_rows(args, config, parts, text.strip())
    rows += more
    skipped += why

    print()
    print(f"{'backend':28s} {'N':>3s} {'prefill ms':>10s} {'TTFA ms (med / max)':>20s} {'ms/frame':>9s} "
          f"{'flow':>6s} {'backbone':>8s} {'frames/s':>9s} {'RTF':>6s}")
    for r in rows:
        print(f"{r['backend']:28s} {r['concurrency']:3d} {r['prefill_ms']:10.1f} "
              f"{r['ttfa_ms_median']:9.0f} / {r['ttfa_ms_max']:<8.0f} {r['ms_per_frame']:9.2f} "
              f"{r['flow_ms']:6.2f} {r['backbone_ms']:8.2f} {r['frames_per_s']:9.1f} {r['rtf']:6.3f}")
    by_key = {(r["backend"], r["concurrency"]): r for r in rows}
    for r in rows:
        for suffix, what in ((" eager", "CUDA graphs ×{:.2f} faster per frame than eager"),
                             (" compiled", "compiled blocks ×{:.2f} faster per frame than plain graphs")):
            other = by_key.get((r["backend"] + suffix, r["concurrency"]))
            if other:
                ratio = other["ms_per_frame"] / r["ms_per_frame"] if suffix == " eager" else \
                    r["ms_per_frame"] / other["ms_per_frame"]
                print(f"{r['backend']} N={r['concurrency']}: " + what.format(ratio))
    for line in skipped:
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"machine": gpu_info(), "rows": rows, "skipped": skipped}, indent=2))


if __name__ == "__main__":
    main()
