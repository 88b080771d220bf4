"""English: American number words, years in pairs, ordinals and fractions up to tenths.

- Numbers: ``,`` groups thousands (also the Indian ``1,00,000``), ``.`` marks decimals, read
  digit by digit ("one thousand two hundred thirty-four point five"); cardinals are American
  ("two hundred thirty-four", no "and").
- Years: "nineteen ninety-nine", "twenty twenty-four"; decades "the 1990s", "'90s" → "the
  nineteen nineties", "nineties".
- Times: "ten thirty", "seven oh five", "twelve o'clock" (1-12 h), "zero hundred".
- ISO dates: "May first, twenty twenty-four".
- Ordinals: ``21st`` → "twenty-first".
- Fractions: proper fractions up to tenths ("one half", "three quarters", "two thirds", "five
  eighths").
- Amounts: "five dollars and fifty cents", "one pound", "two pence", "ten yen", "rupees".
"""

from __future__ import annotations

import re

from .language import Language, Rule, currency
from .number_words import cardinal, num2words_year, ordinal, padded, year

_ORDINAL = re.compile(r"(?<![\d.,])(\d+)(st|nd|rd|th)\b", re.I)
_DECADE = re.compile(r"(?<![\d.,])'?(\d{2}|1\d{3}|20\d{2})'?s\b")


def _pluralize(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


class English(Language):
    def fix_number_words(self, words: str) -> str:
        """American style: "one thousand two hundred thirty-four"."""
        return words.replace(",", "").replace(" and ", " ").replace("oh-", "oh ")

    def year_words(self, n: int) -> str:
        return num2words_year(n, self) or cardinal(n, self)

    def time_words(self, hours: int, minutes: int) -> str:
        h, m = cardinal(hours, self), cardinal(minutes, self)
        if minutes == 0:
            return f"{h} o'clock" if 1 <= hours <= 12 else f"{h} hundred"
        return f"{h} oh {m}" if minutes < 10 else f"{h} {m}"

    def date_words(self, day: int, month: int, year_number: int, before: str) -> str:
        return f"{self.months[month - 1]} {ordinal(day, self)}, {year(year_number, self)}"

    def fraction_name(self, numerator: int, denominator: int) -> str | None:
        if not (0 < numerator < denominator <= 10):
            return None
        name = {2: "half", 4: "quarter"}.get(denominator) or ordinal(denominator, self)
        if numerator > 1:
            name = "halves" if denominator == 2 else name + "s"
        return f"{cardinal(numerator, self)} {name}"

    def rules_before_years(self) -> tuple[Rule, ...]:
        return ((_DECADE, self._say_decade),)

    def _say_decade(self, m: re.Match) -> str:
        digits = m.group(1)
        if digits[-1] != "0":
            return m.group()
        n = int(digits)
        return padded(m, _pluralize(year(n, self) if n >= 1000 else cardinal(n, self)))


LANGUAGE = English(
    code="en", point="point", dot="dot", at="at", minus="minus", percent="percent",
    money_and="and", and_word="and", slash="slash", plus="plus",
    months=tuple("January February March April May June July August September October November "
                 "December".split()),
    degree=("degree", "degrees"),
    currencies={"USD": currency("dollar", "dollars", sub=("cent", "cents")),
                "EUR": currency("euro", "euros", sub=("cent", "cents")),
                "GBP": currency("pound", "pounds", sub=("penny", "pence")),
                "JPY": currency("yen", "yen"),
                "INR": currency("rupee", "rupees", sub=("paisa", "paise"))},
    scale_words="thousand|million|billion|trillion",
    ordinal_pattern=_ORDINAL,
    abbreviations=frozenset(
        "mr mrs ms dr prof sr jr st mt vs e.g i.e approx dept fig gov lt col capt sgt "
        "rev hon jan feb mar apr jun jul aug sep sept oct nov dec vol cf".split()),
)
