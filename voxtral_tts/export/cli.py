"""``voxtral-export``: a model directory (or a hub id) → an engine directory.

    voxtral-export MODEL_DIR -o ENGINE_DIR [--target onnx|tensorrt|coreml] [--precision fp32] [--capacity 4096]
    voxtral-export MODEL_DIR -o ENGINE_DIR --check      # re-validate an existing engine
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import ArgumentParser, VoxtralError, run_cli
from ..hub import model_path
from ..runtime.constants import DEFAULT_CAPACITY
from .build import ALL_PRECISIONS, TARGETS


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="voxtral-export", description="Export Voxtral-4B-TTS-2603 to an engine directory.")
    p.add_argument(
        "model", help="model directory (params.json, consolidated.safetensors, tekken.json, voice_embedding/) or hub id"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="engine directory to write")
    p.add_argument("--target", choices=TARGETS, default="onnx")
    p.add_argument(
        "--precision",
        choices=ALL_PRECISIONS,
        help="onnx: fp32 (default), fp16, int8, int4; tensorrt: fp16 (default) or bf16; coreml: fp16 (default) or fp32",
    )
    p.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                   help="default KV-cache positions (prompt + frames) recorded in the engine; the runtime may override")
    p.add_argument("--with-velocity", action="store_true", help="also export the raw flow velocity graph (for tests)")
    p.add_argument("--no-validate", action="store_true", help="skip the comparison with the PyTorch reference")
    p.add_argument("--check", action="store_true", help="only re-run the validation of an existing engine")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    return run_cli("voxtral-export", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    model_dir = model_path(args.model, progress=not args.quiet)
    if args.check:
        from ..engine import open_engine
        from .validate import validate_engine

        engine = open_engine(args.output)
        if engine.target == "coreml":  # Core ML prediction: macOS 15+ only (a one-line error elsewhere)
            from .coreml import validate_coreml_engine as validate_engine
        elif engine.target == "tensorrt" and engine.precision == "bf16":
            raise VoxtralError(f"{engine.path}: a bf16 TensorRT engine's graphs cannot run on ONNX Runtime's CPU "
                               "provider (no bfloat16 MatMul); they were validated as fp16 before retyping at export")
        validate_engine(engine.path, model_dir, manifest=engine.manifest)
        return 0
    from .build import build_engine

    build_engine(model_dir, args.output, target=args.target, precision=args.precision, capacity=args.capacity,
                 with_velocity=args.with_velocity, validate=not args.no_validate, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
