"""Arabic: counted nouns that follow the number, "و" joined to the next word, no ordinals.

- Numbers: ``,`` groups thousands, ``.`` (or ``٫``) marks decimals; up to three decimals are
  read as a number; Arabic-Indic digits (``١٢``) are read like any other. The conjunction "و"
  inside a number is written joined to the next word ("ألفان وأربعة وعشرون"), and a dual said
  on its own takes its full form ("ألفان", not the construct "ألفا" used before a noun).
- Amounts and degrees: the noun follows the number: "دولار واحد", the dual "دولاران", the
  plural for 3-10 ("خمسة دولارات"), the accusative singular for 11-99, the singular for
  hundreds; a feminine noun (روبية) takes the feminine units 3-10. Cents the same, joined by "و".
- Times: "عشرة وثلاثون" ("الساعة" is usually written before the time already).
- ISO dates: "واحد مايو ألفان ..." (months يناير ... ديسمبر).
- Ordinals are not expanded. Degrees "درجات مئوية", fractions "نصف", "ثلث", "ربع", "&" "و"
  (joined to an Arabic word), "/" "شرطة مائلة", phone groups separated by "،".
"""

from __future__ import annotations

import re

from .language import Language
from .number_words import cardinal, say_number, split_number

_STANDALONE_DUAL = {"مئتا": "مئتان", "ألفا": "ألفان", "مليونا": "مليونان", "مليارا": "ملياران"}
_LETTER = re.compile(r"[\u0600-\u06ff]")

#: counted nouns: (singular, dual, plural for 3-10, accusative singular for 11-99), and whether
#: the noun is feminine; per currency the unit and the subunit
_CURRENCIES = {
    "USD": ((("دولار", "دولاران", "دولارات", "دولارًا"), False),
            (("سنت", "سنتان", "سنتات", "سنتًا"), False)),
    "EUR": ((("يورو", "يوروان", "يورو", "يورو"), False),
            (("سنت", "سنتان", "سنتات", "سنتًا"), False)),
    "GBP": ((("جنيه", "جنيهان", "جنيهات", "جنيهًا"), False),
            (("بنس", "بنسان", "بنسات", "بنسًا"), False)),
    "JPY": ((("ين", "ينان", "ينات", "ينًا"), False), None),
    "INR": ((("روبية", "روبيتان", "روبيات", "روبية"), True),
            (("بيسة", "بيستان", "بيسات", "بيسة"), True)),
}
_DEGREE = ("درجة", "درجتان", "درجات", "درجة")
_FEMININE_UNITS = {"ثلاثة": "ثلاث", "أربعة": "أربع", "خمسة": "خمس", "ستة": "ست",
                   "سبعة": "سبع", "ثمانية": "ثماني", "تسعة": "تسع", "عشرة": "عشر"}


class Arabic(Language):
    def fix_number_words(self, words: str) -> str:
        return words.replace(" و ", " و")  # the conjunction is written joined to the next word

    def standalone_form(self, words: str) -> str:
        """"ألفان", not the construct form "ألفا" (used before a noun)."""
        head, _, last = words.rpartition(" ")
        return (head + " " if head else "") + _STANDALONE_DUAL.get(last, last)

    def count_noun(self, n: int, forms: tuple[str, str, str, str], feminine: bool) -> str:
        """A number with its counted noun: 1 and 2 by the noun ("دولار واحد", "دولاران"), 3-10
        with the plural, 11-99 with the accusative singular, hundreds with the singular."""
        singular, dual, plural, accusative = forms
        if n == 1:
            return f"{singular} {'واحدة' if feminine else 'واحد'}"
        if n == 2:
            return dual
        words = cardinal(n, self, standalone=False)
        rest = n % 100
        if feminine and 3 <= rest <= 10:
            head, _, last = words.rpartition(" و")
            last = _FEMININE_UNITS.get(last, last)
            words = f"{head} و{last}" if head else last
        noun = plural if 3 <= rest <= 10 else accusative if 11 <= rest <= 99 else singular
        return f"{words} {noun}"

    def say_money(self, token: str, code: str, *, negative: bool, scale: str | None) -> str:
        whole, fraction, _ = split_number(token, self)
        n = int(whole)
        minus = f"{self.minus} " if negative else ""
        (unit_forms, unit_feminine), sub = _CURRENCIES[code]
        if scale or (fraction and (len(fraction) != 2 or sub is None)):
            amount = say_number(token, self) + (f" {scale}" if scale else "")
            return f"{minus}{amount} {unit_forms[0]}"
        parts = []
        cents = int(fraction) if fraction else 0
        if n or not cents:
            parts.append(self.count_noun(n, unit_forms, unit_feminine))
        if cents:
            parts.append(self.count_noun(cents, *sub))
        return minus + " و".join(parts)

    def say_degrees(self, token: str, *, negative: bool) -> str:
        whole, fraction, _ = split_number(token, self)
        if fraction:
            return super().say_degrees(token, negative=negative)
        minus = f"{self.minus} " if negative else ""
        return minus + self.count_noun(int(whole), _DEGREE, True)

    def time_words(self, hours: int, minutes: int) -> str:
        return cardinal(hours, self) + (f" و{cardinal(minutes, self)}" if minutes else "")

    def ampersand(self, after: str) -> str:
        return " و" if _LETTER.match(after) else super().ampersand(after)


LANGUAGE = Arabic(
    code="ar", point="فاصلة", dot="نقطة", at="آت", minus="سالب", percent="بالمئة",
    money_and="و", and_word="و", slash="شرطة مائلة", plus="زائد",
    months=tuple("يناير فبراير مارس أبريل مايو يونيو يوليو أغسطس سبتمبر أكتوبر نوفمبر ديسمبر"
                 .split()),
    degree=("درجة", "درجة"), celsius="مئوية", fahrenheit="فهرنهايت",
    list_comma="، ",
    decimals_as_number=True,
    fractions={(1, 2): "نصف", (1, 3): "ثلث", (2, 3): "ثلثان", (1, 4): "ربع",
               (3, 4): "ثلاثة أرباع"},
    scale_words="ألف|مليون|مليار",
    abbreviations=frozenset("د".split()),
)
