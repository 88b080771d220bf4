"""Spanish: comma decimals read as a number, gender agreement, "de" in dates and amounts.

- Numbers: ``.`` or a space groups thousands, ``,`` marks decimals; up to three decimals are
  read as a number ("doce coma cinco").
- Times: "diez y treinta", "diez en punto", "una y cinco".
- ISO dates: "uno de mayo de dos mil veinticuatro".
- Ordinals: ``1º`` "primero", ``1ª`` "primera", ``1.er`` "primer", ``3.er`` "tercer"; ``°`` is an
  ordinal only before a month ("1° de mayo"), elsewhere a degree sign.
- Amounts: "veintiún euros", "doscientas libras", "un millón de dólares" (``de`` after a
  "millón" noun), "cinco euros con cincuenta céntimos".
- Degrees "grados", fractions "un medio", "tres cuartos" (halves, thirds, quarters), "&" "y"
  ("e" before an "i" sound: "R&I" → "R e I"), "/" "barra".
"""

from __future__ import annotations

import re

from .language import Language, currency, gendered_ordinal
from .number_words import cardinal, ordinal, year

#: the months, with the variant "setiembre", after which "N°" is an ordinal
_MONTH_WORDS = ("enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre "
                "noviembre diciembre").split()
_ORDINAL = re.compile(r"(?<![\d.,])(\d+)(?:\.?([ºª])|\.?(er)\b|°(?= de (?:"
                      + "|".join(_MONTH_WORDS) + r")\b))")
_COMPOUND_DECIMO = re.compile(r"décimo(?=\w)")


class Spanish(Language):
    def fix_number_words(self, words: str) -> str:
        return _COMPOUND_DECIMO.sub("decimo", words)  # "decimoprimero"

    def before_noun(self, words: str, gender: str) -> str:
        if gender == "f":
            words = re.sub(r"uno$", "una", words)
            return words if "mill" in words else words.replace("ientos", "ientas")
        return re.sub(r"\buno$", "un", words).replace("veintiuno", "veintiún")

    def time_words(self, hours: int, minutes: int) -> str:
        h = self.before_noun(cardinal(hours, self), "f")
        return f"{h} en punto" if minutes == 0 else f"{h} y {cardinal(minutes, self)}"

    def date_words(self, day: int, month: int, year_number: int, before: str) -> str:
        return f"{cardinal(day, self)} de {self.months[month - 1]} de {year(year_number, self)}"

    def say_ordinal(self, m: re.Match) -> str:
        if m.group(3):  # "1.er piso" → "primer"
            return re.sub(r"(primer|tercer)o$", r"\1", ordinal(int(m.group(1)), self))
        return gendered_ordinal(self, m)

    def ampersand(self, after: str) -> str:
        if (after[:1] in "ií" or after[:2] in ("hi", "hí")) \
                and not after.startswith(("hie", "hia", "hio")):
            return " e "
        return super().ampersand(after)


LANGUAGE = Spanish(
    code="es", point="coma", dot="punto", at="arroba", minus="menos", percent="por ciento",
    money_and="con", and_word="y", slash="barra", plus="más",
    months=tuple(m for m in _MONTH_WORDS if m != "setiembre"),
    degree=("grado", "grados"),
    decimal_comma=True, decimals_as_number=True,
    fractions={(1, 2): "un medio", (1, 3): "un tercio", (2, 3): "dos tercios",
               (1, 4): "un cuarto", (3, 4): "tres cuartos"},
    currencies={"USD": currency("dólar", "dólares", sub=("centavo", "centavos")),
                "EUR": currency("euro", "euros", sub=("céntimo", "céntimos")),
                "GBP": currency("libra", "libras", "f", sub=("penique", "peniques")),
                "JPY": currency("yen", "yenes"),
                "INR": currency("rupia", "rupias", "f", sub=("paisa", "paisas", "f"))},
    scale_words="mil|millón|millones",
    million_of=re.compile(r"\b(?:millón|millones|billón|billones)$"), of_word="de",
    ordinal_pattern=_ORDINAL,
    abbreviations=frozenset(
        "sr sra srta sres dr dra d dña ud uds vd vds lic ing prof aprox pág núm p.ej av "
        "avda".split()),
)
