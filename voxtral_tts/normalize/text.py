"""Rules 1-3 and 7 of the pipeline: characters, pictographs, typography, punctuation and
whitespace — the same in every language.

==================  ===================================  ===========================================
rule                input                                output
==================  ===================================  ===========================================
1. characters       NBSP, thin and narrow spaces; tabs   one plain space
                    full-width ``Ａ１``, ligature ``ﬁ``      ``A1``, ``fi``
                    ``١٢`` ``१२`` (any script's digits)  ``12`` (then read as a number)
                    ZWSP, BOM, soft hyphen, controls     dropped (ZWJ/ZWNJ kept between letters)
2. pictographs      emoji, flags, dingbats, ©®™          dropped; one leading a line makes it a
                                                         list item (``✅ Done`` → ``Done.``)
3. typography       “ ” „ « » 「 」 ‘ ’ ‚ ‹ ›            ``"`` or ``'`` (``it’s`` → ``it's``)
                    ``10–20``; ``a — b``, ``a--b``       ``10-20``; ``a - b`` (a spaced hyphen)
7. punctuation      ``!!!`` ``?!?!`` ``....`` ``,,``     ``!`` ``?!`` ``…`` ``,``
   whitespace       runs, line breaks; `` !``            one space, stripped; ``!``
==================  ===================================  ===========================================
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# --- 1. characters --------------------------------------------------------------------------------

_SPACES = frozenset("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                    "\u200a\u202f\u205f\u3000\t")
_LINE_BREAKS = frozenset("\r\x0b\x0c\x85\u2028\u2029")
_JOINERS = "\u200c\u200d"  # ZWNJ, ZWJ: meaningful inside Arabic and Devanagari words
_ARABIC_NUMBER_SIGNS = {"\u066b": ".", "\u066c": ",", "\u066a": "%"}
_TATWEEL = "\u0640"


def _is_compatibility_form(ch: str) -> bool:
    """Full-width ASCII, Latin ligatures and Arabic presentation forms: folded (NFKC)."""
    cp = ord(ch)
    return (0xFF01 <= cp <= 0xFF5E or 0xFB00 <= cp <= 0xFB06 or 0xFB50 <= cp <= 0xFDFF
            or 0xFE70 <= cp <= 0xFEFC)


@lru_cache(maxsize=4096)
def _fold_character(ch: str) -> str:
    if ch in _SPACES:
        return " "
    if ch in _LINE_BREAKS:
        return "\n"
    if ch in _ARABIC_NUMBER_SIGNS:
        return _ARABIC_NUMBER_SIGNS[ch]
    if ch == _TATWEEL or "\ufe00" <= ch <= "\ufe0f":  # tatweel, variation selectors
        return ""
    category = unicodedata.category(ch)
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    if category in ("Cc", "Cs", "Co", "Cn"):
        return ""
    if category == "Cf":
        return ch if ch in _JOINERS else ""
    if _is_compatibility_form(ch):
        return unicodedata.normalize("NFKC", ch)
    return ch


_NOT_PLAIN = re.compile(r"[^\n\x20-\x7e]")
_STRAY_JOINER = re.compile(f"[{_JOINERS}]")
_ORDINAL_SUPERSCRIPT = re.compile(r"(?<=\d)[\u1d49\u02b3\u1d48\u02e2\u1d57\u02b0\u207f\u1d52]+")


def clean_characters(text: str) -> str:
    """NFC; spaces, line breaks and digits of every script made plain; invisible and control
    characters dropped; superscript ordinal suffixes (1ᵉʳ, 2ⁿᵈ) made plain."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    text = _NOT_PLAIN.sub(lambda m: _fold_character(m.group()), text)
    text = _STRAY_JOINER.sub(_keep_joiner, text)
    return _ORDINAL_SUPERSCRIPT.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)


def _keep_joiner(m: re.Match) -> str:
    """ZWJ/ZWNJ kept between letters and marks (Arabic, Devanagari), dropped elsewhere (emoji
    sequences, stray)."""
    before = m.string[m.start() - 1] if m.start() else " "
    after = m.string[m.end()] if m.end() < len(m.string) else " "
    word = unicodedata.category(before)[0] in "LM" and unicodedata.category(after)[0] in "LM"
    return m.group() if word else ""


# --- 2. pictographs -------------------------------------------------------------------------------

_PICTOGRAPH_CANDIDATE = re.compile(
    "[\U0001f000-\U0001faff\u2300-\u23ff\u2460-\u24ff\u25a0-\u27bf\u2b00-\u2bff"
    "\u00a9\u00ae\u2122\u3030\u303d\u3297\u3299\ufe00-\ufe0f\u20e3]"
)
_LEADING_PICTOGRAPHS = re.compile(r"^([ \t]*)([^\w\s]+)(?=[ \t])", re.M)


def _is_pictograph(ch: str) -> bool:
    if not _PICTOGRAPH_CANDIDATE.match(ch):
        return False
    cp = ord(ch)
    if 0x1F000 <= cp <= 0x1FAFF or 0xFE00 <= cp <= 0xFE0F or cp == 0x20E3:
        return True  # emoji planes (incl. skin tones, flags), variation selectors, keycap
    return unicodedata.category(ch) in ("So", "Sk") or ch in "\u3030\u303d"


def _bullet_for_pictographs(m: re.Match) -> str:
    return m.group(1) + "-" if all(map(_is_pictograph, m.group(2))) else m.group()


def drop_pictographs(text: str) -> str:
    """Emoji and other pictographs dropped, with the selectors that build them (letters of every
    script are kept); pictographs that lead a line ("✅ Done") mark it as a list item."""
    text = _LEADING_PICTOGRAPHS.sub(_bullet_for_pictographs, text)
    return _PICTOGRAPH_CANDIDATE.sub(lambda m: "" if _is_pictograph(m.group()) else m.group(),
                                     text)


# --- 3. typography --------------------------------------------------------------------------------

_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_INNER_GUILLEMET_SPACE = re.compile(r"(?<=[«‹])\s+|\s+(?=[»›])")
_QUOTES = str.maketrans({
    **dict.fromkeys("“”„‟«»「」『』〝〞〟＂", '"'),
    **dict.fromkeys("‘’‚‛‹›", "'"),
    "\u2010": "-",
    "\u2011": "-",
})
_DASHES = "\u2012\u2013\u2014\u2015\u2e3a\u2e3b\ufe58"  # figure, en, em, bar, two- and three-em
_DASH_BETWEEN_DIGITS = re.compile(rf"(?<=\d)[{_DASHES}](?=\d)")
_DASH_RUN = rf"[-{_DASHES}]*(?:[{_DASHES}]|--)[-{_DASHES}]*"  # a long dash, or "--"
_LEADING_DASH = re.compile(rf"^([ \t]*){_DASH_RUN}[ \t]*", re.M)
_DASH = re.compile(rf"(?<!,)[ \t]*{_DASH_RUN}[ \t]*")  # not the ",--" of a price ("5,--")


def fold_typography(text: str) -> str:
    """Decorative quotes folded to ``"`` and ``'`` (apostrophes inside words become ``'``),
    dashes and ``--`` to ``-`` (between digits) or a spaced `` - `` (a pause; a list bullet at
    the start of a line)."""
    text = _RULE.sub("", text)  # a markdown rule ("---"): a blank line, i.e. a paragraph break
    text = _INNER_GUILLEMET_SPACE.sub("", text)
    text = text.translate(_QUOTES)
    text = _DASH_BETWEEN_DIGITS.sub("-", text)
    text = _LEADING_DASH.sub(r"\1- ", text)  # a dialogue dash or a list bullet
    return _DASH.sub(" - ", text)



# --- 7. punctuation and whitespace ----------------------------------------------------------------

_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[,.!?;:…؟،؛।](?!\w))")
_QUESTION_EXCLAMATION = re.compile(r"[!?؟]{2,}")
_ELLIPSIS = re.compile(r"(?:\.{3,}|…)[.…]*|\.+…[.…]*")
_REPEATED = re.compile(r"([.,;:،؛।])\1+")
_WHITESPACE = re.compile(r"\s+")
#: list or heading markers that other rewriting left at the start (pictographs dropped before
#: them, say): dropped, so that the text reads the same when normalised again
_LEADING_MARKERS = re.compile(r"^(?:[-*+•#>]+(?: |$))+")
#: emphasis markers left without a partner: "**", "__", "~~", and a "*" or "_" on one side of a
#: word (one between words or spaces, "5 * 3", "snake_case", is kept)
_DANGLING_DOUBLE_EMPHASIS = re.compile(r"\*\*+|__+|~~+")
_DANGLING_EMPHASIS = re.compile(r"(?<![\w*])\*(?=\w)|(?<=\w)\*(?![\w*])|(?<![\w_])_(?=\w)|"
                                r"(?<=\w)_(?![\w_])")


def _one_question_exclamation(m: re.Match) -> str:
    run = m.group()
    first = run[0]
    other = next((c for c in run if (c == "!") != (first == "!")), "")
    return first + other


def tidy_punctuation(text: str) -> str:
    """Emphasis markers left over from markdown dropped; no space before punctuation; "!!!" →
    "!", "?!?!" → "?!", "...." / "…." → "…", ",," → ","."""
    text = _DANGLING_DOUBLE_EMPHASIS.sub("", text)
    dangling = None
    while dangling != text:
        dangling, text = text, _DANGLING_EMPHASIS.sub("", text)
    text = _SPACE_BEFORE_PUNCTUATION.sub("", text)
    text = _QUESTION_EXCLAMATION.sub(_one_question_exclamation, text)
    text = _ELLIPSIS.sub("…", text)
    return _REPEATED.sub(r"\1", text)


def finish(text: str) -> str:
    """The last step: joiners whose neighbours went dropped, whitespace collapsed and stripped,
    list or heading markers left at the start dropped, NFC."""
    text = _STRAY_JOINER.sub(_keep_joiner, text)
    text = _LEADING_MARKERS.sub("", _WHITESPACE.sub(" ", text).strip())
    return unicodedata.normalize("NFC", text)
