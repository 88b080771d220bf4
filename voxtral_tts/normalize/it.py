"""Italian: comma decimals read as a number, "in punto", "primo".

- Numbers: ``.`` or a space groups thousands, ``,`` marks decimals; up to three decimals are
  read as a number ("dodici virgola cinque").
- Times: "dieci e trenta", "dieci in punto", "una e cinque".
- ISO dates: "primo maggio duemilaventiquattro".
- Ordinals: ``1º`` "primo", ``1ª`` "prima"; ``°`` is an ordinal only before a month ("1°
  maggio"), elsewhere a degree sign.
- Amounts: "un euro", "una sterlina", "un milione di euro" (``di`` after a "milione" noun),
  "cinque euro e cinquanta centesimi".
- Degrees "gradi", fractions "un mezzo", "tre quarti" (halves, thirds, quarters), "&" "e", "/"
  "barra".
"""

from __future__ import annotations

import re

from .language import Language, currency, gendered_ordinal
from .number_words import cardinal, year

_MONTHS = tuple("gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre "
                "novembre dicembre".split())
_ORDINAL = re.compile(r"(?<![\d.,])(\d+)(?:\.?([ºª])|°(?= (?:" + "|".join(_MONTHS) + r")\b))")


class Italian(Language):
    def before_noun(self, words: str, gender: str) -> str:
        if words == "uno":
            return "una" if gender == "f" else "un"
        return words

    def time_words(self, hours: int, minutes: int) -> str:
        h = "una" if hours == 1 else cardinal(hours, self)
        return f"{h} in punto" if minutes == 0 else f"{h} e {cardinal(minutes, self)}"

    def date_words(self, day: int, month: int, year_number: int, before: str) -> str:
        d = "primo" if day == 1 else cardinal(day, self)
        return f"{d} {self.months[month - 1]} {year(year_number, self)}"

    say_ordinal = gendered_ordinal


LANGUAGE = Italian(
    code="it", point="virgola", dot="punto", at="chiocciola", minus="meno", percent="per cento",
    money_and="e", and_word="e", slash="barra", plus="più",
    months=_MONTHS,
    degree=("grado", "gradi"),
    decimal_comma=True, decimals_as_number=True,
    fractions={(1, 2): "un mezzo", (1, 3): "un terzo", (2, 3): "due terzi", (1, 4): "un quarto",
               (3, 4): "tre quarti"},
    currencies={"USD": currency("dollaro", "dollari", sub=("centesimo", "centesimi")),
                "EUR": currency("euro", "euro", sub=("centesimo", "centesimi")),
                "GBP": currency("sterlina", "sterline", "f", sub=("penny", "pence")),
                "JPY": currency("yen", "yen"),
                "INR": currency("rupia", "rupie", "f", sub=("paisa", "paise"))},
    scale_words="mila|mille|milion[ei]|miliard[oi]",
    million_of=re.compile(r"\b(?:milion[ei]|miliard[oi]|bilion[ei])$"), of_word="di",
    ordinal_pattern=_ORDINAL,
    abbreviations=frozenset("sig sigg dott dr prof ing avv geom rag arch on p.es pag cfr".split()),
)
