"""French: comma decimals read as a number, "heures", agreement of "un", "premier".

- Numbers: ``.`` or a (narrow, no-break) space groups thousands, ``,`` marks decimals; up to
  three decimals are read as a number ("douze virgule cinq", "zéro virgule zéro cinq").
- Times: ``10:30``, ``10h30``, ``10 h`` → "dix heures trente", "une heure".
- ISO dates: "premier mai deux mille vingt-quatre".
- Ordinals: ``1er`` "premier", ``1re``/``1ère`` "première", ``2nd(e)`` "second(e)", ``3e``/
  ``3ème`` "troisième" (an ``s`` makes them plural).
- Amounts: "une livre", "un million d'euros" (``de``, elided before a vowel, after a "million"
  noun), "cinq euros et cinquante centimes".
- Degrees "degrés", fractions "un demi", "trois quarts" (halves, thirds, quarters), "&" "et",
  "/" "barre".
"""

from __future__ import annotations

import re

from .language import Language, currency
from .number_words import cardinal, ordinal, year

_TIME = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3]) ?h ?([0-5]\d)?(?!\w)")
_ORDINAL = re.compile(r"(?<![\d.,])(\d+)(ers|er|res|re|ères|ère|èmes|ème|emes|eme|es|e|è"
                      r"|ndes|nde|nds|nd)\b")


class French(Language):
    def before_noun(self, words: str, gender: str) -> str:
        return re.sub(r"\bun$", "une", words) if gender == "f" else words

    def count_phrase(self, number_words: str, noun: str) -> str:
        if self.million_of.search(number_words) and noun[:1] in "aeiouyéèh":
            return f"{number_words} d'{noun}"
        return super().count_phrase(number_words, noun)

    def time_words(self, hours: int, minutes: int) -> str:
        h = self.before_noun(cardinal(hours, self), "f")
        hour_word = "heure" if hours <= 1 else "heures"
        m = f" {self.before_noun(cardinal(minutes, self), 'f')}" if minutes else ""
        return f"{h} {hour_word}{m}"

    def date_words(self, day: int, month: int, year_number: int, before: str) -> str:
        d = "premier" if day == 1 else cardinal(day, self)
        return f"{d} {self.months[month - 1]} {year(year_number, self)}"

    def say_ordinal(self, m: re.Match) -> str:
        n, suffix = int(m.group(1)), m.group(2)
        plural = "s" if suffix.endswith("s") else ""
        if n == 1 and suffix.startswith(("r", "è")) and suffix not in ("ème", "èmes", "è"):
            return "première" + plural
        if n == 2 and suffix.startswith("nd"):
            return ("seconde" if "e" in suffix else "second") + plural
        if n == 1:
            return "premier" + plural
        return ordinal(n, self) + plural


LANGUAGE = French(
    code="fr", point="virgule", dot="point", at="arobase", minus="moins", percent="pour cent",
    money_and="et", and_word="et", slash="barre", plus="plus",
    months=tuple("janvier février mars avril mai juin juillet août septembre octobre novembre "
                 "décembre".split()),
    degree=("degré", "degrés"),
    decimal_comma=True, decimals_as_number=True,
    fractions={(1, 2): "un demi", (1, 3): "un tiers", (2, 3): "deux tiers", (1, 4): "un quart",
               (3, 4): "trois quarts"},
    currencies={"USD": currency("dollar", "dollars", sub=("cent", "cents")),
                "EUR": currency("euro", "euros", sub=("centime", "centimes")),
                "GBP": currency("livre", "livres", "f", sub=("penny", "pence")),
                "JPY": currency("yen", "yens"),
                "INR": currency("roupie", "roupies", "f", sub=("paisa", "paisas"))},
    scale_words="mille|millions?|milliards?",
    million_of=re.compile(r"\b(?:millions?|milliards?|billions?)$"), of_word="de",
    time_patterns=(_TIME,),
    ordinal_pattern=_ORDINAL,
    abbreviations=frozenset("mme mlle mm dr pr me st ste cf env p.ex av apr vol chap éd n°".split()),
    spaced_closer="»",
)
