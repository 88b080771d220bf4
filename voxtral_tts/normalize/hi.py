"""Hindi: numbers from the tables here (``num2words`` has no Hindi), the Indian scale, "बजे".

- Numbers: the words 0-99 and the scales सौ, हज़ार, लाख, करोड़ (crores repeat above); ``,``
  groups (``1,00,000`` एक लाख), ``.`` marks decimals, read digit by digit ("दशमलव"); Devanagari
  digits (``२०२४``) are read like any other.
- Years: 1100-1999 in hundreds ("उन्नीस सौ निन्यानवे"), others as the cardinal.
- Times: "दस बजकर तीस मिनट", "दस बजे" (a "बजे" after the time is part of it).
- ISO dates: "एक मई दो हज़ार चौबीस".
- Ordinals: ``1ला`` पहला, ``2रा`` दूसरा, ``3रा`` तीसरा, ``4था`` चौथा, ``6ठा`` छठा (irregular below
  seven), otherwise the cardinal with the written suffix (``5वाँ`` पाँचवाँ, ``21वीं`` इक्कीसवीं).
- Amounts: "पाँच रुपये", "एक रुपया", "पचास पैसे"; ``₹``, ``Rs``, ``रु``; a heading or list item
  ends with "।"; degrees "डिग्री सेल्सियस", fractions "आधा", "तीन चौथाई", "&" "और", "/" "स्लैश".
"""

from __future__ import annotations

import re

from .language import Language, currency

_WORDS_0_99 = (
    "शून्य एक दो तीन चार पाँच छह सात आठ नौ "
    "दस ग्यारह बारह तेरह चौदह पंद्रह सोलह सत्रह अठारह उन्नीस "
    "बीस इक्कीस बाईस तेईस चौबीस पच्चीस छब्बीस सत्ताईस अट्ठाईस उनतीस "
    "तीस इकतीस बत्तीस तैंतीस चौंतीस पैंतीस छत्तीस सैंतीस अड़तीस उनतालीस "
    "चालीस इकतालीस बयालीस तैंतालीस चवालीस पैंतालीस छियालीस सैंतालीस अड़तालीस उनचास "
    "पचास इक्यावन बावन तिरपन चौवन पचपन छप्पन सत्तावन अट्ठावन उनसठ "
    "साठ इकसठ बासठ तिरसठ चौंसठ पैंसठ छियासठ सड़सठ अड़सठ उनहत्तर "
    "सत्तर इकहत्तर बहत्तर तिहत्तर चौहत्तर पचहत्तर छिहत्तर सतहत्तर अठहत्तर उन्यासी "
    "अस्सी इक्यासी बयासी तिरासी चौरासी पचासी छियासी सत्तासी अट्ठासी नवासी "
    "नब्बे इक्यानवे बानवे तिरानवे चौरानवे पंचानवे छियानवे सत्तानवे अट्ठानवे निन्यानवे"
).split()
_SCALES = ((10**7, "करोड़"), (10**5, "लाख"), (1000, "हज़ार"), (100, "सौ"))
#: ordinals irregular below seven (पहला, दूसरा, तीसरा, चौथा, छठा, written 1ला, 2रा, ...)
_IRREGULAR_ORDINALS = {1: "पहल", 2: "दूसर", 3: "तीसर", 4: "चौथ", 6: "छठ"}
_TIME = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3])(?::([0-5]\d))? ?बजे(?![\u0900-\u097f])")
_ORDINAL = re.compile(r"(?<![\d.,])(\d+)(वाँ|वां|वें|वीं|वी|वे|वा|ला|ली|ले|रा|री|रे|था|थी|थे|ठा|ठी"
                      r"|ठे)(?![\u0900-\u097f])")


def hindi_cardinal(n: int) -> str:
    """A cardinal in the Indian system (सौ, हज़ार, लाख, करोड़; crores repeat above)."""
    if n < 100:
        return _WORDS_0_99[n]
    words = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            words += [hindi_cardinal(count), name]
    if n:
        words.append(_WORDS_0_99[n])
    return " ".join(words)


class Hindi(Language):
    def own_cardinal(self, n: int) -> str:
        return hindi_cardinal(n)

    def year_words(self, n: int) -> str:
        if 1100 <= n < 2000:
            rest = f" {_WORDS_0_99[n % 100]}" if n % 100 else ""
            return f"{_WORDS_0_99[n // 100]} सौ{rest}"
        return hindi_cardinal(n)

    def time_words(self, hours: int, minutes: int) -> str:
        h = hindi_cardinal(hours)
        return f"{h} बजकर {hindi_cardinal(minutes)} मिनट" if minutes else f"{h} बजे"

    def say_ordinal(self, m: re.Match) -> str:
        n, suffix = int(m.group(1)), m.group(2)
        if n in _IRREGULAR_ORDINALS:
            vowel = next(c for c in suffix if c in "ाीे")
            return _IRREGULAR_ORDINALS[n] + vowel
        if not suffix.startswith("व"):
            return m.group()  # "5ला" is no ordinal: read as number and word
        return hindi_cardinal(n) + suffix


LANGUAGE = Hindi(
    code="hi", point="दशमलव", dot="डॉट", at="एट", minus="माइनस", percent="प्रतिशत",
    money_and="", and_word="और", slash="स्लैश", plus="प्लस", sentence_end="।",
    months=tuple("जनवरी फ़रवरी मार्च अप्रैल मई जून जुलाई अगस्त सितंबर अक्टूबर नवंबर दिसंबर".split()),
    degree=("डिग्री", "डिग्री"), celsius="सेल्सियस", fahrenheit="फ़ारेनहाइट",
    fractions={(1, 2): "आधा", (1, 3): "एक तिहाई", (2, 3): "दो तिहाई", (1, 4): "एक चौथाई",
               (3, 4): "तीन चौथाई"},
    currencies={"USD": currency("डॉलर", "डॉलर", sub=("सेंट", "सेंट")),
                "EUR": currency("यूरो", "यूरो", sub=("सेंट", "सेंट")),
                "GBP": currency("पाउंड", "पाउंड", sub=("पेनी", "पेंस")),
                "JPY": currency("येन", "येन"),
                "INR": currency("रुपया", "रुपये", sub=("पैसा", "पैसे"))},
    scale_words="हज़ार|हजार|लाख|करोड़",
    time_patterns=(_TIME,),
    ordinal_pattern=_ORDINAL,
    abbreviations=frozenset("डॉ प्रो".split()),
)
