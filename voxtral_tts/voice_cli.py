"""``voxtral-voice``: a voice file from 3–25 s of reference audio, by inverting the codec decoder.

    voxtral-voice mistralai/Voxtral-4B-TTS-2603 me.wav -o me.safetensors
    voxtral-run mistralai/Voxtral-4B-TTS-2603 -v me.safetensors -t "Hello."

The file is the ``.safetensors`` voice format every entry point reads (``--voice FILE``, the
server's ``voice``). Needs torch (``pip install 'voxtral-tts[torch]'``); speaking with the voice
does not. Errors caused by input are one line with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import ArgumentParser, VoxtralError, run_cli
from .hub import MODEL_ID
from .voice_create import DEFAULT_SEED, DEFAULT_STEPS, find_voice, voice_metadata, write_voice

log = logging.getLogger("voxtral_tts")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="voxtral-voice", description="Create a voice file from reference audio (codec inversion).")
    p.add_argument("model", help=f"model directory (params.json, consolidated.safetensors, …) or a hub id ({MODEL_ID})")
    p.add_argument("reference_audio", type=Path,
                   help="3–25 s of one speaker, any format PyAV reads (wav, mp3, flac, ogg, m4a, …)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the voice file to write (.safetensors)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"optimisation steps at most (default {DEFAULT_STEPS}; it stops earlier when the loss settles)")
    p.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"seed of the initialisation (default {DEFAULT_SEED})"
    )
    p.add_argument(
        "--device", help="torch device: cpu, cuda, cuda:1, mps (default: cuda, mps or cpu, whichever is here)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    return p


def run(args: argparse.Namespace) -> int:
    if args.output.suffix != ".safetensors":
        raise VoxtralError(f"{args.output}: the voice file must end in .safetensors")
    folder = args.output.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):  # before minutes of optimisation, not after
        raise VoxtralError(f"{args.output}: cannot write there ({folder} is not a writable directory)")
    if args.steps < 0:
        raise VoxtralError(f"--steps must be 0 or more, got {args.steps}")
    if not 0 <= args.seed < 2**63:
        raise VoxtralError(f"--seed must be between 0 and 2^63 - 1, got {args.seed}")
    voice = find_voice(args.model, args.reference_audio, steps=args.steps, seed=args.seed, device=args.device,
                       progress=not args.quiet)
    write_voice(args.output, voice.rows, voice_metadata(args.reference_audio, voice, args.steps, args.seed))
    log.info("wrote %s: %d rows (%.1f s of audio), %d steps, loss of the codes' decoded audio %.3f", args.output,
             len(voice.rows), voice.seconds, voice.steps, voice.loss)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s")
    return run_cli("voxtral-voice", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
