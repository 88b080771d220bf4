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

At concurrency N, N requests with the same ~``--prompt-tokens`` prompt arrive together and run
through the runtime's scheduler — the server's own path: admission and one prefill call for all N
(batched where the backend batches), one batched frame for all N per step, streamed codec chunks
(the default schedule: 2, 3, 5, 5, 5, 5, then 25 frames) — once with the voice-prefix cache off
and once on (``prefix_cache``; on, the voice's prefix is cached by the warm-up round, as in a
running server). END_AUDIO is ignored (random weights decide nothing; a fixed frame count).
Measured per row:

- TTFA: from arrival until a request's first audio chunk (2 frames) is decoded — the prefill of
  all N, 2 batched steps, the codec calls; median and worst over the N requests;
- prefill_ms: all prefill calls of the measured round together (``prefill_calls`` of them);
- ms/frame: one batched step (flow frame + backbone step for all N: one frame for each stream),
  then each half timed alone (``flow``, ``backbone``: host copies included);
- frames/s: N / step time, all streams together;
- RTF: wall time of ``--frames`` frames for every stream, with their audio in the scheduler's
  streamed chunks, over the audio duration of one stream (< 1: faster than real time).
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
from voxtral_tts.runtime.backend import Backend  # noqa: E402
from voxtral_tts.runtime.constants import STREAM_CHUNKS  # noqa: E402
from voxtral_tts.runtime.prefix_cache import PrefixCache  # noqa: E402
from voxtral_tts.runtime.request import AudioChunk, RequestFailed  # noqa: E402
from voxtral_tts.runtime.scheduler import Scheduler  # noqa: E402
from voxtral_tts.runtime.tts import TTS  # noqa: E402
from voxtral_tts.testing import Forwarding  # noqa: E402
from voxtral_tts.tokenizer import PREFIX_OVERHEAD  # noqa: E402


class Timed(Forwarding):
    """The backend under test, its frames never END_AUDIO (every request runs its full frame
    count), each prefill and each frame's flow + backbone step timed (device synchronised)."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.prefill_ms: list[float] = []
        self.frame_ms = 0.0  # flow + step time since the last reset

    def _timed(self, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        synchronize()
        return out, (time.perf_counter() - start) * 1000

    def _prefill(self, items):
        hidden, ms = self._timed(self.inner.prefill_many, items)
        self.prefill_ms.append(ms)
        return hidden

    def _step(self, embeds, positions, slots):
        hidden, ms = self._timed(self.inner.step, embeds, positions, slots)
        self.frame_ms += ms
        return hidden

    def _flow(self, hidden, noise, semantic, expressiveness):
        codes, ms = self._timed(self.inner.flow, hidden, noise, semantic, expressiveness)
        self.frame_ms += ms
        codes = codes.copy()
        codes[codes[:, 0] == END_AUDIO, 0] = END_AUDIO + 1
        return codes


def synchronize() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass


def measure(tts: TTS, text: str, voice: str, n: int, frames: int, cache: bool, rounds: int = 2,
            halves: bool = True, batched: bool | None = None) -> dict:
    """One concurrency level through the runtime's scheduler (the server's path: admission, batched
    prefill, batched frames, streamed codec chunks), with the voice-prefix cache or without (on:
    the voice's prefix is cached before the first round, as in a running server); the first of
    ``rounds`` warms up (graph capture, allocator), the last is kept. ``halves``: also time the
    flow frame and the backbone step alone. ``batched``: prefill the N prompts in one padded call
    (True) or one after another (False) instead of the backend's default."""
    default = tts.backend.batch_prefill
    if batched is not None:
        tts.backend.batch_prefill = batched and tts.backend.can_batch_prefill
    try:
        return _measure(tts, text, voice, n, frames, cache, rounds, halves)
    finally:
        tts.backend.batch_prefill = default


def _measure(tts: TTS, text: str, voice: str, n: int, frames: int, cache: bool, rounds: int, halves: bool) -> dict:
    backend = Timed(tts.backend)
    scheduler = Scheduler(backend, tts.prompt, PrefixCache() if cache else None)
    if cache:
        embeds = tts.prompt(text, tts.voice_bank.get(voice))[1]
        scheduler.prefix_cache.get(backend, embeds[: tts.voice_bank.get(voice).n_audio_tokens + PREFIX_OVERHEAD])
    for _ in range(rounds):
        backend.prefill_ms.clear()
        requests = [tts.request(text, voice=voice, max_frames=frames, seed=i, part_chars=None) for i in range(n)]
        synchronize()
        start = time.perf_counter()
        for request in requests:
            scheduler.submit(request)
        ttfa, frame_ms = {}, []
        while not scheduler.idle:
            backend.frame_ms = 0.0
            events = scheduler.step()
            frame_ms.append(backend.frame_ms)
            for event in events:
                if isinstance(event, RequestFailed):
                    raise event.error
                if isinstance(event, AudioChunk) and event.request not in ttfa:
                    synchronize()
                    ttfa[event.request] = (time.perf_counter() - start) * 1000
        total_s = time.perf_counter() - start
    audio_s = frames * tts.config.samples_per_frame / tts.sample_rate
    steady = frame_ms[STREAM_CHUNKS[0]:] or frame_ms
    # the step's two halves, timed alone (random hidden states: the cost does not depend on values)
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((n, tts.config.backbone.dim)).astype(np.float32)
    noise = rng.standard_normal((n, tts.config.audio.n_acoustic_codebook)).astype(np.float32)
    prompt_len = len(tts.prompt(text, tts.voice_bank.get(voice))[0])
    flow_ms, backbone_ms = [], []
    for _ in range(10 if halves else 0):
        codes, ms = backend._timed(backend.inner.flow, hidden, noise)
        flow_ms.append(ms)
        embeds = backend.embed_codes(codes)
        backbone_ms.append(backend._timed(backend.inner.step, embeds, np.full(n, prompt_len + frames), np.arange(n))[1])
    return {
        "flow_ms": statistics.median(flow_ms) if halves else float("nan"),
        "backbone_ms": statistics.median(backbone_ms) if halves else float("nan"),
        "concurrency": n,
        "prefix_cache": "on" if cache else "off",
        "batched": tts.backend.batch_prefill,
        "prefill_calls": len(backend.prefill_ms),
        "prefill_ms": sum(backend.prefill_ms),
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

    from voxtral_tts.model.loading import load_model, random_model
    from voxtral_tts.runtime.backends.torch import TorchBackend
    from voxtral_tts.runtime.load_options import TorchOptions

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
            inf = TorchBackend(model, TorchOptions(capacity=args.capacity, device=args.device, dtype=dtype_name,
                                                   max_batch=max(args.concurrency), cuda_graphs=graphs,
                                                   compile=compiled))
            tts = TTS(inf, tts_parts[0], tts_parts[1])
            label = f"torch {args.device} {dtype_name}{suffix}"
            for n, cache, batched in variants_of(inf, args.concurrency):
                row = {"backend": label, "load_s": load_s, "prompt_tokens": prompt_tokens(tts, tts_parts, text),
                       **measure(tts, text, tts_parts[2].name, n, args.frames, cache, batched=batched)}
                if cuda:
                    row["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
                row["variant_s"] = time.perf_counter() - started_variant  # set-up, captures, compiles included
                print(json.dumps(row), flush=True)
                rows.append(row)
            del inf, tts
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
            for n, cache, batched in variants_of(tts.backend, args.concurrency):
                row = {"backend": label, "load_s": load_s, "prompt_tokens": prompt_tokens(tts, tts_parts, text),
                       **measure(tts, text, tts_parts[2].name, n, args.frames, cache, batched=batched)}
                print(json.dumps(row), flush=True)
                rows.append(row)
            del tts
            gc.collect()
    if not args.engine:
        skipped.append("onnxruntime cuda / tensorrt: not run — no --engine given")
    return rows, skipped


def variants_of(backend: Backend, concurrency: list[int]) -> list[tuple[int, bool, bool | None]]:
    """Per concurrency: the prefix cache off and on (the backend's default prefill), and where
    several requests arrive and the backend can batch prefill, cache on with the other choice."""
    rows = []
    for n in concurrency:
        rows += [(n, False, None), (n, True, None)]
        if n > 1 and backend.can_batch_prefill:
            rows.append((n, True, not backend.batch_prefill))
    return rows


def prompt_tokens(tts: TTS, tts_parts, text: str) -> int:
    """The prompt's length as the runtime builds it (``TTS.prompt``)."""
    return len(tts.prompt(text, tts_parts[2])[0])


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
    while tokenizer.speech_prompt_length(text, voice.n_audio_tokens) < args.prompt_tokens:
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
    print(f"{'backend':28s} {'N':>3s} {'cache':>5s} {'prefill':>10s} {'prefill ms':>10s} {'TTFA ms (med / max)':>20s} "
          f"{'ms/frame':>9s} {'flow':>6s} {'backbone':>8s} {'frames/s':>9s} {'RTF':>6s}")
    for r in rows:
        print(f"{r['backend']:28s} {r['concurrency']:3d} {r['prefix_cache']:>5s} "
              f"{'batched' if r['batched'] else 'one by one':>10s} {r['prefill_ms']:10.1f} "
              f"{r['ttfa_ms_median']:9.0f} / {r['ttfa_ms_max']:<8.0f} {r['ms_per_frame']:9.2f} "
              f"{r['flow_ms']:6.2f} {r['backbone_ms']:8.2f} {r['frames_per_s']:9.1f} {r['rtf']:6.3f}")
    by_key = {(r["backend"], r["concurrency"], r["prefix_cache"], r["batched"]): r for r in rows}
    for r in rows:
        cached = by_key.get((r["backend"], r["concurrency"], "on", r["batched"]))
        other = by_key.get((r["backend"], r["concurrency"], "on", not r["batched"]))
        if r["prefix_cache"] == "on" and r["batched"] and other:
            print(
                f"{r['backend']} N={r['concurrency']} cache on: prefill batched "
                f"×{other['prefill_ms'] / r['prefill_ms']:.2f} faster than one by one "
                f"(TTFA median {other['ttfa_ms_median']:.0f} → {r['ttfa_ms_median']:.0f} ms)"
            )
        if r["prefix_cache"] == "off" and cached:
            print(
                f"{r['backend']} N={r['concurrency']}: time to first audio "
                f"×{r['ttfa_ms_median'] / cached['ttfa_ms_median']:.2f} lower with the prefix cache (median)"
            )
        for suffix, what in ((" eager", "CUDA graphs ×{:.2f} faster per frame than eager"),
                             (" compiled", "compiled blocks ×{:.2f} faster per frame than plain graphs")):
            other = by_key.get((r["backend"] + suffix, r["concurrency"], r["prefix_cache"], r["batched"]))
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
