"""German: comma decimals read digit by digit, "Uhr", ordinals with the ending the article asks.

- Numbers: ``.`` or a space groups thousands, ``,`` marks decimals, read digit by digit
  ("zwölf Komma fünf"); a ``.`` that is no grouping is "Punkt" (``2.1`` "zwei Punkt eins").
- Years: "neunzehnhundertneunundneunzig".
- Times: ``10:30``, ``10.30 Uhr``, ``10 Uhr`` → "zehn Uhr dreißig", "ein Uhr" (an "Uhr" after the
  time is part of it).
- Dates: ``03.10.2024`` and ISO ``2024-10-03`` → "dritter Oktober zweitausendvierundzwanzig"
  (with the ordinal ending below: "am 03.10.2024" → "am dritten Oktober ..."); a line "3. Oktober
  ..." is a date, not a numbered list item.
- Ordinals: "N." before a lowercase word or a month, after an article or contracted preposition,
  first in a clause, or after "N. und" take the ending the word before them asks for:
  "am/im/zum/dem/den/des" → "-en" (am dritten Oktober), "der/die/das" → "-e" (der dritte
  Oktober), no article before a month → "-er" (dritter Oktober); otherwise the base form "-e".
  "N." before a capitalised word with none of these ("auf 25. Die ...") ends a sentence and stays
  a number.
- Amounts: "ein Euro", "eine Rupie", "ein Pfund", "fünf Euro und fünfzig Cent", "eine Million
  Euro", ``Mio.``/``Mrd.`` → "Million(en)"/"Milliarde(n)"; "ein Prozent", "ein Grad".
- Degrees "Grad", fractions "ein halb", "drei Viertel" (halves, thirds, quarters), "&" "und",
  "/" "Schrägstrich".
"""

from __future__ import annotations

import re

from .language import Language, Rule, currency
from .number_words import cardinal, num2words_year, ordinal, year

_MONTHS = tuple("Januar Februar März April Mai Juni Juli August September Oktober November "
                "Dezember".split())
_MONTH_WORDS = frozenset(_MONTHS) | {"Jänner"}  # the Austrian January too
_TIME = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3])(?:[:.]([0-5]\d))? ?Uhr\b")
_DATE = re.compile(r"(?<![\d.,])(\d{1,2})\.(\d{1,2})\.(\d{4})(?![\d]|[.,]\d)")
_DATE_LINE = re.compile(r"^[ \t]*\d{1,2}\.[ \t]+(?:" + "|".join(sorted(_MONTH_WORDS)) + r")\b")
_ORDINAL = re.compile(r"(?<![\d.,])(\d+)\.(?=[ \t]+\w)")
#: words after which an ordinal takes the weak "-en" ending (dative, "den", genitive)
_EN_ENDING = frozenset("am im vom zum zur beim dem den des einem einen eines".split())
_E_ENDING = frozenset("der die das".split())
_NEXT_WORD = re.compile(r"\s*(\w+)")
_CLAUSE_START = re.compile(r"(?:^|[,;(])[ \t]*$")
_PREVIOUS_WORD = re.compile(r"(\w+)\W*$")
_COORDINATED = re.compile(r"(\w+)\s+\d+\.\s+(?:und|oder|bis)\s*$")
_AFTER_ORDINAL = re.compile(r"\d\.\s+(?:und|oder|bis)\s*$")


def _ending(before: str, month_follows: bool) -> str:
    """The ending of an ordinal from the word before it: "am 3." → "dritten", "der 3." →
    "dritte", a bare date "3. Oktober" → "dritter", otherwise the base form "dritte"."""
    coordinated = _COORDINATED.search(before)
    previous = _PREVIOUS_WORD.search(before)
    word = (coordinated or previous).group(1).lower() if (coordinated or previous) else ""
    if word in _EN_ENDING:
        return "n"
    if word in _E_ENDING or not month_follows:
        return ""
    return "r"


class German(Language):
    def before_noun(self, words: str, gender: str) -> str:
        if words.endswith("eins"):
            return words[:-1] + ("e" if gender == "f" else "")
        return words

    def year_words(self, n: int) -> str:
        return num2words_year(n, self) or cardinal(n, self)

    def time_words(self, hours: int, minutes: int) -> str:
        h = self.before_noun(cardinal(hours, self), "n")
        return f"{h} Uhr" + (f" {cardinal(minutes, self)}" if minutes else "")

    def date_words(self, day: int, month: int, year_number: int, before: str) -> str:
        ending = _ending(before, month_follows=True)
        return f"{ordinal(day, self)}{ending} {self.months[month - 1]} {year(year_number, self)}"

    def say_ordinal(self, m: re.Match) -> str:
        """A number and a period is an ordinal before a lowercase word or a month name ("am 3.
        Oktober", "die 2. und"), after an article or contracted preposition ("im 19.
        Jahrhundert"), first in a clause ("…, 2. Auflage") or after another ordinal ("2. und 3.
        Klasse"); otherwise it is a number that ends a sentence ("auf 25. Die …") and is left
        as it is."""
        before, after = m.string[:m.start()], _NEXT_WORD.match(m.string, m.end())
        next_word = after.group(1) if after else ""
        month_follows = next_word in _MONTH_WORDS
        previous = _PREVIOUS_WORD.search(before)
        after_article = previous and previous.group(1).lower() in _EN_ENDING | _E_ENDING
        clause_start = _CLAUSE_START.search(before)
        coordinated = _AFTER_ORDINAL.search(before)
        if not (next_word[:1].islower() or month_follows or after_article or clause_start
                or coordinated):
            return m.group()
        return ordinal(int(m.group(1)), self) + _ending(before, month_follows)

    def rules_after_times(self) -> tuple[Rule, ...]:
        return ((_DATE, self._say_date),)

    def _say_date(self, m: re.Match) -> str:
        """"03.10.2024" as a date (any day up to 31 of a month 1-12)."""
        day, month, year_number = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (1 <= day <= 31 and 1 <= month <= 12):
            return m.group()
        return self.date_words(day, month, year_number, m.string[:m.start()])


LANGUAGE = German(
    code="de", point="Komma", dot="Punkt", at="at", minus="minus", percent="Prozent",
    money_and="und", and_word="und", slash="Schrägstrich", plus="plus",
    months=_MONTHS,
    degree=("Grad", "Grad"), degree_gender="n",
    decimal_comma=True,
    fractions={(1, 2): "ein halb", (1, 3): "ein Drittel", (2, 3): "zwei Drittel",
               (1, 4): "ein Viertel", (3, 4): "drei Viertel"},
    currencies={"USD": currency("Dollar", "Dollar", sub=("Cent", "Cent")),
                "EUR": currency("Euro", "Euro", sub=("Cent", "Cent")),
                "GBP": currency("Pfund", "Pfund", "n", sub=("Penny", "Pence")),
                "JPY": currency("Yen", "Yen"),
                "INR": currency("Rupie", "Rupien", "f", sub=("Paisa", "Paise"))},
    scale_words=r"Tausend|Millionen|Million|Milliarden|Milliarde|Mio\.|Mrd\.", scale_gender="f",
    scale_abbreviations={"Mio.": ("Million", "Millionen"), "Mrd.": ("Milliarde", "Milliarden")},
    percent_gender="n",
    time_patterns=(_TIME,),
    ordinal_pattern=_ORDINAL,
    not_a_list_item=_DATE_LINE,
    abbreviations=frozenset(
        "hr hrn fr dr prof st z.b d.h u.a bzw ca vgl nr str evtl ggf sog abs bspw inkl "
        "zzgl jh mio mrd".split()),
)
