"""Aggregate throughput of the speech server on Ray Serve with 1 and 2 replicas (and the plain
``voxtral-serve`` beside them), side by side, in one run, on one machine.

    python benchmarks/bench_ray.py ENGINE_DIR [--replicas 1,2] [--clients 8] [--seconds 20]
                                   [--frames 50] [--max-batch 4] [--threads 1] [--no-plain]

One local Ray cluster (``ray.init(num_cpus=--cpus)``, no dashboard) for the whole run; each
configuration is deployed (``voxtral_tts.server.ray_serve.application``, onnxruntime with
``--threads`` intra-op threads per replica), warmed up, then loaded for ``--seconds`` by
``--clients`` closed-loop clients (each sends its next request when the last is answered; whole
PCM files of at most ``--frames`` frames — the random model ends a request early for about 1 seed in
400), then taken down.
The plain row is ``voxtral-serve ENGINE_DIR`` (uvicorn, no Ray) with the same options, in a
subprocess. Printed per row: requests answered, requests/s, seconds of audio per second, median
and 95th-percentile latency, and the throughput relative to the first Ray row. The clients run
in this process and share the machine's cores with the servers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from voxtral_tts.testing import free_port

FRAME_SECONDS = 1920 / 24000


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"{url} never became ready")
        time.sleep(0.2)


def load(url: str, clients: int, seconds: float, frames: int) -> dict:
    """Closed-loop clients for ``seconds``: counts, latencies and the replicas that answered."""
    body = {"model": "m", "input": "Hello there, how are you today?", "voice": "alloy", "response_format": "pcm"}
    stop = time.time() + seconds
    latencies, replicas, errors = [], {}, []
    audio_bytes = 0
    lock = threading.Lock()

    def client(seed: int) -> None:
        nonlocal audio_bytes
        with httpx.Client(timeout=120) as http:
            n = 0
            while time.time() < stop:
                n += 1
                start = time.perf_counter()
                response = http.post(url + "/v1/audio/speech", json={**body, "seed": seed * 100000 + n})
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code != 200:
                        errors.append(response.status_code)
                        continue
                    latencies.append(elapsed)
                    audio_bytes += len(response.content)  # (a random seed ends a request early now and then)
                    name = response.headers.get("x-voxtral-replica", "plain").split(";")[0]
                    replicas[name] = replicas.get(name, 0) + 1

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - began
    latencies.sort()
    return {"requests": len(latencies), "errors": len(errors), "wall": wall,
            "rps": len(latencies) / wall, "audio_per_s": audio_bytes / 2 / 24000 / wall,
            "p50": latencies[len(latencies) // 2] if latencies else float("nan"),
            "p95": latencies[int(len(latencies) * 0.95)] if latencies else float("nan"),
            "replicas": sorted(replicas.values(), reverse=True)}


def run_ray(args, replicas: int) -> dict:
    from ray import serve

    import voxtral_tts
    from voxtral_tts.server.ray_serve import application
    from voxtral_tts.server.schemas import ServerOptions

    app = application(functools.partial(voxtral_tts.load, str(args.engine), "onnxruntime", max_batch=args.max_batch,
                                        threads=args.threads),
                      ServerOptions(max_frames=args.frames, max_queue=args.max_queue), max_batch=args.max_batch,
                      replicas=replicas, ray_actor_options={"num_cpus": args.threads})
    serve.run(app, name="bench", route_prefix="/", logging_config={"log_level": "WARNING"})
    try:
        load(args.url, args.clients, args.warmup, args.frames)
        return load(args.url, args.clients, args.seconds, args.frames)
    finally:
        serve.delete("bench")


def run_plain(args) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("voxtral-serve")
    cmd = [str(exe), str(args.engine), "--port", str(port), "--max-frames", str(args.frames), "--max-batch",
           str(args.max_batch), "--max-queue", str(args.max_queue), "--threads", str(args.threads),
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url)
        load(url, args.clients, args.warmup, args.frames)
        return load(url, args.clients, args.seconds, args.frames)
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("engine", type=Path, help="an onnxruntime engine directory (voxtral-export)")
    p.add_argument("--replicas", default="1,2", help="replica counts to measure, in this order (default 1,2)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--frames", type=int, default=50, help="frames per request (default 50: 4 s of audio)")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per replica (default 1)")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="the local Ray cluster's CPUs")
    p.add_argument("--no-plain", dest="plain", action="store_false", help="skip the plain voxtral-serve row")
    args = p.parse_args(argv)

    import ray
    from ray import serve

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Linux {platform.release()}; ray {ray.__version__}")
    print(f"load: {args.clients} closed-loop clients, {args.seconds:g} s per row after {args.warmup:g} s of warm-up; "
          f"{args.frames} frames ({args.frames * FRAME_SECONDS:g} s of audio) per request, whole PCM files; "
          f"--max-batch {args.max_batch} --max-queue {args.max_queue} --threads {args.threads} per replica")
    rows = []
    if args.plain:
        rows.append(("voxtral-serve (no Ray)", run_plain(args)))
    args.url = f"http://127.0.0.1:{free_port()}"
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": int(args.url.rsplit(":", 1)[1])},
                    logging_config={"log_level": "WARNING"})
        for replicas in map(int, args.replicas.split(",")):
            rows.append((f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''}", run_ray(args, replicas)))
    finally:
        serve.shutdown()
        ray.shutdown()
    base = next(r for name, r in rows if name.startswith("Ray"))
    print(f"{'server':<26}{'requests':>9}{'errors':>7}{'req/s':>8}{'audio s/s':>10}{'p50 s':>8}{'p95 s':>8}"
          f"{'vs 1st Ray row':>15}  requests per replica")
    for name, r in rows:
        print(f"{name:<26}{r['requests']:>9}{r['errors']:>7}{r['rps']:>8.2f}{r['audio_per_s']:>10.1f}{r['p50']:>8.3f}"
              f"{r['p95']:>8.3f}{r['rps'] / base['rps']:>14.2f}x  {r['replicas']}")


if __name__ == "__main__":
    main()
