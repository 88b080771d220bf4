"""Text as it arrives (an LLM's tokens, a user typing) cut into speakable segments as soon as each is
complete: :class:`Segmenter` (``push`` pieces, ``flush`` the rest) and :func:`segments` (a whole
text at once, the same cuts).

A segment ends:

- at a **sentence end**: a stop (``. ! ? …`` and ``。！？ । ؟``, repeated: ``?!``, ``...``), the
  quotes and brackets that close it (``He said "yes."``; in French also a ``»`` after a space),
  then whitespace — except where the next word starts in lower case (``"Wait!" she said``,
  ``Well... maybe``), and, for a ``.``, after one of the language's abbreviations (``Dr.``,
  ``z.B.``, ``p.ex.``: :attr:`~voxtral_tts.normalize.language.Language.abbreviations`), after an
  initial or an acronym (``J. R. R.``, ``U.S.``), after a list item's number at the start of a
  segment (``1. ``), or where the language reads a number and its ``.`` as an ordinal (German
  ``am 3. Oktober``: the normaliser's own rule, ``Language.say_ordinal``). A decimal (``3.5``)
  or a dotted name (``voxtral.ai``) has no whitespace after its ``.`` and never ends a sentence.
  Wide stops (``。！？``) need no whitespace after them;
- at a **blank line** (a paragraph);
- in mode ``responsive`` also at a **clause mark** (``, ; :`` and ``، ؛ 、，；：``) followed by
  whitespace once the segment is at least :data:`CLAUSE_CHARS` characters long;
- at the **hard cap** (``max_chars``; by default :data:`RESPONSIVE_CHARS` in mode
  ``responsive``, :data:`~voxtral_tts.text.MAX_CHUNK_CHARS` in ``long_form``): a segment that
  reaches it without an end is cut at its last sentence end, else as the long-text splitter
  cuts (:func:`~voxtral_tts.text.word_cut`: the last line break or space), and gets a ``,``
  (:func:`~voxtral_tts.text.continuing`).

The modes are those of Mistral's realtime API (``streaming_mode``): ``responsive`` speaks every
sentence (and long clause) on its own, the first words as early as possible; ``long_form`` lets
segments grow as the text goes on — segment k ends at the first sentence end once it holds at
least :data:`LONG_FORM_CHARS` [k] characters (the last repeating; the first is 0: the first
sentence alone, for a quick start), up to the cap, which is the long-text splitter's part size.

Every decision waits for the characters it depends on (the closing quotes, the whitespace, the next
word's first letter, for an ordinal the whole next word), so the cuts do not depend on how the text
was split into pieces: pushing a text in any pieces and then flushing gives :func:`segments` of the
whole text. :meth:`Segmenter.flush` ends the text: everything left is released (cut at the cap
where it is longer). The segments are stripped of surrounding whitespace; nothing else is changed
(normalisation for speech comes after, segment by segment).
"""

from __future__ import annotations

import re

from .errors import VoxtralError
from .normalize.registry import lookup
from .text import CLOSERS, MAX_CHUNK_CHARS, STOPS, continuing, word_cut

RESPONSIVE, LONG_FORM = "responsive", "long_form"
#: the segmentation modes, as Mistral's realtime API names them (``streaming_mode``)
MODES = (RESPONSIVE, LONG_FORM)

#: a clause mark ends a segment (mode responsive) once the segment has this many characters
CLAUSE_CHARS = 50
#: the hard cap of a segment in mode responsive (long_form: the long-text splitter's part size)
RESPONSIVE_CHARS = 200
#: mode long_form: the least characters of segment 0, 1, 2, … before a sentence end cuts it (the
#: last repeating)
LONG_FORM_CHARS = (0, 100, 200, MAX_CHUNK_CHARS)

SENTENCE_STOPS = STOPS + "।؟‼⁇"
#: stops after which the next sentence follows without a space
WIDE_STOPS = "。！？"
CLOSING = CLOSERS + "”’»›}"
CLAUSE_MARKS = ",;:،؛、，；："
WIDE_CLAUSE_MARKS = "、，；："
_OPENERS = "\"'“‘«‹([{¿¡"
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]|[^\W\d_]")  # "U.S", "e.g", "J" (checked upper case alone)
_WORD_END = re.compile(r"\w*\W")

# what a scan finds: wait for more text, or cut here
_WAIT = -1


class Segmenter:
    """Cuts text pushed piece by piece into segments (see the module's docstring). ``language``: a
    registered code (its abbreviations and ordinals; a region suffix is ignored); ``mode``:
    ``responsive`` or ``long_form``; ``max_chars``: the hard cap (None: the mode's)."""

    def __init__(self, language: str = "en", mode: str = RESPONSIVE, max_chars: int | None = None):
        if mode not in MODES:
            raise VoxtralError(f"unknown streaming mode {mode!r}: use {' or '.join(MODES)}")
        if max_chars is None:
            max_chars = RESPONSIVE_CHARS if mode == RESPONSIVE else MAX_CHUNK_CHARS
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise VoxtralError(f"max_chars must be a positive integer, got {max_chars!r}")
        self.language = lookup(language or "en")
        self.mode = mode
        self.max_chars = max_chars
        self.released = 0  # segments released so far
        self._buffer = ""

    @property
    def pending(self) -> str:
        """The text pushed and not yet released."""
        return self._buffer

    def push(self, text: str) -> list[str]:
        """Take the next piece of text; the segments it completes, in order (often none)."""
        if not isinstance(text, str):
            raise VoxtralError(f"text must be a string, got {type(text).__name__}")
        self._buffer += text
        return self._release(final=False)

    def flush(self) -> list[str]:
        """The text is over (for now): every segment left, the buffer emptied."""
        return self._release(final=True)

    def _release(self, final: bool) -> list[str]:
        out = []
        while True:
            start = len(self._buffer) - len(self._buffer.lstrip())
            if start == len(self._buffer):
                if final:
                    self._buffer = ""
                return out
            cut, cap = self._scan(start, final)
            if cut == _WAIT:
                return out
            segment = self._buffer[start:cut].strip()
            self._buffer = self._buffer[cut:]
            if segment:
                out.append(continuing(segment) if cap else segment)
                self.released += 1

    # --- where the next segment ends ----------------------------------------------------------------
    def _least(self) -> int:
        """The characters the next segment needs before a sentence end may cut it."""
        if self.mode == RESPONSIVE:
            return 0
        return LONG_FORM_CHARS[min(self.released, len(LONG_FORM_CHARS) - 1)]

    def _scan(self, start: int, final: bool) -> tuple[int, bool]:
        """The end of the segment starting at ``start`` and whether the cap made it, or ``_WAIT``."""
        text, n = self._buffer, len(self._buffer)
        limit = start + self.max_chars
        least = self._least()
        ends = []  # sentence ends within the cap (for a cut at the cap)
        i = start
        while i < min(n, limit):  # a mark at the cap or after it would end the segment beyond the cap
            ch = text[i]
            if ch in SENTENCE_STOPS:
                decided, cut = self._sentence_end(start, i, final)
            elif ch in CLAUSE_MARKS and self.mode == RESPONSIVE and i + 1 - start >= CLAUSE_CHARS:
                decided, cut = self._clause_end(i, final)
            elif ch == "\n":
                decided, cut = self._paragraph_end(i, final)
            else:
                i += 1
                continue
            if decided is None:
                return _WAIT, False
            if cut > limit:
                break
            if decided:
                if ch not in SENTENCE_STOPS and ch != "\n" or cut - start >= least:
                    return cut, False
                ends.append(cut)
            i = max(cut, i + 1)
        if n > limit:  # the cap: the last sentence end within it, else the last line break or space
            return (ends[-1] if ends else start + min(word_cut(text[start:limit + 1]), self.max_chars)), not ends
        if final:
            return n, False
        return _WAIT, False

    def _sentence_end(self, start: int, i: int, final: bool) -> tuple[bool | None, int]:
        """Whether the stop at ``i`` ends a sentence (None: the text so far cannot tell), and where
        the segment ends (after the stop and what closes it)."""
        text, n = self._buffer, len(self._buffer)
        j = i
        while j < n and text[j] in SENTENCE_STOPS:
            j += 1
        stop = text[i:j]
        while j < n and text[j] in CLOSING:
            j += 1
        closer = self.language.spaced_closer
        if closer and j < n and text[j].isspace():  # "« Oui. »": the closer after a space
            k = j
            while k < n and text[k] in " \u00a0\u202f":
                k += 1
            if k == n and not final:
                return None, j
            if k < n and text[k] == closer:
                j = k + 1
        if j == n:
            return (True if final else None), j
        if stop[-1] in WIDE_STOPS:
            return True, j
        if not text[j].isspace():
            return False, j
        k = j
        while k < n and text[k].isspace():
            k += 1
        if k == n:
            return (True if final else None), j
        if text[k].islower():
            return False, j
        if stop == ".":
            return self._period_ends(start, i, k, final), j
        return True, j

    def _period_ends(self, start: int, i: int, k: int, final: bool) -> bool | None:
        """A ``.`` at ``i`` followed by whitespace and a word that does not start in lower case at
        ``k``: not an end after an abbreviation, an initial, a list item's number or an ordinal."""
        text = self._buffer
        before = text[start:i]
        token = before.split()[-1].lstrip(_OPENERS) if before.split() else ""
        if token.lower() in self.language.abbreviations:
            return False
        if _INITIALS.fullmatch(token) and ("." in token or token.isupper()):
            return False
        line = before[: len(before) - len(token)].rstrip(" \t")
        if token.isdigit() and (not line or line.endswith("\n")):
            return False  # "1. " opening a segment or a line: a list item's number
        pattern = self.language.ordinal_pattern
        if token[-1:].isdigit() and pattern is not None:
            if not final and not _WORD_END.match(text, k):
                return None  # the rule reads the whole next word
            digits = len(token) - len(token.rstrip("0123456789"))
            match = pattern.match(text[start:], i - digits - start)
            if match and match.end() == i + 1 - start and self.language.say_ordinal(match) != match.group():
                return False
        return True

    def _clause_end(self, i: int, final: bool) -> tuple[bool | None, int]:
        text, n = self._buffer, len(self._buffer)
        if text[i] in WIDE_CLAUSE_MARKS:
            return True, i + 1
        if i + 1 == n:
            return (True if final else None), i + 1
        return text[i + 1].isspace(), i + 1

    def _paragraph_end(self, i: int, final: bool) -> tuple[bool | None, int]:
        """A line break followed by another (blank space between): a paragraph ends at ``i``."""
        text, n = self._buffer, len(self._buffer)
        k = i + 1
        while k < n and text[k] in " \t\r":
            k += 1
        if k == n:
            return (False if final else None), i
        return text[k] == "\n", i


def segments(text: str, language: str = "en", mode: str = RESPONSIVE, max_chars: int | None = None) -> list[str]:
    """The segments of a whole text (what :class:`Segmenter` releases for it, however pushed)."""
    segmenter = Segmenter(language, mode, max_chars)
    return segmenter.push(text) + segmenter.flush()
