"""``voxtral-serve``: the OpenAI-compatible speech server.

    voxtral-serve ENGINE_OR_MODEL_DIR [--host 127.0.0.1] [--port 8080] [--backend onnxruntime|torch] [--device cpu|cuda]

A browser at http://127.0.0.1:8080/ gets a page to try the voices (``--no-web``: the API alone).
Any OpenAI client works unchanged::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused")
    client.audio.speech.create(model="voxtral-4b-tts-2603", voice="alloy", input="Hello!").write_to_file("a.mp3")
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..api import load
from ..cli import add_backend_arguments, options_from_args
from ..errors import run_cli
from ..hub import model_path
from ..runtime.codec import parse_stream_chunks
from ..runtime.constants import STREAM_CHUNKS
from .app import ServerOptions, create_app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="voxtral-serve", description="OpenAI-compatible speech server for Voxtral-4B-TTS-2603.")
    p.add_argument("model", help="engine directory (voxtral-export), model directory, or a Hugging Face hub id "
                                 "(mistralai/Voxtral-4B-TTS-2603: downloaded into the hub cache once)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    add_backend_arguments(p)
    p.add_argument("--max-batch", type=int, default=4,
                   help="requests decoded together, one frame for all per step (default 4)")
    p.add_argument("--max-queue", type=int, default=8, help="requests that may wait behind those in flight (503 beyond)")
    p.add_argument("--max-frames", type=int, help="cap on frames per text part (default: 50 + 4 per character of "
                   "the part, at most 2048)")
    p.add_argument("--max-input-chars", type=int, default=4096)
    p.add_argument("--stream-chunks", default=",".join(map(str, STREAM_CHUNKS)),
                   help="frames in each streamed audio chunk, the last repeating (default %(default)s: the first "
                        "chunk after 160 ms of audio)")
    p.add_argument("--no-web", dest="web", action="store_false",
                   help="no page to try the voices at / (an API-only deployment)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def serve() -> int:
        import uvicorn

        args.model = model_path(args.model)
        backend, options = options_from_args(args, progress=False, max_batch=args.max_batch)
        options["stream_chunks"] = parse_stream_chunks(args.stream_chunks)
        app = create_app(lambda: load(args.model, backend, **options),
                         ServerOptions(max_queue=args.max_queue, max_frames=args.max_frames,
                                       max_input_chars=args.max_input_chars, web=args.web))
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0

    return run_cli("voxtral-serve", serve)


if __name__ == "__main__":
    sys.exit(main())
