"""Preset voices, OpenAI aliases and custom voice files (spec §4.2–4.4). Torch-free.

A voice is an embedding [N, D] in backbone input space: its N rows replace the N ``[AUDIO]``
tokens of the prompt. Presets live in ``voice_embedding/<name>.pt`` (a PyTorch archive of one
BF16 tensor, read here without torch) or ``<name>.safetensors`` (key ``embedding``); their row
counts are listed in tekken.json (``audio.voice_num_audio_tokens``) and must match the file.
A path to a ``.pt`` / ``.safetensors`` file may be given instead of a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import VoiceError
from .tensors import TensorFileError, as_float32, read_float32, read_safetensors_header, read_torch_tensor

VOICE_DIR = "voice_embedding"
VOICE_SUFFIXES = (".safetensors", ".pt")

#: OpenAI voice names → presets (a convention of the Rust server; spec §4.4).
OPENAI_ALIASES: Mapping[str, str] = {
    "alloy": "neutral_female",
    "echo": "casual_male",
    "fable": "cheerful_female",
    "onyx": "neutral_male",
    "nova": "casual_female",
    "shimmer": "fr_female",
}
DEFAULT_VOICE = "neutral_female"

_LANGUAGES = {"pt": "pt", "nl": "nl", "it": "it", "fr": "fr", "es": "es", "de": "de", "ar": "ar", "hi": "hi"}


def voice_language(name: str) -> str:
    """ISO 639-1 language of a preset from its name prefix (English for the unprefixed ones)."""
    return _LANGUAGES.get(name.split("_", 1)[0], "en")


def voice_gender(name: str) -> str | None:
    tail = name.rsplit("_", 1)[-1]
    return tail if tail in ("male", "female") else None


def read_voice_file(path: str | Path) -> np.ndarray:
    """A voice embedding file (``.pt`` or ``.safetensors``) as float32 [N, D]."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            infos, _ = read_safetensors_header(path)
            if "embedding" not in infos:
                raise VoiceError(f"{path}: no tensor named 'embedding' (found: {', '.join(sorted(infos)) or 'none'})")
            array = read_float32(path, infos["embedding"])
        elif path.suffix == ".pt":
            array = as_float32(*read_torch_tensor(path))
        else:
            raise VoiceError(f"{path}: a voice file must be .pt or .safetensors")
    except TensorFileError as exc:
        raise VoiceError(f"voice file {exc}") from None
    if array.ndim != 2 or array.shape[0] == 0:
        raise VoiceError(f"{path}: a voice embedding must be a non-empty 2-D tensor, got shape {list(array.shape)}")
    return np.ascontiguousarray(array, dtype=np.float32)


@dataclass(frozen=True)
class Voice:
    name: str
    embedding: np.ndarray  # float32 [N, D]
    language: str | None = None  # a preset's language (ISO 639-1); None for a voice file

    @property
    def n_audio_tokens(self) -> int:
        return self.embedding.shape[0]


class VoiceBank:
    """The voices of one model directory (or engine directory): names, aliases, files, row counts."""

    def __init__(self, directory: str | Path, num_audio_tokens: Mapping[str, int], dim: int,
                 params_voices: Mapping[str, int] | None = None):
        self.directory = Path(directory)
        self.dim = dim
        self.num_audio_tokens = dict(num_audio_tokens)
        self._cache: dict[str, Voice] = {}
        names = set(self.num_audio_tokens) | set(params_voices or {})
        self._files = {name: f for name in names if (f := self._find_file(name)) is not None}

    def _find_file(self, name: str) -> Path | None:
        for suffix in VOICE_SUFFIXES:
            candidate = self.directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    @property
    def names(self) -> list[str]:
        """Preset voices that have an embedding file."""
        return sorted(self._files)

    @property
    def aliases(self) -> dict[str, str]:
        return {alias: name for alias, name in OPENAI_ALIASES.items() if name in self._files}

    @property
    def default(self) -> str:
        names = self.names
        if not names:
            raise VoiceError(f"{self.directory}: no voice embeddings found")
        return DEFAULT_VOICE if DEFAULT_VOICE in self._files else names[0]

    def resolve_name(self, voice: str) -> str:
        key = voice.strip()
        if key in self._files:
            return key
        by_lower = {name.lower(): name for name in self._files}  # names are case-insensitive, like aliases
        if key.lower() in by_lower:
            return by_lower[key.lower()]
        alias = OPENAI_ALIASES.get(key.lower())
        if alias in self._files:
            return alias
        known = ", ".join(self.names + sorted(self.aliases))
        raise VoiceError(f"unknown voice '{voice}'; available: {known}")

    def get(self, voice: str | Path | None = None) -> Voice:
        """A preset name, an OpenAI alias, or a path to a voice file; None → the default voice."""
        if voice is None:
            voice = self.default
        text = str(voice)
        if isinstance(voice, Path) or text.endswith(VOICE_SUFFIXES):
            return self._custom(Path(text))
        name = self.resolve_name(text)
        if name not in self._cache:
            embedding = read_voice_file(self._files[name])
            expected = self.num_audio_tokens.get(name)
            if expected is not None and embedding.shape[0] != expected:
                raise VoiceError(
                    f"voice '{name}': {self._files[name].name} has {embedding.shape[0]} rows but "
                    f"tekken.json lists {expected} [AUDIO] tokens for it"
                )
            self._check_dim(name, embedding)
            self._cache[name] = Voice(name, embedding, voice_language(name))
        return self._cache[name]

    def _custom(self, path: Path) -> Voice:
        if not path.is_file():
            raise VoiceError(f"voice file {path}: not found")
        embedding = read_voice_file(path)
        self._check_dim(str(path), embedding)
        return Voice(path.stem, embedding)

    def _check_dim(self, label: str, embedding: np.ndarray) -> None:
        if embedding.shape[1] != self.dim:
            raise VoiceError(
                f"voice '{label}' has width {embedding.shape[1]}, this model's backbone takes {self.dim}"
            )
