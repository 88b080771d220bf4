"""Dutch: comma decimals read as a number, years in hundreds, "uur".

- Numbers: ``.`` or a space groups thousands, ``,`` marks decimals; up to three decimals are
  read as a number ("twaalf komma vijf"); "honderdeen", not "honderdéén".
- Years: "negentienhonderdnegenennegentig" (one word).
- Times: "tien uur dertig", "tien uur".
- ISO dates: "één mei tweeduizendvierentwintig".
- Ordinals: ``2de``, ``3e``, ``1ste`` → "tweede", "derde", "eerste".
- Amounts: "vijf euro en vijftig cent"; degrees "graden", fractions "een half", "drie kwart"
  (halves, thirds, quarters), "&" "en", "/" "schuine streep".
"""

from __future__ import annotations

import re

from .language import Language, currency
from .number_words import cardinal, num2words_year

_COMPOUND_EEN = re.compile(r"(?<=\w)één")


class Dutch(Language):
    def fix_number_words(self, words: str) -> str:
        return _COMPOUND_EEN.sub("een", words)  # "honderdeen", not "honderdéén"

    def year_words(self, n: int) -> str:
        words = num2words_year(n, self)
        return cardinal(n, self) if words is None else words.replace(" ", "")

    def time_words(self, hours: int, minutes: int) -> str:
        return f"{cardinal(hours, self)} uur" + (f" {cardinal(minutes, self)}" if minutes else "")


LANGUAGE = Dutch(
    code="nl", point="komma", dot="punt", at="apenstaartje", minus="min", percent="procent",
    money_and="en", and_word="en", slash="schuine streep", plus="plus",
    months=tuple("januari februari maart april mei juni juli augustus september oktober november "
                 "december".split()),
    degree=("graad", "graden"),
    decimal_comma=True, decimals_as_number=True,
    fractions={(1, 2): "een half", (1, 3): "een derde", (2, 3): "twee derde", (1, 4): "een kwart",
               (3, 4): "drie kwart"},
    currencies={"USD": currency("dollar", "dollar", sub=("cent", "cent")),
                "EUR": currency("euro", "euro", sub=("cent", "cent")),
                "GBP": currency("pond", "pond", sub=("penny", "pence")),
                "JPY": currency("yen", "yen"),
                "INR": currency("roepie", "roepie", sub=("paisa", "paise"))},
    scale_words="duizend|miljoen|miljard",
    ordinal_pattern=re.compile(r"(?<![\d.,])(\d+)(ste|de|e)\b"),
    abbreviations=frozenset("dhr mevr mw dr prof ir mr ing drs bijv bv d.w.z o.a ca nr blz zgn resp".split()),
)
