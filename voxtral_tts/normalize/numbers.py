"""Rule 6: numbers in the text as words — the shared machinery, driven by the language object.

The number rules apply in this order, each to what the earlier ones left (examples in English;
each language module's docstring says how its words differ):

==================  ===================================  ===========================================
rule                input                                output
==================  ===================================  ===========================================
ISO dates           ``2024-05-01``                       May first, twenty twenty-four
phone numbers       ``555-1234``, ``(555) 123-4567``     five five five, one two three four
                    ``+33 6 12 34 56 78``                plus three three, six, one two, ...
times               ``10:30`` ``7:05`` ``12:00``         ten thirty, seven oh five, twelve o'clock
                    (and the language's own: de ``10:30 Uhr``, fr ``10h30``, hi ``10 बजे``)
the language's own  de ``am 03.10.2024``                 am dritten Oktober zweitausend…
currency            ``$5.50`` ``10 €`` ``$5 million``    five dollars and fifty cents, ten euros,
                                                         five million dollars ($ € £ ¥ ₹ Rs)
percentages         ``50%``, de ``12,5 %``               fifty percent, zwölf Komma fünf Prozent
ordinals            ``21st``, fr ``1re``, de ``3.``      twenty-first, première, dritten
degrees             ``-5°C``, ``98.6 °F``, ``20°``       minus five degrees Celsius, ... degrees
                                                         Fahrenheit, twenty degrees
fractions           ``1/2`` ``3/4`` ``24/7``             one half, three quarters, twenty-four
                                                         slash seven
the language's own  en ``the 1990s``                     the nineteen nineties
years               ``in 1999``                          in nineteen ninety-nine (1000-2099)
numbers             ``-1,234.5``, de ``1.234,5``         minus one thousand two hundred
                                                         thirty-four point five, eintausend...
                    ``1.2.3``, de ``2.1``                one dot two dot three, zwei Punkt eins
                    ``mp3`` ``COVID-19`` ``007``         mp three, COVID-nineteen, zero zero seven
ampersands          ``R&D``, ``A & B``, ``5&6``          R and D, A and B, five and six
==================  ===================================  ===========================================

Numbers. A group is exactly three digits, so en ``1,5`` is two numbers ("one, five") and de
``1,5`` is a decimal (:mod:`.number_words`). In a ``decimal_comma`` language a ``.`` that is no
grouping, and in all languages a run of two or more dots (``1.2.3``, ``192.168.0.1``), is read as
the word for "dot" with each part a number (versions, addresses). A ``-`` or ``−`` is a minus
sign only where no letter, digit or ``.,`` precedes it. Digits inside a word (``mp3``, ``A4``,
``4K``, ``COVID-19``) are read as a number set off from the letters by a space; units (``km``)
stay as written. Any four-digit number from 1000 to 2099 is read as a year (the language's
``year_words``).

Times are HH:MM (24 h, hours 0-23) said by the language's ``time_words``; seconds
(``10:30:15``) are not read as a time. ISO dates ``YYYY-MM-DD`` are said by its ``date_words``;
a month past 12 or a day past the month's longest (``2024-13-45``, ``2024-02-30``) is no date and
is read by the other rules.

Phone numbers are read digit by digit, one group at a time, with a comma (a pause) between
groups and the language's "plus" for a leading ``+``. Phone-like are: ``+`` and digit groups
separated by spaces, dots or hyphens, seven digits or more (``+33 6 12 34 56 78``), ``(555)
123-4567``, ``555.123.4567``, ``06 12 34 56 78`` (five pairs after a leading zero), and digit
groups joined by hyphens when there are three or more with at least seven digits (``555-123-4567``,
``1-800-555-1234``; not the date shape ``2024-13-45``) or when they are three digits then four
(``555-1234``; not two round numbers, ``100-1000``). Other hyphenated numbers, scores (``3-2``)
and ranges (``10-20``), are read as numbers joined by the hyphen: "three-two", "ten-twenty".

Degrees: a number before ``°`` is read with the language's word for degrees and, for ``°C`` /
``°F`` (or ``℃`` / ``℉``), the scale. Two digit groups ``a/b`` (no leading zero, no third group)
are a fraction when the language names it (``fraction_name``); any other run of digit groups
joined by ``/`` (dates such as ``01/05/2024``, whose day and month order is ambiguous, ``24/7``,
``9/11``) is read group by group with the language's word for "slash" between them: "zero one
slash zero five slash twenty twenty-four". ``&`` between two words (numbers included, once they
are words) is the language's "and" (its ``ampersand`` hook).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .language import CURRENCY_SYMBOLS, Language
from .number_words import SIGN, digitwise, number_pattern, padded, padded_unless_same, plain_integer, say_number, year

_DIGITS = re.compile(r"\d+")
_SYMBOL = r"(?:US\$|(?<![\w\u0900-\u097f])(?:Rs|रु)\.?(?= ?[-−]?\d)|[$€£¥₹])"
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ISO_DATE = re.compile(r"(?<![\w.,/+-])(\d{4})-(\d{2})-(\d{2})(?![\w-]|[.,/]\d)")
#: phone-like numbers: "+33 6 12 34 56 78", "(555) 123-4567", "555.123.4567", "06 12 34 56 78",
#: and digit groups joined by hyphens (which of those are phone numbers: ``_is_phone``)
_PHONE = re.compile(
    r"(?<![\w.,+/-])(?:"
    r"\+\d{1,3}(?:[ .-]\d{1,8}){2,}"
    r"|\(\d{3}\) ?\d{3}[-. ]\d{4}"
    r"|\d{3}\.\d{3}\.\d{4}"
    r"|0\d([ .-])\d{2}(?:\1\d{2}){3}"
    r"|\d+(?:-\d+)+"
    r")(?![\w-]|[.,/]\d)"
)
_TIME = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3]):([0-5]\d)(?![\d:]|[.,]\d)")
_SLASHED = re.compile(r"(?<![\w.,/-])\d+(?:/\d+)+(?![\w/]|[.,]\d)")
_YEAR = re.compile(r"(?<![\d.,])(1\d{3}|20\d{2})(?![\d]|[.,]\d)")
_DOTTED = re.compile(r"(?<![\d.,])\d+(?:\.\d+){2,}(?![\d]|[.,]\d)")
_DOTTED_COMMA_DECIMAL = re.compile(r"(?<![\d.,])\d+(?:\.\d+)+(?![\d]|[.,]\d)")
_DOT_GROUPING = re.compile(r"\d{1,3}(?:\.\d{3})+")
_AMPERSAND = re.compile(r"(?<=[^\W\d_])[ \t]*&[ \t]*(?=[^\W\d_])")


@dataclass(frozen=True)
class _NumberRules:
    """The compiled number patterns of one language."""

    currency_before: re.Pattern
    currency_after: re.Pattern
    percent: re.Pattern
    degrees: re.Pattern
    number: re.Pattern


@lru_cache(maxsize=None)
def _number_rules(lang: Language) -> _NumberRules:
    num, scale = number_pattern(lang), lang.scale_words
    scale_before = rf"(?: (?P<scale>{scale})(?!\w))?" if scale else ""
    scale_after = rf"(?: (?P<scale>{scale}))?" if scale else ""
    return _NumberRules(
        currency_before=re.compile(
            rf"(?P<sign>{SIGN})?(?P<sym>{_SYMBOL}) ?(?P<sign2>[-−])?(?P<num>{num})"
            rf"(?:,-{{1,2}}(?![\w-]))?{scale_before}(?!\d)"
        ),
        currency_after=re.compile(
            rf"(?P<sign>{SIGN})?(?<!\d)(?P<num>{num})(?:,-{{1,2}})?{scale_after} ?"
            rf"(?P<sym>{_SYMBOL})(?!\w)"
        ),
        percent=re.compile(rf"(?P<sign>{SIGN})?(?<!\d)(?P<num>{num}) ?[%٪]"),
        degrees=re.compile(rf"(?P<sign>{SIGN})?(?<!\d)(?P<num>{num}) ?(?:°(?: ?(?P<scale>[CF])"
                           rf"(?!\w))?|(?P<symbol>[℃℉]))"),
        number=re.compile(rf"(?P<sign>{SIGN})?(?<!\d)(?P<num>{num})"),
    )


def _say_iso_date(m: re.Match, lang: Language) -> str:
    year_number, month, day = (int(g) for g in m.groups())
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return m.group()
    return padded(m, lang.date_words(day, month, year_number, m.string[:m.start()]))


def _is_phone(groups: list[str], text: str) -> bool:
    """A ``+`` and digit groups are a phone number with seven or more digits in all; hyphenated
    digit groups are one when there are three or more with seven or more digits in all
    ("1-800-555-1234", but not "1-2-3" nor the shape of a date, "2024-13-45"), or when they are
    three digits then four ("555-1234") that are not both round (a range, "100-1000")."""
    lengths = [len(g) for g in groups]
    if text.startswith("+"):
        return sum(lengths) >= 7
    if not all(c.isdigit() or c == "-" for c in text):
        return True  # one of the unambiguous shapes
    if len(groups) >= 3:
        return sum(lengths) >= 7 and lengths != [4, 2, 2]
    return lengths == [3, 4] and not (groups[0].endswith("0") and groups[1].endswith("0"))


def _say_phone(m: re.Match, lang: Language) -> str:
    groups = re.findall(r"\d+", m.group())
    if not _is_phone(groups, m.group()):
        return m.group()
    words = lang.list_comma.join(digitwise(g, lang) for g in groups)
    return padded(m, f"{lang.plus} {words}" if m.group().startswith("+") else words)


def _say_degrees(m: re.Match, lang: Language) -> str:
    symbol = (m.group("scale") or "").upper() or {"℃": "C", "℉": "F"}.get(m.group("symbol"), "")
    scale = {"C": lang.celsius, "F": lang.fahrenheit}.get(symbol, "")
    words = lang.say_degrees(m.group("num"), negative=bool(m.group("sign")))
    return padded(m, f"{words} {scale}" if scale else words)


def _say_slashed(m: re.Match, lang: Language) -> str:
    """"a/b" a named simple fraction, otherwise the digit groups with the word for "slash"
    between them, read by the later rules ("01/05/2024", "24/7")."""
    parts = m.group().split("/")
    if len(parts) == 2 and parts[0][0] != "0" and parts[1][0] != "0":
        words = lang.fraction_name(int(parts[0]), int(parts[1]))
        if words:
            return padded(m, words)
    return padded(m, f" {lang.slash} ".join(parts))


def _after_minus_sign(m: re.Match) -> bool:
    s, i = m.string, m.start()
    return i > 0 and s[i - 1] in "-−" and (i == 1 or not s[i - 2].isalnum())


def _say_year(m: re.Match, lang: Language) -> str:
    if _after_minus_sign(m):
        return m.group()
    return padded(m, year(int(m.group(1)), lang))


def _say_dotted(m: re.Match, lang: Language) -> str:
    if lang.decimal_comma and _DOT_GROUPING.fullmatch(m.group()):
        return m.group()  # a thousands grouping: read as one number later
    parts = [plain_integer(part, lang) for part in m.group().split(".")]
    return padded(m, f" {lang.dot} ".join(parts))


def _safely(say, lang: Language):
    """A replacement callback that falls back to reading the digits if anything goes wrong."""

    def replace(m: re.Match) -> str:
        try:
            return say(m)
        except Exception:  # never fail on odd input: read what digits there are
            return padded(m, digitwise(m.group(), lang) or m.group())

    return replace


def expand_numbers(text: str, lang: Language) -> str:
    """Dates, phone numbers, times, amounts, percentages, ordinals, degrees, fractions, years
    and other numbers as words."""
    rules = _number_rules(lang)

    def sub(pattern: re.Pattern, say, s: str) -> str:
        return pattern.sub(_safely(say, lang), s)

    def time(m: re.Match) -> str:
        return padded(m, lang.time_words(int(m.group(1)), int(m.group(2) or 0)))

    def money(m: re.Match) -> str:
        negative = bool(m.group("sign") or m.groupdict().get("sign2"))
        code = CURRENCY_SYMBOLS[m.group("sym")]
        words = lang.say_money(m.group("num"), code, negative=negative,
                               scale=m.groupdict().get("scale"))
        return padded(m, words)

    def percent(m: re.Match) -> str:
        amount = say_number(m.group("num"), lang, negative=bool(m.group("sign")))
        if lang.percent_gender:
            amount = lang.before_noun(amount, lang.percent_gender)  # de "ein Prozent"
        return padded(m, f"{amount} {lang.percent}")

    def number(m: re.Match) -> str:
        words = say_number(m.group("num"), lang, negative=bool(m.group("sign")), spell_long=True)
        return padded(m, words)

    text = sub(_ISO_DATE, lambda m: _say_iso_date(m, lang), text)
    text = sub(_PHONE, lambda m: _say_phone(m, lang), text)
    for pattern in lang.time_patterns:
        text = sub(pattern, time, text)
    for pattern, say in lang.rules_after_times():
        text = sub(pattern, say, text)
    text = sub(_TIME, time, text)
    text = sub(rules.currency_before, money, text)
    text = sub(rules.currency_after, money, text)
    text = sub(rules.percent, percent, text)
    if lang.ordinal_pattern:
        text = sub(lang.ordinal_pattern, lambda m: padded_unless_same(m, lang.say_ordinal(m)),
                   text)
    text = sub(rules.degrees, lambda m: _say_degrees(m, lang), text)
    text = sub(_SLASHED, lambda m: _say_slashed(m, lang), text)
    for pattern, say in lang.rules_before_years():
        text = sub(pattern, say, text)
    text = sub(_YEAR, lambda m: _say_year(m, lang), text)
    dotted = _DOTTED_COMMA_DECIMAL if lang.decimal_comma else _DOTTED
    text = sub(dotted, lambda m: _say_dotted(m, lang), text)
    text = sub(rules.number, number, text)
    return _DIGITS.sub(lambda m: padded(m, plain_integer(m.group(), lang)), text)


def speak_ampersands(text: str, lang: Language) -> str:
    """``&`` between words read as the language's "and" (its ``ampersand`` hook)."""
    return _AMPERSAND.sub(lambda m: lang.ampersand(m.string[m.end():m.end() + 3].lower()), text)

