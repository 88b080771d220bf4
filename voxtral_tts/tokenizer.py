"""The Tekken text tokenizer and the speech prompt, read from ``tekken.json`` (spec §3, §4.1).

:class:`Tekken` loads a v7+ ``tekken.json`` (a JSON object with ``config``, ``vocab``,
``special_tokens`` and an optional ``audio`` section), checks it, and encodes text exactly as
mistral_common does: split with ``config.pattern``, rank BPE over the first
``default_vocab_size - default_num_special_tokens`` vocab entries (via tiktoken, no special tokens,
so ``"[AUDIO]"`` in the text stays plain text), then offset every rank by the number of special
tokens. It also reads the special ids the speech prompt needs by name, the per-voice ``[AUDIO]``
counts, and builds the preset-voice prompt
``[<s>, [BEGIN_AUDIO], [AUDIO] × N, [NEXT_AUDIO_TEXT], text…, [REPEAT_AUDIO_TEXT], [BEGIN_AUDIO]]``.
Every problem with the file raises :class:`TokenizerError` with one line naming the file.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any, NoReturn

import tiktoken

from .config import AudioArgs
from .errors import TokenizerError, read_json

FILENAME = "tekken.json"
MIN_VERSION = 7  # audio/speech encoding needs a v7+ tokenizer
_SPECIALS = {
    "bos_id": "<s>",
    "audio_id": "[AUDIO]",
    "begin_audio_id": "[BEGIN_AUDIO]",
    "next_audio_text_id": "[NEXT_AUDIO_TEXT]",
    "repeat_audio_text_id": "[REPEAT_AUDIO_TEXT]",
}
_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


#: control tokens of a speech prompt besides the voice rows and the text (see ``Tekken.speech_prompt``)
PROMPT_OVERHEAD = 5
#: control tokens in a prompt's voice prefix, [BOS] [BEGIN_AUDIO] … [NEXT_AUDIO_TEXT]: the part
#: every request with the same voice shares
PREFIX_OVERHEAD = 3

class Tekken:
    """A loaded ``tekken.json``: text encoder, special ids, voice table and file identity."""

    bos_id: int
    audio_id: int
    begin_audio_id: int
    next_audio_text_id: int
    repeat_audio_text_id: int

    def __init__(self, path: Path, data: Any, sha256: str):
        self.path, self.sha256 = path, sha256
        if isinstance(data, list):
            self._fail("is the legacy bare-array Tekken layout; expected a v7+ JSON object")
        if not isinstance(data, dict):
            self._fail(f"must be a JSON object, got {type(data).__name__}")
        config = self._field(data, "config", dict)
        pattern = self._field(config, "pattern", str, "config.")
        vocab_size = self._field(config, "default_vocab_size", int, "config.")
        self.num_special = self._field(config, "default_num_special_tokens", int, "config.")
        version = config.get("version")
        if version is not None:
            match = re.fullmatch(r"v(\d+)", str(version))
            if not match:
                self._fail(f"has an unrecognised version {version!r}")
            if int(match.group(1)) < MIN_VERSION:
                self._fail(f"is version {version}; speech prompts need v{MIN_VERSION} or later")
        vocab = self._field(data, "vocab", list)
        specials = self._field(data, "special_tokens", list)

        ranks: dict[bytes, int] = {}
        for i, entry in enumerate(vocab[: max(vocab_size - self.num_special, 0)]):
            try:
                token = base64.b64decode(entry["token_bytes"], validate=True)
                ok = entry["rank"] == i and (i >= 256 or token == bytes([i]))
            except (TypeError, KeyError, binascii.Error):
                ok = False
            if not ok or token in ranks:
                self._fail(f"vocab entry {i} is malformed (need rank == index, base64 token_bytes, "
                           "unique tokens, ranks 0..255 = the single bytes)")
            ranks[token] = i
        if len(ranks) < 256:
            self._fail(f"vocab has {len(ranks)} entries; the 256 single bytes are required")
        self._encoding = tiktoken.Encoding(
            name=path.stem, pat_str=pattern, mergeable_ranks=ranks, special_tokens={})

        try:
            self._special_ids = {t["token_str"]: int(t["rank"]) for t in specials}
        except (TypeError, KeyError, ValueError):
            self._fail("special_tokens entries must be objects with 'rank' and 'token_str'")
        for attr, name in _SPECIALS.items():
            setattr(self, attr, self.special_id(name))

        audio = data.get("audio") or {}
        voices = audio.get("voice_num_audio_tokens") if isinstance(audio, dict) else None
        if voices is not None and not (isinstance(voices, dict) and all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in voices.values())):
            self._fail("audio.voice_num_audio_tokens must map voice names to positive integers")
        self.voice_num_audio_tokens: dict[str, int] = dict(voices or {})

    @classmethod
    def from_file(cls, path: str | Path) -> "Tekken":
        """Load ``tekken.json`` from its path, or from a directory that contains it."""
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        data, sha256 = read_json(path, TokenizerError)
        return cls(path, data, sha256)

    def encode(self, text: str) -> list[int]:
        """Text ids (no BOS/EOS); special-token strings in ``text`` are encoded as plain text."""
        return [rank + self.num_special for rank in self._encoding.encode_ordinary(text)]

    def special_id(self, name: str) -> int:
        """The id of the special token whose ``token_str`` is ``name`` (e.g. ``"[AUDIO]"``)."""
        if name not in self._special_ids:
            self._fail(f"lacks the special token {name!r}")
        return self._special_ids[name]

    def check_config(self, audio: AudioArgs) -> None:
        """The special token ids params.json names must be this tokenizer's."""
        for name, ours, theirs in (("bos_token_id", self.bos_id, audio.bos_token_id),
                                   ("audio_token_id", self.audio_id, audio.audio_token_id),
                                   ("begin_audio_token_id", self.begin_audio_id, audio.begin_audio_token_id)):
            if ours != theirs:
                self._fail(f"params.json says {name} {theirs}, this tokenizer's is {ours}: "
                           "params.json and tekken.json are from different models")

    def speech_prompt_length(self, text: str, n_audio: int) -> int:
        """The length of :meth:`speech_prompt` for ``text`` and ``n_audio`` voice rows."""
        return len(self.encode(text)) + n_audio + PROMPT_OVERHEAD

    def speech_prompt(self, text_ids: list[int], n_audio: int) -> list[int]:
        """The preset-voice prompt of spec §4.1, with ``n_audio`` voice placeholders:
        ``[BOS] [BEGIN_AUDIO] [AUDIO]×n_audio [NEXT_AUDIO_TEXT] text… [REPEAT_AUDIO_TEXT] [BEGIN_AUDIO]``
        (:data:`PROMPT_OVERHEAD` control tokens around the voice rows and the text)."""
        if n_audio < 0:
            raise ValueError(f"n_audio must be >= 0, got {n_audio}")
        return [self.bos_id, self.begin_audio_id, *[self.audio_id] * n_audio,
                self.next_audio_text_id, *text_ids, self.repeat_audio_text_id, self.begin_audio_id]

    def _field(self, obj: dict, key: str, kind: type, prefix: str = "") -> Any:
        value = obj.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            what = "is missing" if value is None else f"must be {_KINDS[kind]}"
            self._fail(f"field '{prefix}{key}' {what}")
        return value

    def _fail(self, message: str) -> NoReturn:
        raise TokenizerError(f"{self.path}: {message}")
