"""``voxtral-run MODEL --batch FILE.jsonl --out-dir DIR``: many utterances in one run, all through
one scheduler so that the decode batch stays full (``--max-batch`` slots), one audio file each.

The batch file has one JSON object per line (blank lines are skipped)::

    {"text": "Hello there.", "voice": "casual_male", "seed": 1, "file": "hello.wav"}
    {"text": "Bonjour.", "voice": "fr_female", "language": "fr", "temperature": 0.5, "format": "mp3"}

Fields: ``text`` (required), ``voice``, ``seed``, ``language``, ``temperature``, ``expressiveness``,
``max_frames``, ``normalize`` — each defaulting to the command line's flag — and ``file`` (the output's name in
DIR, no folders; default the line number, zero-padded to six digits) with ``format`` (default
the extension of ``file``, else ``--format``).

What DIR holds when the run ends:

- one file per utterance, written atomically (encoded into a hidden temporary file in DIR, then
  renamed), so no half-written file is ever left under an utterance's name;
- ``manifest.jsonl``: one JSON object per utterance — ``id``, ``file``, ``line``, ``text`` (as
  given), ``spoken`` (as normalised for speech), ``voice``, ``seed``, ``language``,
  ``temperature``, ``expressiveness`` (null: the model's), ``duration`` (seconds), ``frames``,
  ``finish_reason`` (``end``, or ``length`` when a part stopped at its frame budget), ``parts``;
- ``metadata.csv``: LJSpeech's layout, ``id|text|normalized text`` without a header (the id is
  the file's name without its extension; the text as given, then as spoken; a ``|`` or a line
  break inside a text becomes a space there — ``manifest.jsonl`` keeps texts exact).

Resuming: an utterance is done when ``manifest.jsonl`` has an entry for its file with the same
text and that file exists; a rerun skips those (after a crash or Ctrl-C each finished utterance
is already in both manifests, appended as it finished). A bad line — invalid JSON, an unknown
field or voice, empty text, a bad option, a failure while generating — is reported on stderr
with its line number and skipped; the rest finish, and the exit status is 1. A usage error
(no such batch file, DIR not writable) is exit status 2 before anything loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .api import open_tts
from .cli_options import options_from_args
from .encoding import EXTENSIONS, FORMATS, audio_format, check_format, encode_audio
from .errors import OptionError, VoxtralError
from .reporting import steps
from .runtime.options import SpeechOptions
from .runtime.results import SynthesisResult
from .runtime.tts import TTS
from .text import check_text
from .voices import VoiceBank

log = logging.getLogger("voxtral_tts")

#: the fields a line may have
FIELDS = ("text", "voice", "seed", "language", "temperature", "expressiveness", "max_frames", "normalize", "file",
          "format")
#: the option fields a line's own value replaces the command line's for
OPTION_FIELDS = ("seed", "language", "temperature", "expressiveness", "max_frames", "normalize")
MANIFEST, METADATA = "manifest.jsonl", "metadata.csv"
PARTIAL = ".partial"  # the suffix of the temporary files an audio file is written to


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """``--out-dir`` and ``--format`` (``--batch`` itself is one of the text sources, in the command's parser)."""
    p.add_argument("--out-dir", type=Path, help="with --batch: the folder the audio files and manifests go to")
    p.add_argument("--format", default="wav", choices=sorted({*FORMATS, *(e[1:] for e in EXTENSIONS)}),
                   help="with --batch: the audio format of a line without one (default wav)")


@dataclass(frozen=True)
class Line:
    """One utterance of the batch file, checked."""

    number: int
    id: str
    file: str
    fmt: str
    text: str  # as given
    options: SpeechOptions


def parse_line(number: int, raw: str, defaults: dict, voices: VoiceBank, default_format: str) -> Line:
    """A line of the batch file as a :class:`Line`, or a VoxtralError saying what is wrong with it."""
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise VoxtralError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise VoxtralError(f"expected a JSON object, got {type(item).__name__}")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise VoxtralError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                           f"the fields are {', '.join(FIELDS)}")
    text = item.get("text")
    if not isinstance(text, str):
        raise VoxtralError("needs a \"text\" string")
    check_text(text, max_chars=None)
    fields = {k: item.get(k, defaults.get(k)) for k in OPTION_FIELDS}
    voice = item.get("voice", defaults.get("voice"))
    if voice is not None and not isinstance(voice, str):
        raise VoxtralError(f"voice must be a string, got {voice!r}")
    try:
        options = SpeechOptions(voice=voices.get(voice), **fields)
    except OptionError as exc:
        raise VoxtralError(str(exc)) from None
    name, fmt = _file_and_format(number, item.get("file"), item.get("format"), default_format)
    return Line(number, Path(name).stem, name, fmt, text, options)


def _file_and_format(number: int, file, fmt, default_format: str) -> tuple[str, str]:
    if fmt is not None:
        if not isinstance(fmt, str):
            raise VoxtralError(f"format must be a string, got {fmt!r}")
        try:
            fmt = check_format(fmt)
        except ValueError:
            raise VoxtralError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}") from None
    if file is None:
        fmt = fmt or check_format(default_format)
        return f"{number:06d}.{fmt}", fmt
    if not isinstance(file, str) or not file or file.startswith(".") or "/" in file or "\\" in file:
        raise VoxtralError(f"file must be a plain file name (no folders, not hidden), got {file!r}")
    if Path(file).suffix:
        try:
            named = audio_format(file)
        except ValueError as exc:
            raise VoxtralError(f"file {file!r}: {str(exc).split(': ', 1)[-1]}") from None
        if fmt is not None and fmt != named:
            raise VoxtralError(f"format {fmt!r} does not match the file name {file!r}")
        return file, named
    fmt = fmt or check_format(default_format)
    return f"{file}.{fmt}", fmt


def read_batch(path: Path, defaults: dict, voices: VoiceBank, default_format: str) -> tuple[list[Line], int]:
    """The batch file's good lines, and how many were bad (each reported on stderr with its number)."""
    try:
        raw_lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VoxtralError(f"{path}: cannot read the batch file ({exc})") from None
    lines, bad, ids = [], 0, {}
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            line = parse_line(number, raw, defaults, voices, default_format)
            if line.id in ids:
                raise VoxtralError(f"file {line.file!r}: line {ids[line.id]} already writes {line.id!r}")
            if line.fmt not in ("wav", "pcm") and not _have_pyav():
                raise VoxtralError(f"writing {line.fmt} needs PyAV (pip install 'voxtral-tts[server]'); "
                                   "wav and pcm need nothing more")
        except VoxtralError as exc:
            report(number, exc)
            bad += 1
            continue
        ids[line.id] = number
        lines.append(line)
    return lines, bad


def report(number: int, error: Exception) -> None:
    message = str(error) if isinstance(error, VoxtralError) else f"{type(error).__name__}: {error}"
    tqdm.write(f"line {number}: {message}", file=sys.stderr)


def _have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class Manifest:
    """``manifest.jsonl`` and ``metadata.csv`` of an output folder: the entries already there (the
    last one of a file wins; files that no longer exist dropped), rewritten sorted by :meth:`close`;
    an entry is appended to both files as its utterance finishes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[str, dict] = {}
        try:
            with open(folder / MANIFEST, encoding="utf-8") as f:
                for raw in f:
                    try:
                        entry = json.loads(raw)
                    except json.JSONDecodeError:  # a line cut by a crash
                        continue
                    if isinstance(entry, dict) and isinstance(entry.get("file"), str) \
                            and (folder / entry["file"]).is_file():
                        self.entries[entry["file"]] = entry
        except FileNotFoundError:
            pass
        self._rewrite()
        self._jsonl = open(folder / MANIFEST, "a", encoding="utf-8")
        self._csv = open(folder / METADATA, "a", encoding="utf-8")

    def done(self, line: Line) -> bool:
        entry = self.entries.get(line.file)
        return entry is not None and entry.get("text") == line.text

    def add(self, entry: dict) -> None:
        self.entries[entry["file"]] = entry
        self._jsonl.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._jsonl.flush()
        self._csv.write(_metadata_row(entry))
        self._csv.flush()

    def close(self) -> None:
        self._jsonl.close()
        self._csv.close()
        self._rewrite()

    def _rewrite(self) -> None:
        entries = sorted(self.entries.values(), key=lambda e: (e.get("line", 0), e["file"]))
        _write_atomically(self.folder / MANIFEST, "".join(json.dumps(e, ensure_ascii=False) + "\n"
                                                          for e in entries).encode())
        _write_atomically(self.folder / METADATA, "".join(_metadata_row(e) for e in entries).encode())


def _metadata_row(entry: dict) -> str:
    def field(text) -> str:
        return " ".join(str(text).replace("|", " ").split())

    return f"{field(entry.get('id', Path(entry['file']).stem))}|{field(entry.get('text', ''))}|" \
           f"{field(entry.get('spoken', ''))}\n"


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` into a hidden temporary file beside ``path``, then renamed to it: a reader sees the
    old file or the new one, never a part."""
    temp = path.parent / f".{path.name}.{os.getpid()}{PARTIAL}"  # created with the usual permissions
    try:
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def check_out_dir(folder: Path) -> Path:
    """The output folder (created), or a usage error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VoxtralError(f"{folder}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise VoxtralError(f"{folder}: cannot write there")
    for stale in folder.glob(f".*{PARTIAL}"):  # left by a run that was killed mid-write
        stale.unlink(missing_ok=True)
    return folder


def entry_of(line: Line, result: SynthesisResult, finish_reason: str) -> dict:
    options = line.options
    return {"id": line.id, "file": line.file, "line": line.number, "text": line.text, "spoken": result.text,
            "voice": result.voice, "seed": result.seed,
            "language": options.language or options.voice.language,
            "temperature": options.temperature, "expressiveness": options.expressiveness,
            "duration": round(result.duration, 3), "frames": result.n_frames,
            "finish_reason": finish_reason, "parts": max(1, len(result.parts))}


def run(args: argparse.Namespace, voices: VoiceBank) -> int:
    """``voxtral-run --batch``: the flags and every line checked, then the model loaded and the
    lines not yet done spoken (:func:`run_batch`). Returns the exit status."""
    if args.out_dir is None:
        raise VoxtralError("--batch needs --out-dir, the folder the audio files go to")
    if not args.batch.is_file():
        raise VoxtralError(f"{args.batch}: no such batch file")
    defaults = {"voice": args.voice, "seed": args.seed, "temperature": args.temperature,
                "expressiveness": args.expressiveness, "max_frames": args.max_frames, "normalize": args.normalize,
                "language": args.language}
    try:  # the command line's defaults: a bad one is a usage error, not every line's
        SpeechOptions(**{**defaults, "voice": voices.get(args.voice)})
    except OptionError as exc:
        raise VoxtralError(exc.flag()) from None
    folder = check_out_dir(args.out_dir)
    lines, bad = read_batch(args.batch, defaults, voices, args.format)
    if not lines:
        log.error("%s: no utterance to speak%s", args.batch, f" ({bad} bad lines)" if bad else "")
        return 1 if bad else 0
    return run_batch(lambda: open_tts(args.model, options_from_args(args, progress=not args.quiet,
                                                                     max_batch=args.max_batch)),
                     lines, bad, folder, quiet=args.quiet)


def run_batch(load: Callable[[], TTS], lines: list[Line], bad: int, folder: Path, quiet: bool = False) -> int:
    """Speak ``lines`` (the batch file's good ones) into ``folder`` — those not done already, the
    model loaded (``load``) only if any is left — with a progress bar over utterances, seconds of
    audio and the real-time factor (seconds of compute per second of audio). Returns the exit
    status: 1 when any line failed."""
    manifest = Manifest(folder)
    todo = [line for line in lines if not manifest.done(line)]
    if len(todo) < len(lines):
        log.info("%d of %d utterances already done in %s: skipped", len(lines) - len(todo), len(lines), folder)
    failed, written, seconds = bad, 0, 0.0
    try:
        if not todo:
            return 1 if failed else 0
        tts = load()
        started = time.perf_counter()
        with steps(desc="speaking", unit="utterance", total=len(todo), disable=quiet) as bar:
            items = [(line.text, line.options) for line in todo]
            for index, result in tts.synthesize_many(items, return_exceptions=True):
                line = todo[index]
                bar.update(1)
                if isinstance(result, Exception):
                    report(line.number, result)
                    failed += 1
                    continue
                finish = "end" if result.finished else "length"
                try:
                    _write_atomically(folder / line.file, encode_audio(result.audio, line.fmt, result.sample_rate))
                except (OSError, ValueError) as exc:
                    report(line.number, VoxtralError(f"{line.file}: cannot write ({exc})"))
                    failed += 1
                    continue
                manifest.add(entry_of(line, result, finish))
                written += 1
                seconds += result.duration
                elapsed = time.perf_counter() - started
                bar.set_postfix_str(f"{seconds:.1f} s of audio, RTF {elapsed / seconds:.2f}" if seconds else "")
    finally:
        manifest.close()
    log.info("wrote %d files (%.1f s of audio) in %.1f s to %s%s", written, seconds, time.perf_counter() - started,
             folder, f"; {failed} line{'s' if failed != 1 else ''} failed (see above)" if failed else "")
    return 1 if failed else 0
