"""``voxtral-run``: synthesise text to an audio file (WAV, or the format of the output's extension).

    voxtral-run mistralai/Voxtral-4B-TTS-2603 -t "Hello world." -v casual_male -o hello.wav --seed 0
    echo "Hello." | voxtral-run MODEL_DIR -o hello.mp3
    voxtral-run MODEL_DIR --text-file chapter.txt -o chapter.opus     # any length, parts side by side
    voxtral-run MODEL_DIR --batch lines.jsonl --out-dir clips/         # one file per line (voxtral_tts.batch)
    voxtral-run MODEL_DIR --list-voices
    voxtral-run MODEL_DIR --reference-audio me.wav -t "Hello."        # a voice from 3–25 s of audio

Errors caused by input are printed as one line (no traceback) with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from .api import open_tts
from . import batch
from .cli_options import add_backend_arguments, add_max_batch_argument, options_from_args
from .encoding import AudioFile, audio_format
from .errors import ArgumentParser, OptionError, VoxtralError, run_cli
from .hub import MODEL_ID, model_path
from .normalize import LANGUAGES
from .reporting import STEPS_FORMAT
from .runtime.constants import MAX_TEMPERATURE
from .runtime.guidance import MAX_EXPRESSIVENESS
from .runtime.decoding import FINISHED_END
from .runtime.options import SpeechOptions
from .runtime.tts import read_model_dir
from .text import check_text
from .voice_create import cached_voice
from .voices import OPENAI_ALIASES, voice_gender, voice_language

log = logging.getLogger("voxtral_tts")

def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="voxtral-run", description="Synthesise speech with Voxtral-4B-TTS-2603.")
    p.add_argument("model", help="engine directory (voxtral-export), model directory (params.json, "
                   "consolidated.safetensors, tekken.json, voice_embedding/) or a Hugging Face hub id "
                   f"({MODEL_ID}: downloaded into the hub cache once)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("-t", "--text", help="text to speak (default: read standard input)")
    src.add_argument("--text-file", type=Path, help="read the text from this UTF-8 file")
    src.add_argument(
        "--batch",
        type=Path,
        metavar="FILE.jsonl",
        help='speak each line\'s JSON object ({"text": …, "voice": …, "file": …}) into a file in '
        "--out-dir, with manifest.jsonl and an LJSpeech-style metadata.csv; a rerun skips what is done",
    )
    p.add_argument("-v", "--voice", help="preset name, OpenAI alias (alloy, echo, …) or a .pt/.safetensors voice file")
    p.add_argument("-o", "--output", type=Path, default=Path("output.wav"),
                   help="output file, its format from the extension: .wav (default output.wav), .mp3, .opus/.ogg, "
                        ".flac, .aac or .pcm (raw 24 kHz s16le)")
    p.add_argument("--max-frames", "--max-tokens", dest="max_frames", type=int,
                   help="cap on generated 80 ms frames per text part (default: 50 + 4 per character of the part, "
                        "at most 2048)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="speak the text as given (no number, currency, date or markdown rewriting)")
    p.add_argument("--language", choices=LANGUAGES,
                   help="the text's language for normalisation (default: the voice's; English for a voice file)")
    p.add_argument(
        "--seed", type=int, help="seed of the flow-matching noise and of sampling (default: random, printed)"
    )
    p.add_argument("--temperature", type=float, default=0.0,
                   help=f"sample the semantic code at this temperature, 0 to {MAX_TEMPERATURE:g} (default 0: the "
                        "reference's argmax); reproducible with --seed")
    p.add_argument("--expressiveness", type=float,
                   help=f"the flow head's classifier-free guidance scale, 1.0 (none) to {MAX_EXPRESSIVENESS:g} "
                        "(default: the model's, 1.2 for the release)")
    batch.add_batch_arguments(p)
    add_backend_arguments(p)
    add_max_batch_argument(p)
    p.add_argument("--list-voices", action="store_true", help="list the voices and exit")
    p.add_argument("--reference-audio", type=Path,
                   help="speak in the voice of 3–25 s of this recording: a voice created by codec inversion (needs "
                        "torch; minutes on a CPU) and cached by the audio's content and the model (see voxtral-voice)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    return p


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return args.text
    if args.text_file is not None:
        try:
            return args.text_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VoxtralError(f"{args.text_file}: cannot read text ({exc})") from None
    if sys.stdin is None or sys.stdin.isatty():
        raise VoxtralError("no text: give --text, --text-file, or pipe text on standard input")
    return sys.stdin.read()


def _voices(args: argparse.Namespace):
    """The model's voices (args.model made a local directory), or None once --list-voices listed them."""
    args.model = model_path(args.model, progress=not args.quiet)
    _, _, voices = read_model_dir(args.model)
    if not args.list_voices:
        return voices
    aliases = {v: k for k, v in OPENAI_ALIASES.items()}
    for name in voices.names:
        extra = f"  (alias {aliases[name]})" if name in aliases else ""
        print(f"{name:18s} {voice_language(name)}  {voice_gender(name) or '-':6s}{extra}")
    return None


def run(args: argparse.Namespace) -> int:
    if args.reference_audio is not None and args.voice is not None:
        raise VoxtralError("give --voice or --reference-audio, not both")
    if args.batch is None and args.out_dir is not None:
        raise VoxtralError("--out-dir applies with --batch (a single text goes to -o)")
    if args.batch is not None:
        if args.reference_audio is not None:
            raise VoxtralError("--reference-audio applies to one text; for --batch, make the voice file once with "
                               "voxtral-voice and give it with --voice or each line's \"voice\"")
        voices = _voices(args)
        return 0 if voices is None else batch.run(args, voices)
    try:
        fmt = audio_format(args.output)
    except ValueError as exc:
        raise VoxtralError(str(exc)) from None
    if fmt not in ("wav", "pcm"):
        try:
            import av  # noqa: F401
        except ImportError:
            raise VoxtralError(f"{args.output}: writing {args.output.suffix} needs PyAV (pip install "
                               "'voxtral-tts[server]'); .wav and .pcm need nothing more") from None
    folder = args.output.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):  # before minutes of generation, not after
        raise VoxtralError(f"{args.output}: cannot write there ({folder} is not a writable directory)")
    voices = _voices(args)
    if voices is None:
        return 0
    # check what is cheap to check before loading gigabytes of weights: each input once, here
    text = check_text(_read_text(args), max_chars=None)
    if args.reference_audio is not None:  # the voice file of this recording, created once into the user cache
        args.voice = str(cached_voice(args.model, args.reference_audio, device=args.device, progress=not args.quiet))
    try:
        options = SpeechOptions(voice=voices.get(args.voice), seed=args.seed, temperature=args.temperature,
                                max_frames=args.max_frames, normalize=args.normalize, language=args.language,
                                expressiveness=args.expressiveness)
    except OptionError as exc:
        raise VoxtralError(exc.flag()) from None
    tts = open_tts(args.model, options_from_args(args, progress=not args.quiet, max_batch=args.max_batch))
    try:
        request = tts.request(text, options, streaming=False)
    except OptionError as exc:  # an expressiveness this engine's flow graph cannot take
        raise VoxtralError(exc.flag()) from None
    collector = tts.collector(request)
    with AudioFile(args.output, tts.sample_rate) as out, \
            tqdm(total=len(request.parts), unit="part", disable=args.quiet or len(request.parts) == 1,
                 desc="speaking", bar_format=STEPS_FORMAT) as bar:
        for audio in collector.audio(tts.events(request)):  # each part's audio written as it is done
            out.write(audio)
            bar.update(len(collector.parts) - bar.n)
            bar.set_postfix_str(f"{collector.seconds:.1f} s of audio")
        bar.update(len(collector.parts) - bar.n)
    seed = f", seed {request.noise.seed}" if request.noise.seed is not None else ""
    stop = "" if collector.finish_reason == FINISHED_END else " (cut at a frame budget: see the warning above)"
    log.info("wrote %s: %d frames, %.2f s of audio, voice %s%s%s", args.output, collector.frames,
             collector.seconds, request.voice.name, seed, stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(message)s")
    return run_cli("voxtral-run", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
