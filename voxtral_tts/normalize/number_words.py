"""Numbers as words: the engine every language's rules call.

Cardinals, ordinals and years come from ``num2words`` (under a lock: its Arabic converter keeps
state between calls), each adjusted by the language's :meth:`~.language.Language.fix_number_words`
hook; a language with its own tables (Hindi) answers through its ``own_cardinal`` and
``year_words`` hooks instead. Where ``num2words`` cannot say a number (too large, a mode the
language lacks) the number is read digit by digit, an ordinal or a year as a cardinal, and as a
last resort a digit stays a digit. The results are cached per language object.

A written number is split by the language's separators (``decimal_comma``: ``1.234,5`` or
``1 234,5``; otherwise ``1,234.5`` and the Indian ``1,00,000``). Decimals are read digit by digit
("point one four"), or, in a language with ``decimals_as_number`` and up to three of them, as a
number ("virgule quatorze"). Digit runs with a leading zero (``007``) or, where asked, of more
than nine digits with no separator (phone numbers, ids) are read digit by digit.

The functions here take the language object and use only its fields and hooks, so this module
imports no language.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

from num2words import num2words

_NUM2WORDS_LOCK = threading.Lock()  # num2words' Arabic converter keeps state between calls
#: what num2words raises for a number it cannot say (too large, a language or mode it lacks)
_NUM2WORDS_ERRORS = (ArithmeticError, LookupError, ValueError, TypeError, NotImplementedError,
                     AssertionError)

#: a number as written with "." for decimals and "," for groups of three (or the Indian two)
POINT_NUMBER = r"(?:\d{1,3}(?:,\d{2,3}(?!\d))*,\d{3}(?!\d)|\d+)(?:\.\d+)?"
#: a number as written with "," for decimals and "." or a space for groups of three
COMMA_NUMBER = (r"(?:(?:\d{1,3}(?:\.\d{3}(?!\d))+|\d{1,3}(?: \d{3}(?!\d))+)(?:,\d+)?"
                r"|\d+(?:,\d+)?)")
#: a minus sign: "-" or "−" where no letter, digit or ".,-" precedes it
SIGN = r"(?:(?<![\w.,−-])[-−])"


def num2words_in(n: int, lang, to: str) -> str:
    """``num2words`` in the language's ``num2words_code`` and mode ``to``, adjusted by the
    language's ``fix_number_words`` and with single spaces; raises what num2words raises."""
    with _NUM2WORDS_LOCK:
        words = num2words(n, lang=lang.num2words_code or lang.code, to=to)
    return " ".join(lang.fix_number_words(words).split())


def num2words_year(n: int, lang) -> str | None:
    """``n`` in num2words' year mode ("nineteen ninety-nine"), or None where it has none."""
    try:
        return num2words_in(n, lang, "year")
    except _NUM2WORDS_ERRORS:
        return None


@lru_cache(maxsize=2048)
def cardinal(n: int, lang, standalone: bool = True) -> str:
    """Words for a non-negative integer; digit by digit if ``num2words`` cannot say it (and, as
    a last resort, a digit it cannot say stays a digit). ``standalone=False``: the form before a
    counted noun where the language has one (Arabic "ألفا", not "ألفان")."""
    own = lang.own_cardinal(n)
    if own is not None:
        return own
    try:
        words = num2words_in(n, lang, "cardinal")
    except _NUM2WORDS_ERRORS:
        return digitwise(str(n), lang) if n > 9 else str(n)
    return lang.standalone_form(words) if standalone else words


@lru_cache(maxsize=512)
def ordinal(n: int, lang) -> str:
    """The ordinal's words, or the cardinal where ``num2words`` has none."""
    try:
        return num2words_in(n, lang, "ordinal")
    except _NUM2WORDS_ERRORS:
        return cardinal(n, lang)


@lru_cache(maxsize=512)
def year(n: int, lang) -> str:
    """A year as it is said (the language's ``year_words``: en "nineteen ninety-nine", de
    "neunzehnhundertneunundneunzig"; the cardinal in languages that say years so)."""
    return lang.year_words(n)


def digitwise(digits: str, lang) -> str:
    return " ".join(cardinal(int(d), lang) for d in digits if d.isdigit())


def plain_integer(digits: str, lang, *, spell_long: bool = True) -> str:
    """Words for a run of digits: digit by digit with a leading zero or (``spell_long``) more
    than nine digits, else the cardinal."""
    if (len(digits) > 1 and digits[0] == "0") or (spell_long and len(digits) > 9):
        return digitwise(digits, lang)
    return cardinal(int(digits), lang)


def decimals(digits: str, lang) -> str:
    """The digits after the decimal separator: up to three as a number in a language with
    ``decimals_as_number`` (zeros first: "zéro cinq"), otherwise digit by digit."""
    if lang.decimals_as_number and len(digits) <= 3:
        rest = digits.lstrip("0")
        words = [cardinal(0, lang)] * (len(digits) - len(rest))
        return " ".join(words + ([cardinal(int(rest), lang)] if rest else []))
    return digitwise(digits, lang)


def number_pattern(lang) -> str:
    """The regular expression of a written number in the language."""
    return COMMA_NUMBER if lang.decimal_comma else POINT_NUMBER


def split_number(token: str, lang) -> tuple[str, str, bool]:
    """(integer digits, fraction digits, whether the integer was grouped) of a token matched by
    the language's number pattern."""
    decimal, group = (",", ". ") if lang.decimal_comma else (".", ",")
    whole, _, fraction = token.partition(decimal)
    digits = "".join(c for c in whole if c not in group)
    return digits, fraction, len(digits) != len(whole)


def say_number(token: str, lang, *, negative: bool = False, spell_long: bool = False) -> str:
    """A written number (grouped, with decimals) as words, with the language's minus."""
    whole, fraction, grouped = split_number(token, lang)
    words = plain_integer(whole, lang, spell_long=spell_long and not grouped)
    if fraction:
        words += f" {lang.point} {decimals(fraction, lang)}"
    return f"{lang.minus} {words}" if negative else words


#: one-letter Arabic words written joined to the next word ("و٥" → "وخمسة"): and, with, for, so,
#: as — a property of the script, so it holds whatever the language asked for
_ARABIC_PROCLITICS = "وبلفك"


def padded(m: re.Match, words: str) -> str:
    """``words`` set off by a space from letters or digits touching the match."""
    s, start, end = m.string, m.start(), m.end()
    arabic_prefix = start and s[start - 1] in _ARABIC_PROCLITICS and (
        start == 1 or not s[start - 2].isalnum())
    if start and (s[start - 1].isalnum() or s[start - 1] in ",;") and not arabic_prefix:
        words = " " + words
    if end < len(s) and s[end].isalnum():
        words += " "
    return words


def padded_unless_same(m: re.Match, words: str) -> str:
    return words if words == m.group() else padded(m, words)
