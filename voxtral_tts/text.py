"""Input text: validation and splitting of long text at sentence boundaries (spec §8).

The model takes the text as is (no normalisation in the reference). Text longer than
``max_chars`` is split the way the Rust port does: at the last sentence end (``. ! ?`` followed by
a space) within the limit, else at the last line break or word boundary, else hard; a part that
does not end in punctuation gets a ``,`` so that it is read as a continuing clause. Each part is
then generated with a fresh prompt and the audio concatenated.
"""

from __future__ import annotations

import re

from .errors import TextError

MAX_CHUNK_CHARS = 400
MAX_INPUT_CHARS = 4096
#: what ends a sentence, what may close it after the stop (quotes, brackets), and what a part may end
#: with without reading as cut off; the incremental :mod:`.segmenter` builds on the same sets
STOPS = ".!?…。！？"
CLOSERS = "\"'”’)]"
CLAUSE_END = STOPS + ",;:"
_SENTENCE_END = re.compile(f"[{re.escape(STOPS)}][{re.escape(CLOSERS)}]*\\s+")


#: what does not count as something to say: whitespace, control characters, a byte-order mark
#: (the server's schema says the same: ``SAYABLE_PATTERN``)
_UNSAYABLE_CHARS = r"\s\u0000-\u001f\u007f-\u009f\ufeff"
_UNSAYABLE = re.compile(f"[{_UNSAYABLE_CHARS}]+")
SAYABLE_PATTERN = f"[^{_UNSAYABLE_CHARS}]"


class CheckedText(str):
    """Text :func:`check_text` has passed: checked once where it enters (the command line before the
    model loads, the server against its limit) and taken as it is by ``TTS.request``."""


def check_text(text: str, max_chars: int | None = MAX_INPUT_CHARS) -> CheckedText:
    """The text stripped of surrounding whitespace; empty text (nothing but whitespace and control
    characters) or over-long text is an error."""
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not _UNSAYABLE.sub("", stripped):
        raise TextError("text is empty")
    if max_chars is not None and len(stripped) > max_chars:
        raise TextError(f"text is {len(stripped)} characters long; the limit is {max_chars}")
    return CheckedText(stripped)


def word_cut(window: str) -> int:
    """Where to cut ``window`` when no sentence ends in it: after its last line break, else after its
    last space, else at its end (a hard cut)."""
    for sep in ("\n", " "):
        pos = window.rfind(sep)
        if pos > 0:
            return pos + 1
    return len(window)


def continuing(part: str) -> str:
    """A part cut before its sentence ends, with a ``,`` if it ends in no punctuation, so that it is
    read as a continuing clause."""
    return part + "," if part and part[-1] not in CLAUSE_END else part


def _cut(window: str) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(window)]
    return ends[-1] if ends else word_cut(window)


def split_text(text: str, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Parts of at most ``max_chars`` characters, cut at sentence ends where possible."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    rest = " ".join(text.split()) if len(text) > max_chars else text.strip()
    parts: list[str] = []
    while len(rest) > max_chars:
        cut = _cut(rest[: max_chars + 1])
        cut = min(cut, max_chars) if cut > max_chars else cut
        part, rest = continuing(rest[:cut].strip()), rest[cut:].strip()
        if part:
            parts.append(part)
    if rest:
        parts.append(rest)
    return parts
