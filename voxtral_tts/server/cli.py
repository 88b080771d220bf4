"""``voxtral-serve``: the OpenAI-compatible speech server.

    voxtral-serve ENGINE_OR_MODEL_DIR [--host 127.0.0.1] [--port 8080] [--backend onnxruntime|torch] [--device cpu|cuda]

Then any OpenAI client works unchanged::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused")
    client.audio.speech.create(model="voxtral-4b-tts-2603", voice="alloy", input="Hello!").write_to_file("a.mp3")
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import VoxtralError, run_cli
from ..runtime.tts import BACKENDS, backend_options, load
from .app import ServerOptions, create_app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="voxtral-serve", description="OpenAI-compatible speech server for Voxtral-4B-TTS-2603.")
    p.add_argument("model", type=Path, help="engine directory (voxtral-export) or model directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--backend", choices=BACKENDS, help="default: onnxruntime for an engine, torch for a model directory")
    p.add_argument("--device",
                   help="torch and onnxruntime: cpu (default) or cuda; onnxruntime also tensorrt (its TensorRT "
                        "execution provider); coreml: all (default), cpu, gpu or ane")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                   help="torch backend compute dtype (default fp32 on cpu, bf16 on cuda)")
    p.add_argument("--compile", action="store_true",
                   help="torch on cuda: fuse each transformer block with torch.compile inside the CUDA graphs "
                        "(about 1.4x faster per frame; a few seconds of compiling per new batch/length bucket)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: physical cores)")
    p.add_argument("--capacity", type=int, help="KV cache positions (prompt + frames)")
    p.add_argument("--max-batch", type=int, default=4,
                   help="requests decoded together, one frame for all per step (default 4)")
    p.add_argument("--max-queue", type=int, default=8, help="requests that may wait behind those in flight (503 beyond)")
    p.add_argument("--max-frames", type=int, help="cap on frames per text part (default 2048)")
    p.add_argument("--max-input-chars", type=int, default=4096)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def serve() -> int:
        import uvicorn

        if not args.model.is_dir():
            raise VoxtralError(f"{args.model}: not a directory (expected an engine or model directory)")
        backend, options = backend_options(args.model, args.backend, progress=False, capacity=args.capacity,
                                           device=args.device, threads=args.threads, max_batch=args.max_batch,
                                           dtype=args.dtype, compile=args.compile)
        app = create_app(lambda: load(args.model, backend, **options),
                         ServerOptions(max_queue=args.max_queue, max_frames=args.max_frames,
                                       max_input_chars=args.max_input_chars))
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0

    return run_cli("voxtral-serve", serve)


if __name__ == "__main__":
    sys.exit(main())
