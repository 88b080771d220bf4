"""Portuguese: comma decimals read as a number, gender agreement, "de" in dates and amounts.

- Numbers: ``.`` or a space groups thousands, ``,`` marks decimals; up to three decimals are
  read as a number ("doze vírgula cinco").
- Times: "dez e trinta", "dez horas", "uma hora".
- ISO dates: "primeiro de maio de dois mil e vinte e quatro".
- Ordinals: ``1º`` "primeiro", ``1ª`` "primeira"; ``°`` is an ordinal only before a month ("1°
  de maio"), elsewhere a degree sign.
- Amounts: "uma libra", "duas libras", "duzentas libras", "um milhão de euros" (``de`` after a
  "milhão" noun), "cinco euros e cinquenta cêntimos"; ``¥`` "ienes".
- Degrees "graus", fractions "um meio", "três quartos" (halves, thirds, quarters), "&" "e", "/"
  "barra".
"""

from __future__ import annotations

import re

from .language import Language, currency, gendered_ordinal
from .number_words import cardinal, year

_MONTHS = tuple("janeiro fevereiro março abril maio junho julho agosto setembro outubro "
                "novembro dezembro".split())
_ORDINAL = re.compile(r"(?<![\d.,])(\d+)(?:\.?([ºª])|°(?= de (?:" + "|".join(_MONTHS)
                      + r")\b))")


class Portuguese(Language):
    def before_noun(self, words: str, gender: str) -> str:
        if gender != "f":
            return words
        words = re.sub(r"\bum$", "uma", words)
        words = re.sub(r"\bdois$", "duas", words)
        return words if "milh" in words or "bilh" in words else words.replace("entos", "entas")

    def time_words(self, hours: int, minutes: int) -> str:
        h = self.before_noun(cardinal(hours, self), "f")
        if minutes == 0:
            return f"{h} {'hora' if hours == 1 else 'horas'}"
        return f"{h} e {cardinal(minutes, self)}"

    def date_words(self, day: int, month: int, year_number: int, before: str) -> str:
        d = "primeiro" if day == 1 else cardinal(day, self)
        return f"{d} de {self.months[month - 1]} de {year(year_number, self)}"

    say_ordinal = gendered_ordinal


LANGUAGE = Portuguese(
    code="pt", point="vírgula", dot="ponto", at="arroba", minus="menos", percent="por cento",
    money_and="e", and_word="e", slash="barra", plus="mais",
    months=_MONTHS,
    degree=("grau", "graus"),
    decimal_comma=True, decimals_as_number=True,
    fractions={(1, 2): "um meio", (1, 3): "um terço", (2, 3): "dois terços", (1, 4): "um quarto",
               (3, 4): "três quartos"},
    currencies={"USD": currency("dólar", "dólares", sub=("cêntimo", "cêntimos")),
                "EUR": currency("euro", "euros", sub=("cêntimo", "cêntimos")),
                "GBP": currency("libra", "libras", "f", sub=("penny", "pence")),
                "JPY": currency("iene", "ienes"),
                "INR": currency("rupia", "rupias", "f", sub=("paisa", "paisas"))},
    scale_words="mil|milhão|milhões|bilhão|bilhões",
    million_of=re.compile(r"\b(?:milhão|milhões|bilião|biliões|bilhão|bilhões)$"), of_word="de",
    ordinal_pattern=_ORDINAL,
    abbreviations=frozenset("sr sra srta dr dra prof profa exmo exma p.ex pág aprox av nº".split()),
)
