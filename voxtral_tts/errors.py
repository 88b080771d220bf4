"""Errors a user can cause: each carries one clear line, shown without a traceback by the CLIs."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable


class VoxtralError(Exception):
    """Base class for every error caused by input (files, text, voices, options)."""


class ConfigError(VoxtralError):
    """params.json is missing, unreadable or lacks a required field."""


class CheckpointError(VoxtralError):
    """consolidated.safetensors is missing, truncated, or does not match params.json."""


class TokenizerError(VoxtralError):
    """tekken.json is missing or malformed."""


class VoiceError(VoxtralError):
    """Unknown voice, unreadable voice file, or a voice that does not fit the model."""


class TextError(VoxtralError):
    """Empty or too-long input text."""


class NormalisedToNothing(TextError):
    """Text that normalisation for speech leaves empty (only emoji or symbols); spoken as given with
    ``normalize=False``."""


class OptionError(VoxtralError):
    """A request option out of its range: ``field`` names it (the server's ``param``; the command
    line's flag is ``--`` + the field with dashes), ``problem`` says what is wrong with it
    (``sentence``: the whole message, where it concerns more than the one field)."""

    def __init__(self, field: str, problem: str, sentence: str | None = None):
        super().__init__(sentence or f"{field} {problem}")
        self.field, self.problem, self.sentence = field, problem, sentence

    def flag(self) -> str:
        """The same error worded for a command line: ``--max-frames must be …``."""
        return self.sentence or f"--{self.field.replace('_', '-')} {self.problem}"


class CapacityError(VoxtralError):
    """A request needs more positions than the KV cache was built for."""


class EngineError(VoxtralError):
    """An engine directory is incomplete, from another version, or built for another model."""


def read_json(path: Path, error: type[VoxtralError]) -> tuple[Any, str]:
    """A JSON file's content and the sha256 of its bytes; a missing, unreadable or invalid file
    raises ``error`` naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: cannot read: not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(raw), hashlib.sha256(raw).hexdigest()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: invalid JSON ({exc})") from None


class ArgumentParser(argparse.ArgumentParser):
    """The commands' parser: a bad flag or value is one line and exit status 2, like every other
    input error (argparse prints its whole usage first; ``--help`` shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_cli(prog: str, run: Callable[[], int]) -> int:
    """Run a command-line entry point: input errors become one line on stderr and exit status 2."""
    try:
        return run()
    except VoxtralError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
