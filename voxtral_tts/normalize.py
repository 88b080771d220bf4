"""Text normalisation before tokenisation: written forms rewritten as the words a speaker says.

``normalize_text(text, language)`` returns speakable text for the model: numbers, amounts,
percentages, times and ordinals become words in the chosen language (from ``num2words``; Hindi,
which ``num2words`` lacks, from the tables here), markdown and decorative typography are reduced
to plain text, and pictographs are dropped. It never raises on odd input (any Unicode; empty text
gives empty text), only on an unknown language (``TextError``), leaves no digit behind, and
normalising its output again changes nothing. Torch-free: the standard library and ``num2words``.

The rules, in the order they apply (examples in English unless marked):

==================  ===================================  ===========================================
rule                input                                output
==================  ===================================  ===========================================
1. characters       NBSP, thin and narrow spaces; tabs   one plain space
                    full-width ``Ａ１``, ligature ``ﬁ``      ``A1``, ``fi``
                    ``١٢`` ``१२`` (any script's digits)  ``12`` (then read as a number)
                    ZWSP, BOM, soft hyphen, controls     dropped (ZWJ/ZWNJ kept between letters)
2. pictographs      emoji, flags, dingbats, ©®™          dropped; one leading a line makes it a
                                                         list item (``✅ Done`` → ``Done.``)
3. typography       “ ” „ « » 「 」 ‘ ’ ‚ ‹ ›            ``"`` or ``'`` (``it’s`` → ``it's``)
                    ``10–20``; ``a — b``, ``a--b``       ``10-20``; ``a - b`` (a spaced hyphen)
4. links            ``https://www.example.com/a?b=1``    ``example dot com`` (host only)
                    ``ana.b@mail.org``                   ``ana dot b at mail dot org``
5. markdown         ``# Title``, ``- item``, ``1. item``  ``Title.``, ``item.`` (a period added if
                                                         there is no final punctuation; the same
                                                         at a blank line between paragraphs)
                    ``**b**`` ``*i*`` ``_i_`` ```c```    ``b`` ``i`` ``i`` ``c``
                    ``[text](url)`` ``![alt](url)``      ``text`` ``alt``; ``> ``, fences and
                                                         rules (``---``) dropped
6. ISO dates        ``2024-05-01``                       May first, twenty twenty-four
   phone numbers    ``555-1234``, ``(555) 123-4567``     five five five, one two three four
                    ``+33 6 12 34 56 78``                plus three three, six, one two, ...
   times            ``10:30`` ``7:05`` ``12:00``         ten thirty, seven oh five, twelve o'clock
                    de ``10:30 Uhr``, fr ``10h30``       zehn Uhr dreißig, dix heures trente
   currency         ``$5.50`` ``10 €`` ``$5 million``    five dollars and fifty cents, ten euros,
                                                         five million dollars ($ € £ ¥ ₹ Rs)
   percentages      ``50%``, de ``12,5 %``               fifty percent, zwölf Komma fünf Prozent
   ordinals         ``21st``, fr ``1re``, es ``1ª``      twenty-first, première, primera
                    de ``am 3. Oktober``, nl ``2de``     am dritten Oktober, tweede
   degrees          ``-5°C``, ``98.6 °F``, ``20°``       minus five degrees Celsius, ... degrees
                                                         Fahrenheit, twenty degrees
   fractions        ``1/2`` ``3/4`` ``5/8`` ``24/7``     one half, three quarters, five eighths,
                                                         twenty-four slash seven
   dates (de)       ``am 03.10.2024``                    am dritten Oktober zweitausend…
   years            ``in 1999``, ``the 1990s``           in nineteen ninety-nine, the nineteen
                                                         nineties (any 4 digits 1000-2099)
   numbers          ``-1,234.5``, de ``1.234,5``         minus one thousand two hundred
                                                         thirty-four point five, eintausend...
                    ``1.2.3``, de ``2.1``                one dot two dot three, zwei Punkt eins
                    ``mp3`` ``COVID-19`` ``007``         mp three, COVID-nineteen, zero zero seven
   ampersands       ``R&D``, ``A & B``, ``5&6``          R and D, A and B, five and six
7. punctuation      ``!!!`` ``?!?!`` ``....`` ``,,``     ``!`` ``?!`` ``…`` ``,``
   whitespace       runs, line breaks; `` !``            one space, stripped; ``!``
==================  ===================================  ===========================================

Numbers. en, ar and hi group thousands with ``,`` (also the Indian ``1,00,000``) and mark decimals
with ``.``; fr, es, de, it, pt and nl group with ``.`` or a (narrow, no-break) space and mark
decimals with ``,``. A group is exactly three digits, so en ``1,5`` is two numbers ("one, five")
and de ``1,5`` is a decimal. In the comma-decimal languages a ``.`` that is no grouping, and in
all languages a run of two or more dots (``1.2.3``, ``192.168.0.1``), is read as the word for
"dot" with each part a number (versions, addresses). Decimals are read digit by digit in en, de
and hi ("point one four") and, up to three of them, as a number in fr, es, it, pt, nl and ar
("virgule quatorze"). A ``-`` or ``−`` is a minus sign only where no letter, digit or ``.,``
precedes it. Digit runs with a leading zero (``007``) or more than nine digits with no separator
(phone numbers, ids) are read digit by digit. Digits inside a word (``mp3``, ``A4``, ``4K``,
``COVID-19``) are read as a number set off from the letters by a space; units (``km``) stay as
written. Any four-digit number from 1000 to 2099 is read as a year (en "twenty
twenty-four", de "neunzehnhundertneunundneunzig", nl and hi likewise; the other languages read
years as cardinals anyway). English cardinals are American ("two hundred thirty-four", no "and").

Currency amounts are said as cardinal + the currency's name written here (``num2words``' own
currency mode is not used: it reads an ``int`` as cents, says "zero dollars", lacks yen and rupee
in most languages and says riyal for every Arabic amount). Two decimals are read as cents
(pence, centimes, ...), others as a decimal amount; the number agrees with the noun where it must
(de "ein Euro"/"eine Rupie", fr "une livre", es "veintiún euros"/"doscientas libras", pt "duas
libras", fr/es/it/pt "un million d'euros"), and Arabic nouns follow the number (dual, plural for
3-10, accusative for 11-99). ``¥`` is read as yen, ``$`` as US dollars.

German ordinals ("N." before a lowercase word or a month, after an article or contracted
preposition, first in a clause, or after "N. und") take the ending the word before them asks
for: "am/im/zum/dem/den/des" → "-en" (am dritten Oktober), "der/die/das" → "-e" (der dritte
Oktober), no article before a month → "-er" (dritter Oktober); otherwise the base form "-e".
"N." before a capitalised word with none of these ("auf 25. Die ...") ends a sentence and stays
a number. es/it/pt ``°`` is an ordinal only before a month ("1° de mayo"); elsewhere it is a
degree sign. Arabic ordinals are not expanded; Hindi ones are (``21वीं`` → इक्कीसवीं, ``1ला`` →
पहला).

Times are HH:MM (24 h, hours 0-23), read as en "ten thirty" / "seven oh five" / "twelve
o'clock", fr "dix heures trente", de "zehn Uhr dreißig", es "diez y treinta" / "diez en punto",
it "dieci e trenta" / "dieci in punto", pt "dez e trinta" / "dez horas", nl "tien uur dertig",
ar "عشرة وثلاثون", hi "दस बजकर तीस मिनट" / "दस बजे" (a de "Uhr" or hi "बजे" after the time is
part of it); seconds (``10:30:15``) are not read as a time.

ISO dates ``YYYY-MM-DD`` are read as dates: en "May first, twenty twenty-four", fr "premier mai
deux mille vingt-quatre", de "erster Mai zweitausendvierundzwanzig" (with the German ordinal
ending rule above: "am 2024-10-03" → "am dritten Oktober ..."), es "uno de mayo de dos mil
veinticuatro", it "primo maggio duemilaventiquattro", pt "primeiro de maio de dois mil e vinte e
quatro", nl "één mei tweeduizendvierentwintig", ar "واحد مايو ألفان ..." (the months يناير ...
ديسمبر), hi "एक मई दो हज़ार चौबीस"; a month past 12 or a day past the month's longest
(``2024-13-45``, ``2024-02-30``) is no date and is read by the other rules.

Phone numbers are read digit by digit, one group at a time, with a comma (a pause) between
groups and the language's "plus" for a leading ``+``. Phone-like are: ``+`` and digit groups
separated by spaces, dots or hyphens, seven digits or more (``+33 6 12 34 56 78``), ``(555)
123-4567``, ``555.123.4567``, ``06 12 34 56 78`` (five pairs after a leading zero), and digit
groups joined by hyphens when there are three or more with at least seven digits (``555-123-4567``,
``1-800-555-1234``; not the date shape ``2024-13-45``) or when they are three digits then four
(``555-1234``; not two round numbers, ``100-1000``). Other hyphenated numbers, scores (``3-2``)
and ranges (``10-20``), are read as numbers joined by the hyphen: "three-two", "ten-twenty".

Degrees: a number before ``°`` is read with the language's word for degrees and, for ``°C`` /
``°F`` (or ``℃`` / ``℉``), the scale: en "minus five degrees Celsius", "one degree", fr "degrés
Celsius", es "grados", de "Grad", it "gradi", pt "graus", nl "graden", ar "درجات مئوية" (the noun
agrees with the number), hi "डिग्री सेल्सियस".

``&`` between two words (numbers included, once they are words) is the language's "and" (en
and, fr et, es y or e before an "i" sound, de und, it and pt e, nl en, ar و joined to an Arabic
word, hi और). Two digit groups ``a/b`` (no leading zero, no third group) are a fraction when it
is a simple one: en proper fractions up to tenths ("one half", "three quarters", "two thirds",
"five eighths"); the other languages name only halves, thirds and quarters (fr "un demi", "trois
quarts"; de "ein halb", "drei Viertel"; es "un medio"; it "un mezzo"; pt "um meio"; nl "een
half"; ar "نصف"; hi "आधा", "तीन चौथाई").
Any other run of digit groups joined by ``/`` (dates such as ``01/05/2024``, whose day and month
order is ambiguous, ``24/7``, ``9/11``) is read group by group with the language's word for
"slash" between them (en slash, fr barre, es/it/pt barra, de Schrägstrich, nl schuine streep, ar
شرطة مائلة, hi स्लैश): "zero one slash zero five slash twenty twenty-four".
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from num2words import num2words

from .errors import TextError

LANGUAGES = ("en", "fr", "es", "de", "it", "pt", "nl", "ar", "hi")

__all__ = ["LANGUAGES", "normalize_text", "resolve_language"]


def normalize_text(text: str, language: str = "en") -> str:
    """``text`` rewritten as speakable words in ``language`` (one of ``LANGUAGES``; a region
    suffix such as ``en-US`` or ``pt_BR`` is accepted and ignored)."""
    lang = resolve_language(language)
    if not text:
        return ""
    text = _clean_characters(text)
    text = _drop_pictographs(text)
    text = _fold_typography(text)
    text = _speak_links(text, lang)
    text = _unwrap_markdown(text, lang)
    text = _expand_numbers(text, lang)
    text = _speak_ampersands(text, lang)  # after the numbers: "5&6" → "five and six"
    text = _tidy_punctuation(text)
    text = _speak_new_links(text, lang)  # "5.com" became "five.com"
    text = _STRAY_JOINER.sub(_keep_joiner, text)  # neighbours may have gone
    text = _LEADING_MARKERS.sub("", _WHITESPACE.sub(" ", text).strip())
    return unicodedata.normalize("NFC", text)


def resolve_language(language: str) -> str:
    """``language`` as one of :data:`LANGUAGES` (``en-US`` → ``en``), or TextError."""
    code = re.split(r"[-_]", str(language).strip().lower(), maxsplit=1)[0]
    if code not in LANGUAGES:
        raise TextError(f"unknown language {language!r}: use one of {', '.join(LANGUAGES)}")
    return code


# --- words per language ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Words:
    point: str  # decimal separator, spoken
    dot: str  # "." in a host name or a dotted number
    at: str  # "@" in an e-mail address
    minus: str
    percent: str
    money_and: str  # between units and cents ("" = nothing)
    sentence_end: str = "."


_WORDS = {
    "en": _Words("point", "dot", "at", "minus", "percent", "and"),
    "fr": _Words("virgule", "point", "arobase", "moins", "pour cent", "et"),
    "es": _Words("coma", "punto", "arroba", "menos", "por ciento", "con"),
    "de": _Words("Komma", "Punkt", "at", "minus", "Prozent", "und"),
    "it": _Words("virgola", "punto", "chiocciola", "meno", "per cento", "e"),
    "pt": _Words("vírgula", "ponto", "arroba", "menos", "por cento", "e"),
    "nl": _Words("komma", "punt", "apenstaartje", "min", "procent", "en"),
    "ar": _Words("فاصلة", "نقطة", "آت", "سالب", "بالمئة", "و"),
    "hi": _Words("दशमलव", "डॉट", "एट", "माइनस", "प्रतिशत", "", "।"),
}

#: languages whose decimal separator is "," (and whose thousands separator is "." or a space)
_COMMA_DECIMAL = frozenset({"fr", "es", "de", "it", "pt", "nl"})
#: languages that read up to three decimals as a number (fr "virgule vingt-cinq"); the others,
#: and longer fractions, read them digit by digit (en "point two five")
_FRACTION_AS_NUMBER = frozenset({"fr", "es", "it", "pt", "nl", "ar"})

_MONTHS = {
    "de": "Januar Jänner Februar März April Mai Juni Juli August September Oktober November "
    "Dezember",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre "
    "noviembre diciembre",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
    "dicembre",
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro "
    "dezembro",
}
_DE_MONTH_NAMES = _MONTHS["de"].split()
_DE_MONTH_BY_NUMBER = [m for m in _DE_MONTH_NAMES if m != "Jänner"]


# --- 1. characters --------------------------------------------------------------------------------

_SPACES = frozenset("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                    "\u200a\u202f\u205f\u3000\t")
_LINE_BREAKS = frozenset("\r\x0b\x0c\x85\u2028\u2029")
_JOINERS = "\u200c\u200d"  # ZWNJ, ZWJ: meaningful inside Arabic and Devanagari words
_ARABIC_NUMBER_SIGNS = {"\u066b": ".", "\u066c": ",", "\u066a": "%"}
_TATWEEL = "\u0640"


def _is_compatibility_form(ch: str) -> bool:
    """Full-width ASCII, Latin ligatures and Arabic presentation forms: folded (NFKC)."""
    cp = ord(ch)
    return (0xFF01 <= cp <= 0xFF5E or 0xFB00 <= cp <= 0xFB06 or 0xFB50 <= cp <= 0xFDFF
            or 0xFE70 <= cp <= 0xFEFC)


@lru_cache(maxsize=4096)
def _fold_character(ch: str) -> str:
    if ch in _SPACES:
        return " "
    if ch in _LINE_BREAKS:
        return "\n"
    if ch in _ARABIC_NUMBER_SIGNS:
        return _ARABIC_NUMBER_SIGNS[ch]
    if ch == _TATWEEL or "\ufe00" <= ch <= "\ufe0f":  # tatweel, variation selectors
        return ""
    category = unicodedata.category(ch)
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    if category in ("Cc", "Cs", "Co", "Cn"):
        return ""
    if category == "Cf":
        return ch if ch in _JOINERS else ""
    if _is_compatibility_form(ch):
        return unicodedata.normalize("NFKC", ch)
    return ch


_NOT_PLAIN = re.compile(r"[^\n\x20-\x7e]")
_STRAY_JOINER = re.compile(f"[{_JOINERS}]")
_ORDINAL_SUPERSCRIPT = re.compile(r"(?<=\d)[\u1d49\u02b3\u1d48\u02e2\u1d57\u02b0\u207f\u1d52]+")


def _clean_characters(text: str) -> str:
    """NFC; spaces, line breaks and digits of every script made plain; invisible and control
    characters dropped; superscript ordinal suffixes (1ᵉʳ, 2ⁿᵈ) made plain."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    text = _NOT_PLAIN.sub(lambda m: _fold_character(m.group()), text)
    text = _STRAY_JOINER.sub(_keep_joiner, text)
    return _ORDINAL_SUPERSCRIPT.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)


def _keep_joiner(m: re.Match) -> str:
    """ZWJ/ZWNJ kept between letters and marks (Arabic, Devanagari), dropped elsewhere (emoji
    sequences, stray)."""
    before = m.string[m.start() - 1] if m.start() else " "
    after = m.string[m.end()] if m.end() < len(m.string) else " "
    word = unicodedata.category(before)[0] in "LM" and unicodedata.category(after)[0] in "LM"
    return m.group() if word else ""


# --- 2. pictographs -------------------------------------------------------------------------------

_PICTOGRAPH_CANDIDATE = re.compile(
    "[\U0001f000-\U0001faff\u2300-\u23ff\u2460-\u24ff\u25a0-\u27bf\u2b00-\u2bff"
    "\u00a9\u00ae\u2122\u3030\u303d\u3297\u3299\ufe00-\ufe0f\u20e3]"
)
_LEADING_PICTOGRAPHS = re.compile(r"^([ \t]*)([^\w\s]+)(?=[ \t])", re.M)


def _is_pictograph(ch: str) -> bool:
    if not _PICTOGRAPH_CANDIDATE.match(ch):
        return False
    cp = ord(ch)
    if 0x1F000 <= cp <= 0x1FAFF or 0xFE00 <= cp <= 0xFE0F or cp == 0x20E3:
        return True  # emoji planes (incl. skin tones, flags), variation selectors, keycap
    return unicodedata.category(ch) in ("So", "Sk") or ch in "\u3030\u303d"


def _bullet_for_pictographs(m: re.Match) -> str:
    return m.group(1) + "-" if all(map(_is_pictograph, m.group(2))) else m.group()


def _drop_pictographs(text: str) -> str:
    """Emoji and other pictographs dropped, with the selectors that build them (letters of every
    script are kept); pictographs that lead a line ("✅ Done") mark it as a list item."""
    text = _LEADING_PICTOGRAPHS.sub(_bullet_for_pictographs, text)
    return _PICTOGRAPH_CANDIDATE.sub(lambda m: "" if _is_pictograph(m.group()) else m.group(),
                                     text)


# --- 3. typography --------------------------------------------------------------------------------

_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_INNER_GUILLEMET_SPACE = re.compile(r"(?<=[«‹])\s+|\s+(?=[»›])")
_QUOTES = str.maketrans({
    **dict.fromkeys("“”„‟«»「」『』〝〞〟＂", '"'),
    **dict.fromkeys("‘’‚‛‹›", "'"),
    "\u2010": "-",
    "\u2011": "-",
})
_DASHES = "\u2012\u2013\u2014\u2015\u2e3a\u2e3b\ufe58"  # figure, en, em, bar, two- and three-em
_DASH_BETWEEN_DIGITS = re.compile(rf"(?<=\d)[{_DASHES}](?=\d)")
_DASH_RUN = rf"[-{_DASHES}]*(?:[{_DASHES}]|--)[-{_DASHES}]*"  # a long dash, or "--"
_LEADING_DASH = re.compile(rf"^([ \t]*){_DASH_RUN}[ \t]*", re.M)
_DASH = re.compile(rf"(?<!,)[ \t]*{_DASH_RUN}[ \t]*")  # not the ",--" of a price ("5,--")


def _fold_typography(text: str) -> str:
    """Decorative quotes folded to ``"`` and ``'`` (apostrophes inside words become ``'``),
    dashes and ``--`` to ``-`` (between digits) or a spaced `` - `` (a pause; a list bullet at
    the start of a line)."""
    text = _RULE.sub("", text)  # a markdown rule ("---"): a blank line, i.e. a paragraph break
    text = _INNER_GUILLEMET_SPACE.sub("", text)
    text = text.translate(_QUOTES)
    text = _DASH_BETWEEN_DIGITS.sub("-", text)
    text = _LEADING_DASH.sub(r"\1- ", text)  # a dialogue dash or a list bullet
    return _DASH.sub(" - ", text)


# --- 4. links -------------------------------------------------------------------------------------

_TLDS = ("com|org|net|edu|gov|io|ai|dev|app|info|eu|uk|us|fr|de|es|it|pt|nl|be|ch|at|br|in|"
         "ma|sa|ae|eg|tn|dz")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?i)(?<![a-z])(?:(?:https?|ftp)://|www\.)[^\s<>\"'()\[\]{}]*")
_BARE_DOMAIN = re.compile(
    r"(?<![\w@.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:" + _TLDS + r")(?![\w@-]|\.\w)"
    r"(?:/[^\s<>\"'()\[\]{}]*)?"
)
_SCHEME = re.compile(r"(?i)^(?:(?:https?|ftp)://)?(?:[^/@\s]*@)?(?:www\.)?")
_TRAILING_PUNCTUATION = ".,;:!?…"


def _speak_host(host: str, lang: str) -> str:
    labels = [label for label in host.lower().split(".") if any(c.isalnum() for c in label)]
    return f" {_WORDS[lang].dot} ".join(labels)


def _speak_url(m: re.Match, lang: str) -> str:
    url = m.group()
    tail = ""
    while url and url[-1] in _TRAILING_PUNCTUATION:
        url, tail = url[:-1], url[-1] + tail
    host = re.split(r"[/?#:]", _SCHEME.sub("", url), maxsplit=1)[0]
    return (_speak_host(host, lang) if host else "") + tail


def _speak_email(m: re.Match, lang: str) -> str:
    user, host = m.group().split("@", 1)
    return f"{_speak_host(user, lang)} {_WORDS[lang].at} {_speak_host(host, lang)}"


def _speak_links(text: str, lang: str) -> str:
    """E-mail addresses and URLs in a speakable form: "user dot name at example dot com"; a URL
    is read as its host without "www." (scheme, port, path, query and fragment are dropped)."""
    text = _AUTOLINK.sub(r"\1", text)
    text = _EMAIL.sub(lambda m: _speak_email(m, lang), text)
    text = _URL.sub(lambda m: _speak_url(m, lang), text)
    return _speak_bare_domains(text, lang)


def _speak_bare_domains(text: str, lang: str) -> str:
    return _BARE_DOMAIN.sub(lambda m: _speak_url(m, lang), text)


def _speak_new_links(text: str, lang: str) -> str:
    """Addresses that appeared once digits became words ("a@1.com" → "a@one.com")."""
    text = _EMAIL.sub(lambda m: _speak_email(m, lang), text)
    return _speak_bare_domains(text, lang)


# --- 5. markdown ----------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(?:```|~~~).*$", re.M)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^[ \t]*(?:[-*+•‣◦▪▸►]|\d{1,3}[.)])(?:[ \t]+(?:\[[ xX]\][ \t]+)?(.*))?$")
_DE_DATE_LINE = re.compile(r"^[ \t]*\d{1,2}\.[ \t]+(?:" + "|".join(_DE_MONTH_NAMES) + r")\b")
_QUOTE_MARKER = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^>\s]+|[^>\s@]+@[^>\s]+)>")
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)", re.S)
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])|"
                     r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])", re.S)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S)
#: emphasis markers left without a partner: "**", "__", "~~", and a "*" or "_" on one side of a
#: word (one between words or spaces, "5 * 3", "snake_case", is kept)
_DANGLING_DOUBLE_EMPHASIS = re.compile(r"\*\*+|__+|~~+")
_DANGLING_EMPHASIS = re.compile(r"(?<![\w*])\*(?=\w)|(?<=\w)\*(?![\w*])|(?<![\w_])_(?=\w)|"
                                r"(?<=\w)_(?![\w_])")
_FINAL_PUNCTUATION = re.compile(r"[.!?…:;؟।][\"'”’»)\]]*$")


def _end_sentence(line: str, lang: str) -> str:
    """The line with a sentence end added if it has no final punctuation."""
    line = line.rstrip()
    if line and not _FINAL_PUNCTUATION.search(line):
        line += _WORDS[lang].sentence_end
    return line


def _unwrap_markdown(text: str, lang: str) -> str:
    """Markdown reduced to its text: headings and list items become sentences, a blank line ends
    a sentence, and links, images, code and emphasis are unwrapped."""
    text = _FENCE.sub("", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _CODE.sub(lambda m: m.group(2).strip(), text)
    unwrapped = None
    while unwrapped != text:  # until nothing is left to unwrap: "*a _b* c_"
        unwrapped = text
        for pattern in (_BOLD, _ITALIC, _STRIKE):
            text = pattern.sub(lambda m: m.group(1) or m.group(2) or "", text)
    lines: list[str] = []  # the non-blank lines
    paragraph_break = False
    for line in text.split("\n"):
        if not line.strip():
            paragraph_break = bool(lines)
            continue
        if paragraph_break:
            lines[-1] = _end_sentence(lines[-1], lang)
            paragraph_break = False
        item = False
        while True:  # nested markers: "> - # x"
            unquoted = _QUOTE_MARKER.sub("", line)
            marker = _HEADING.match(unquoted) or _BULLET.match(unquoted)
            if lang == "de" and _DE_DATE_LINE.match(unquoted):
                marker = None
            if not marker and unquoted == line:
                break
            line, item = (marker.group(1) or "", True) if marker else (unquoted, item)
        lines.append(_end_sentence(line, lang) if item else line)
    return "\n".join(lines)


# --- 6a. number words -----------------------------------------------------------------------------

_NUM2WORDS_LOCK = threading.Lock()  # num2words' Arabic converter keeps state between calls
#: what num2words raises for a number it cannot say (too large, a language or mode it lacks)
_NUM2WORDS_ERRORS = (ArithmeticError, LookupError, ValueError, TypeError, NotImplementedError,
                     AssertionError)

_HI_0_99 = (
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
_HI_SCALES = ((10**7, "करोड़"), (10**5, "लाख"), (1000, "हज़ार"), (100, "सौ"))


def _hindi_cardinal(n: int) -> str:
    """Hindi cardinal in the Indian system (सौ, हज़ार, लाख, करोड़; crores repeat above)."""
    if n < 100:
        return _HI_0_99[n]
    words = []
    for value, name in _HI_SCALES:
        count, n = divmod(n, value)
        if count:
            words += [_hindi_cardinal(count), name]
    if n:
        words.append(_HI_0_99[n])
    return " ".join(words)


_AR_STANDALONE_DUAL = {"مئتا": "مئتان", "ألفا": "ألفان", "مليونا": "مليونان", "مليارا": "ملياران"}
_NL_COMPOUND_EEN = re.compile(r"(?<=\w)één")
_ES_COMPOUND_DECIMO = re.compile(r"décimo(?=\w)")


def _num2words(n: int, lang: str, to: str) -> str:
    with _NUM2WORDS_LOCK:
        words = num2words(n, lang=lang, to=to)
    if lang == "en":  # American style: "one thousand two hundred thirty-four"
        words = words.replace(",", "").replace(" and ", " ").replace("oh-", "oh ")
    elif lang == "ar":  # the conjunction is written joined to the next word
        words = words.replace(" و ", " و")
    elif lang == "nl":  # "honderdeen", not "honderdéén"
        words = _NL_COMPOUND_EEN.sub("een", words)
    elif lang == "es":  # "decimoprimero"
        words = _ES_COMPOUND_DECIMO.sub("decimo", words)
    return " ".join(words.split())


@lru_cache(maxsize=2048)
def _cardinal(n: int, lang: str, standalone: bool = True) -> str:
    """Words for a non-negative integer; digit by digit if ``num2words`` cannot say it (and, as
    a last resort, a digit it cannot say stays a digit)."""
    if lang == "hi":
        return _hindi_cardinal(n)
    try:
        words = _num2words(n, lang, "cardinal")
    except _NUM2WORDS_ERRORS:
        return _digitwise(str(n), lang) if n > 9 else str(n)
    if lang == "ar" and standalone:  # "ألفان", not the construct form "ألفا" (used before a noun)
        head, _, last = words.rpartition(" ")
        words = (head + " " if head else "") + _AR_STANDALONE_DUAL.get(last, last)
    return words


def _digitwise(digits: str, lang: str) -> str:
    return " ".join(_cardinal(int(d), lang) for d in digits if d.isdigit())


@lru_cache(maxsize=512)
def _ordinal(n: int, lang: str) -> str:
    try:
        return _num2words(n, lang, "ordinal")
    except _NUM2WORDS_ERRORS:
        return _cardinal(n, lang)


@lru_cache(maxsize=512)
def _year(n: int, lang: str) -> str:
    """A year as it is said: en "nineteen ninety-nine", de "neunzehnhundertneunundneunzig",
    hi "उन्नीस सौ निन्यानवे"; languages whose years are cardinals get the cardinal."""
    if lang == "hi":
        if 1100 <= n < 2000:
            rest = f" {_HI_0_99[n % 100]}" if n % 100 else ""
            return f"{_HI_0_99[n // 100]} सौ{rest}"
        return _hindi_cardinal(n)
    if lang in ("en", "de", "nl"):
        try:
            words = _num2words(n, lang, "year")
            return words.replace(" ", "") if lang == "nl" else words  # "negentienhonderd..."
        except _NUM2WORDS_ERRORS:
            pass
    return _cardinal(n, lang)


def _plain_integer(digits: str, lang: str, *, spell_long: bool = True) -> str:
    """Words for a run of digits: digit by digit with a leading zero or (``spell_long``) more
    than nine digits, else the cardinal."""
    if (len(digits) > 1 and digits[0] == "0") or (spell_long and len(digits) > 9):
        return _digitwise(digits, lang)
    return _cardinal(int(digits), lang)


def _fraction(digits: str, lang: str) -> str:
    if lang in _FRACTION_AS_NUMBER and len(digits) <= 3:
        rest = digits.lstrip("0")
        words = [_cardinal(0, lang)] * (len(digits) - len(rest))
        return " ".join(words + ([_cardinal(int(rest), lang)] if rest else []))
    return _digitwise(digits, lang)


# --- 6b. number syntax ----------------------------------------------------------------------------

_POINT_NUMBER = r"(?:\d{1,3}(?:,\d{2,3}(?!\d))*,\d{3}(?!\d)|\d+)(?:\.\d+)?"
_COMMA_NUMBER = (r"(?:(?:\d{1,3}(?:\.\d{3}(?!\d))+|\d{1,3}(?: \d{3}(?!\d))+)(?:,\d+)?"
                 r"|\d+(?:,\d+)?)")
_SIGN = r"(?:(?<![\w.,−-])[-−])"
_DOT_GROUPING = re.compile(r"\d{1,3}(?:\.\d{3})+")


def _number_pattern(lang: str) -> str:
    return _COMMA_NUMBER if lang in _COMMA_DECIMAL else _POINT_NUMBER


def _split_number(token: str, lang: str) -> tuple[str, str, bool]:
    """(integer digits, fraction digits, whether the integer was grouped) of a token matched by
    the language's number pattern."""
    decimal, group = (",", ". ") if lang in _COMMA_DECIMAL else (".", ",")
    whole, _, fraction = token.partition(decimal)
    digits = "".join(c for c in whole if c not in group)
    return digits, fraction, len(digits) != len(whole)


def _say_number(token: str, lang: str, *, negative: bool = False, spell_long: bool = False) -> str:
    whole, fraction, grouped = _split_number(token, lang)
    words = _plain_integer(whole, lang, spell_long=spell_long and not grouped)
    if fraction:
        words += f" {_WORDS[lang].point} {_fraction(fraction, lang)}"
    return f"{_WORDS[lang].minus} {words}" if negative else words


#: one-letter Arabic words written joined to the next word ("و٥" → "وخمسة"): and, with, for, so, as
_ARABIC_PROCLITICS = "وبلفك"


def _padded_unless_same(m: re.Match, words: str) -> str:
    return words if words == m.group() else _padded(m, words)


def _padded(m: re.Match, words: str) -> str:
    """``words`` set off by a space from letters or digits touching the match."""
    s, start, end = m.string, m.start(), m.end()
    arabic_prefix = start and s[start - 1] in _ARABIC_PROCLITICS and (
        start == 1 or not s[start - 2].isalnum())
    if start and (s[start - 1].isalnum() or s[start - 1] in ",;") and not arabic_prefix:
        words = " " + words
    if end < len(s) and s[end].isalnum():
        words += " "
    return words


# --- 6c. agreement of a number with its noun ------------------------------------------------------


def _before_noun(words: str, lang: str, gender: str) -> str:
    """A cardinal's form before a noun of ``gender`` ("m", "f" or "n"): de "ein Euro" / "eine
    Rupie", es "un dólar" / "veintiuna libras", fr "une livre", it "un euro" / "una sterlina",
    pt "uma libra" / "duas libras" / "duzentas libras"."""
    if lang == "de":
        if words.endswith("eins"):
            return words[:-1] + ("e" if gender == "f" else "")
    elif lang == "es":
        if gender == "f":
            words = re.sub(r"uno$", "una", words)
            return words if "mill" in words else words.replace("ientos", "ientas")
        return re.sub(r"\buno$", "un", words).replace("veintiuno", "veintiún")
    elif lang == "fr":
        if gender == "f":
            return re.sub(r"\bun$", "une", words)
    elif lang == "it":
        if words == "uno":
            return "una" if gender == "f" else "un"
    elif lang == "pt" and gender == "f":
        words = re.sub(r"\bum$", "uma", words)
        words = re.sub(r"\bdois$", "duas", words)
        return words if "milh" in words or "bilh" in words else words.replace("entos", "entas")
    return words


#: a cardinal ending in a "million" noun takes "de"/"di" before the counted noun (fr "un
#: million d'euros", es "dos millones de dólares", it "un milione di euro")
_OF_AFTER_MILLION = {
    "fr": (re.compile(r"\b(?:millions?|milliards?|billions?)$"), "de"),
    "es": (re.compile(r"\b(?:millón|millones|billón|billones)$"), "de"),
    "it": (re.compile(r"\b(?:milion[ei]|miliard[oi]|bilion[ei])$"), "di"),
    "pt": (re.compile(r"\b(?:milhão|milhões|bilião|biliões|bilhão|bilhões)$"), "de"),
}


def _count_phrase(number_words: str, noun: str, lang: str) -> str:
    of = _OF_AFTER_MILLION.get(lang)
    if of and of[0].search(number_words):
        if of[1] == "de" and lang == "fr" and noun[:1] in "aeiouyéèh":
            return f"{number_words} d'{noun}"
        return f"{number_words} {of[1]} {noun}"
    return f"{number_words} {noun}"


# --- 6d. currency ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    singular: str
    plural: str
    gender: str = "m"


@dataclass(frozen=True)
class _Currency:
    unit: _Unit
    subunit: _Unit | None = None


def _c(sg: str, pl: str, g: str = "m", sub: tuple[str, ...] | None = None) -> _Currency:
    return _Currency(_Unit(sg, pl, g), _Unit(*sub) if sub else None)


_CURRENCY_SYMBOLS = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR",
                     "Rs": "INR", "Rs.": "INR", "रु": "INR", "रु.": "INR"}

_CURRENCIES = {
    "en": {"USD": _c("dollar", "dollars", sub=("cent", "cents")),
           "EUR": _c("euro", "euros", sub=("cent", "cents")),
           "GBP": _c("pound", "pounds", sub=("penny", "pence")),
           "JPY": _c("yen", "yen"),
           "INR": _c("rupee", "rupees", sub=("paisa", "paise"))},
    "fr": {"USD": _c("dollar", "dollars", sub=("cent", "cents")),
           "EUR": _c("euro", "euros", sub=("centime", "centimes")),
           "GBP": _c("livre", "livres", "f", sub=("penny", "pence")),
           "JPY": _c("yen", "yens"),
           "INR": _c("roupie", "roupies", "f", sub=("paisa", "paisas"))},
    "es": {"USD": _c("dólar", "dólares", sub=("centavo", "centavos")),
           "EUR": _c("euro", "euros", sub=("céntimo", "céntimos")),
           "GBP": _c("libra", "libras", "f", sub=("penique", "peniques")),
           "JPY": _c("yen", "yenes"),
           "INR": _c("rupia", "rupias", "f", sub=("paisa", "paisas", "f"))},
    "de": {"USD": _c("Dollar", "Dollar", sub=("Cent", "Cent")),
           "EUR": _c("Euro", "Euro", sub=("Cent", "Cent")),
           "GBP": _c("Pfund", "Pfund", "n", sub=("Penny", "Pence")),
           "JPY": _c("Yen", "Yen"),
           "INR": _c("Rupie", "Rupien", "f", sub=("Paisa", "Paise"))},
    "it": {"USD": _c("dollaro", "dollari", sub=("centesimo", "centesimi")),
           "EUR": _c("euro", "euro", sub=("centesimo", "centesimi")),
           "GBP": _c("sterlina", "sterline", "f", sub=("penny", "pence")),
           "JPY": _c("yen", "yen"),
           "INR": _c("rupia", "rupie", "f", sub=("paisa", "paise"))},
    "pt": {"USD": _c("dólar", "dólares", sub=("cêntimo", "cêntimos")),
           "EUR": _c("euro", "euros", sub=("cêntimo", "cêntimos")),
           "GBP": _c("libra", "libras", "f", sub=("penny", "pence")),
           "JPY": _c("iene", "ienes"),
           "INR": _c("rupia", "rupias", "f", sub=("paisa", "paisas"))},
    "nl": {"USD": _c("dollar", "dollar", sub=("cent", "cent")),
           "EUR": _c("euro", "euro", sub=("cent", "cent")),
           "GBP": _c("pond", "pond", sub=("penny", "pence")),
           "JPY": _c("yen", "yen"),
           "INR": _c("roepie", "roepie", sub=("paisa", "paise"))},
    "hi": {"USD": _c("डॉलर", "डॉलर", sub=("सेंट", "सेंट")),
           "EUR": _c("यूरो", "यूरो", sub=("सेंट", "सेंट")),
           "GBP": _c("पाउंड", "पाउंड", sub=("पेनी", "पेंस")),
           "JPY": _c("येन", "येन"),
           "INR": _c("रुपया", "रुपये", sub=("पैसा", "पैसे"))},
}

#: Arabic counted nouns: (singular, dual, plural for 3-10, accusative singular for 11-99), and
#: whether the noun is feminine
_AR_CURRENCIES = {
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
_AR_FEMININE_UNITS = {"ثلاثة": "ثلاث", "أربعة": "أربع", "خمسة": "خمس", "ستة": "ست",
                      "سبعة": "سبع", "ثمانية": "ثماني", "تسعة": "تسع", "عشرة": "عشر"}

#: scale words that may follow an amount ("$5 million"), and the gender of the scale noun
_SCALE_WORDS = {
    "en": ("thousand|million|billion|trillion", "m"),
    "fr": ("mille|millions?|milliards?", "m"),
    "es": ("mil|millón|millones", "m"),
    "de": (r"Tausend|Millionen|Million|Milliarden|Milliarde|Mio\.|Mrd\.", "f"),
    "it": ("mila|mille|milion[ei]|miliard[oi]", "m"),
    "pt": ("mil|milhão|milhões|bilhão|bilhões", "m"),
    "nl": ("duizend|miljoen|miljard", "m"),
    "ar": ("ألف|مليون|مليار", "m"),
    "hi": ("हज़ार|हजार|लाख|करोड़", "m"),
}
_DE_SCALE_ABBREVIATIONS = {"Mio.": ("Million", "Millionen"), "Mrd.": ("Milliarde", "Milliarden")}


def _arabic_count(n: int, forms: tuple[str, str, str, str], feminine: bool) -> str:
    """An Arabic number with its counted noun: 1 and 2 by the noun ("دولار واحد", "دولاران"),
    3-10 with the plural, 11-99 with the accusative singular, hundreds with the singular."""
    singular, dual, plural, accusative = forms
    if n == 1:
        return f"{singular} {'واحدة' if feminine else 'واحد'}"
    if n == 2:
        return dual
    words = _cardinal(n, "ar", standalone=False)
    rest = n % 100
    if feminine and 3 <= rest <= 10:
        head, _, last = words.rpartition(" و")
        last = _AR_FEMININE_UNITS.get(last, last)
        words = f"{head} و{last}" if head else last
    noun = plural if 3 <= rest <= 10 else accusative if 11 <= rest <= 99 else singular
    return f"{words} {noun}"


def _count(n: int, unit: _Unit, lang: str) -> str:
    noun = unit.singular if n == 1 else unit.plural
    return _count_phrase(_before_noun(_cardinal(n, lang), lang, unit.gender), noun, lang)


def _say_money(token: str, code: str, lang: str, *, negative: bool, scale: str | None) -> str:
    whole, fraction, _ = _split_number(token, lang)
    n = int(whole)
    minus = f"{_WORDS[lang].minus} " if negative else ""
    if lang == "ar":
        (unit_forms, unit_fem), sub = _AR_CURRENCIES[code]
        if scale or (fraction and (len(fraction) != 2 or sub is None)):
            amount = _say_number(token, lang) + (f" {scale}" if scale else "")
            return f"{minus}{amount} {unit_forms[0]}"
        parts = []
        cents = int(fraction) if fraction else 0
        if n or not cents:
            parts.append(_arabic_count(n, unit_forms, unit_fem))
        if cents:
            parts.append(_arabic_count(cents, *sub))
        return minus + " و".join(parts)
    currency = _CURRENCIES[lang][code]
    unit, sub = currency.unit, currency.subunit
    if scale:
        scale_noun, scale_gender = scale, _SCALE_WORDS[lang][1]
        if scale in _DE_SCALE_ABBREVIATIONS:
            one, many = _DE_SCALE_ABBREVIATIONS[scale]
            scale_noun = one if n == 1 and not fraction else many
        amount = _say_number(token, lang)
        if not fraction:
            amount = _before_noun(amount, lang, scale_gender)
        return minus + _count_phrase(f"{amount} {scale_noun}", unit.plural, lang)
    if fraction and len(fraction) == 2 and sub is not None:
        cents = int(fraction)
        parts = []
        if n or not cents:
            parts.append(_count(n, unit, lang))
        if cents:
            parts.append(_count(cents, sub, lang))
        joiner = f" {_WORDS[lang].money_and} " if _WORDS[lang].money_and else " "
        return minus + joiner.join(parts)
    if fraction:
        return minus + _count_phrase(_say_number(token, lang), unit.plural, lang)
    return minus + _count(n, unit, lang)


# --- 6e. times ------------------------------------------------------------------------------------


def _say_time(hours: int, minutes: int, lang: str) -> str:
    """A 24-hour HH:MM time as it is read in each language."""
    h, m = _cardinal(hours, lang), _cardinal(minutes, lang)
    if lang == "en":
        if minutes == 0:
            return f"{h} o'clock" if 1 <= hours <= 12 else f"{h} hundred"
        return f"{h} oh {m}" if minutes < 10 else f"{h} {m}"
    if lang == "fr":
        h = _before_noun(h, lang, "f")
        hour_word = "heure" if hours <= 1 else "heures"
        return f"{h} {hour_word}" + (f" {_before_noun(m, lang, 'f')}" if minutes else "")
    if lang == "de":
        return f"{_before_noun(h, lang, 'n')} Uhr" + (f" {m}" if minutes else "")
    if lang in ("es", "it"):
        h = _before_noun(h, lang, "f") if lang == "es" else ("una" if hours == 1 else h)
        if minutes == 0:
            return f"{h} en punto" if lang == "es" else f"{h} in punto"
        return f"{h} {'y' if lang == 'es' else 'e'} {m}"
    if lang == "pt":
        h = _before_noun(h, lang, "f")
        if minutes == 0:
            return f"{h} {'hora' if hours == 1 else 'horas'}"
        return f"{h} e {m}"
    if lang == "nl":
        return f"{h} uur" + (f" {m}" if minutes else "")
    if lang == "ar":  # "الساعة" is usually written before the time already
        return h + (f" و{m}" if minutes else "")
    return f"{h} बजकर {m} मिनट" if minutes else f"{h} बजे"  # hi


_TIME = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3]):([0-5]\d)(?![\d:]|[.,]\d)")
_TIME_FR = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3]) ?h ?([0-5]\d)?(?!\w)")
_TIME_DE = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3])(?:[:.]([0-5]\d))? ?Uhr\b")
_TIME_HI = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3])(?::([0-5]\d))? ?बजे(?![\u0900-\u097f])")


# --- 6f. ordinals ---------------------------------------------------------------------------------

_ORDINALS = {
    "en": re.compile(r"(?<![\d.,])(\d+)(st|nd|rd|th)\b", re.I),
    "fr": re.compile(r"(?<![\d.,])(\d+)(ers|er|res|re|ères|ère|èmes|ème|emes|eme|es|e|è"
                     r"|ndes|nde|nds|nd)\b"),
    "es": re.compile(r"(?<![\d.,])(\d+)(?:\.?([ºª])|\.?(er)\b|°(?= de (?:"
                     + "|".join(_MONTHS["es"].split()) + r")\b))"),
    "it": re.compile(r"(?<![\d.,])(\d+)(?:\.?([ºª])|°(?= (?:"
                     + "|".join(_MONTHS["it"].split()) + r")\b))"),
    "pt": re.compile(r"(?<![\d.,])(\d+)(?:\.?([ºª])|°(?= de (?:"
                     + "|".join(_MONTHS["pt"].split()) + r")\b))"),
    "nl": re.compile(r"(?<![\d.,])(\d+)(ste|de|e)\b"),
    "de": re.compile(r"(?<![\d.,])(\d+)\.(?=[ \t]+\w)"),
    "hi": re.compile(r"(?<![\d.,])(\d+)(वाँ|वां|वें|वीं|वी|वे|वा|ला|ली|ले|रा|री|रे|था|थी|थे|ठा|ठी"
                     r"|ठे)(?![\u0900-\u097f])"),
}
#: German words after which an ordinal takes the weak "-en" ending (dative, "den", genitive)
_DE_EN_ENDING = frozenset("am im vom zum zur beim dem den des einem einen eines".split())
_DE_E_ENDING = frozenset("der die das".split())
_DE_NEXT_WORD = re.compile(r"\s*(\w+)")
_DE_CLAUSE_START = re.compile(r"(?:^|[,;(])[ \t]*$")
_DE_PREVIOUS_WORD = re.compile(r"(\w+)\W*$")
_DE_COORDINATED = re.compile(r"(\w+)\s+\d+\.\s+(?:und|oder|bis)\s*$")
_DE_AFTER_ORDINAL = re.compile(r"\d\.\s+(?:und|oder|bis)\s*$")


def _german_ending(before: str, month_follows: bool) -> str:
    """The ending of a German ordinal from the word before it: "am 3." → "dritten", "der 3." →
    "dritte", a bare date "3. Oktober" → "dritter", otherwise the base form "dritte"."""
    coordinated = _DE_COORDINATED.search(before)
    previous = _DE_PREVIOUS_WORD.search(before)
    word = (coordinated or previous).group(1).lower() if (coordinated or previous) else ""
    if word in _DE_EN_ENDING:
        return "n"
    if word in _DE_E_ENDING or not month_follows:
        return ""
    return "r"


def _feminine_ordinal(words: str) -> str:
    return re.sub(r"o\b", "a", words)


def _say_german_ordinal(m: re.Match) -> str:
    """A number and a period is an ordinal before a lowercase word or a month name ("am 3.
    Oktober", "die 2. und"), after an article or contracted preposition ("im 19. Jahrhundert"),
    first in a clause ("…, 2. Auflage") or after another ordinal ("2. und 3. Klasse");
    otherwise it is a number that ends a sentence ("auf 25. Die …") and is left as it is."""
    before, after = m.string[:m.start()], _DE_NEXT_WORD.match(m.string, m.end())
    next_word = after.group(1) if after else ""
    month_follows = next_word in _DE_MONTH_NAMES
    previous = _DE_PREVIOUS_WORD.search(before)
    after_article = previous and previous.group(1).lower() in _DE_EN_ENDING | _DE_E_ENDING
    clause_start = _DE_CLAUSE_START.search(before)
    coordinated = _DE_AFTER_ORDINAL.search(before)
    if not (next_word[:1].islower() or month_follows or after_article or clause_start
            or coordinated):
        return m.group()
    return _ordinal(int(m.group(1)), "de") + _german_ending(before, month_follows)


#: Hindi ordinals irregular below seven (पहला, दूसरा, तीसरा, चौथा, छठा, written 1ला, 2रा, ...);
#: the others are the cardinal with the written suffix (5वाँ → पाँचवाँ, 21वीं → इक्कीसवीं)
_HI_IRREGULAR_ORDINALS = {1: "पहल", 2: "दूसर", 3: "तीसर", 4: "चौथ", 6: "छठ"}


def _say_hindi_ordinal(m: re.Match) -> str:
    n, suffix = int(m.group(1)), m.group(2)
    if n in _HI_IRREGULAR_ORDINALS:
        vowel = next(c for c in suffix if c in "ाीे")
        return _HI_IRREGULAR_ORDINALS[n] + vowel
    if not suffix.startswith("व"):
        return m.group()  # "5ला" is no ordinal: read as number and word
    return _hindi_cardinal(n) + suffix


def _say_ordinal(m: re.Match, lang: str) -> str:
    if lang == "de":
        return _say_german_ordinal(m)
    if lang == "hi":
        return _say_hindi_ordinal(m)
    n = int(m.group(1))
    suffix = m.group(2) or ""
    if lang == "fr":
        plural = "s" if suffix.endswith("s") else ""
        if n == 1 and suffix.startswith(("r", "è")) and suffix not in ("ème", "èmes", "è"):
            return "première" + plural
        if n == 2 and suffix.startswith("nd"):
            return ("seconde" if "e" in suffix else "second") + plural
        if n == 1:
            return "premier" + plural
        return _ordinal(n, lang) + plural
    if lang in ("es", "it", "pt"):
        words = _ordinal(n, lang)
        if lang == "es" and m.group(3):  # "1.er piso" → "primer"
            return re.sub(r"(primer|tercer)o$", r"\1", words)
        return _feminine_ordinal(words) if suffix == "ª" else words
    return _ordinal(n, lang)


_DE_DATE = re.compile(r"(?<![\d.,])(\d{1,2})\.(\d{1,2})\.(\d{4})(?![\d]|[.,]\d)")


def _say_german_date(m: re.Match) -> str:
    day, month, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return m.group()
    ending = _german_ending(m.string[:m.start()], month_follows=True)
    return f"{_ordinal(day, 'de')}{ending} {_DE_MONTH_BY_NUMBER[month - 1]} {_year(year, 'de')}"


# --- 6g. years, decades, dotted numbers -----------------------------------------------------------

_YEAR = re.compile(r"(?<![\d.,])(1\d{3}|20\d{2})(?![\d]|[.,]\d)")
_DECADE_EN = re.compile(r"(?<![\d.,])'?(\d{2}|1\d{3}|20\d{2})'?s\b")
_DOTTED = re.compile(r"(?<![\d.,])\d+(?:\.\d+){2,}(?![\d]|[.,]\d)")
_DOTTED_COMMA_DECIMAL = re.compile(r"(?<![\d.,])\d+(?:\.\d+)+(?![\d]|[.,]\d)")


def _pluralize_en(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _say_decade(m: re.Match) -> str:
    digits = m.group(1)
    if digits[-1] != "0":
        return m.group()
    n = int(digits)
    return _padded(m, _pluralize_en(_year(n, "en") if n >= 1000 else _cardinal(n, "en")))


def _after_minus_sign(m: re.Match) -> bool:
    s, i = m.string, m.start()
    return i > 0 and s[i - 1] in "-−" and (i == 1 or not s[i - 2].isalnum())


def _say_year(m: re.Match, lang: str) -> str:
    if _after_minus_sign(m):
        return m.group()
    return _padded(m, _year(int(m.group(1)), lang))


def _say_dotted(m: re.Match, lang: str) -> str:
    if lang in _COMMA_DECIMAL and _DOT_GROUPING.fullmatch(m.group()):
        return m.group()  # a thousands grouping: read as one number later
    parts = [_plain_integer(part, lang) for part in m.group().split(".")]
    return _padded(m, f" {_WORDS[lang].dot} ".join(parts))


# --- 6h. ISO dates, phone numbers, degrees, fractions ---------------------------------------------

_MONTH_NAMES = {
    "en": "January February March April May June July August September October November "
          "December",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre "
          "diciembre",
    "de": " ".join(_DE_MONTH_BY_NUMBER),
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
          "dicembre",
    "pt": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro "
          "dezembro",
    "nl": "januari februari maart april mei juni juli augustus september oktober november "
          "december",
    "ar": "يناير فبراير مارس أبريل مايو يونيو يوليو أغسطس سبتمبر أكتوبر نوفمبر ديسمبر",
    "hi": "जनवरी फ़रवरी मार्च अप्रैल मई जून जुलाई अगस्त सितंबर अक्टूबर नवंबर दिसंबर",
}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ISO_DATE = re.compile(r"(?<![\w.,/+-])(\d{4})-(\d{2})-(\d{2})(?![\w-]|[.,/]\d)")


def _say_iso_date(m: re.Match, lang: str) -> str:
    """``YYYY-MM-DD`` as a date: en "May first, twenty twenty-four", fr "premier mai deux mille
    vingt-quatre", de "erster Mai zweitausendvierundzwanzig", es "uno de mayo de dos mil
    veinticuatro"; an impossible month or day leaves the text to the other rules."""
    year, month, day = (int(g) for g in m.groups())
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return m.group()
    name, y = _MONTH_NAMES[lang].split()[month - 1], _year(year, lang)
    if lang == "en":
        words = f"{name} {_ordinal(day, lang)}, {y}"
    elif lang == "de":
        ending = _german_ending(m.string[:m.start()], month_follows=True)
        words = f"{_ordinal(day, lang)}{ending} {name} {y}"
    elif lang in ("fr", "it"):
        d = ("premier" if lang == "fr" else "primo") if day == 1 else _cardinal(day, lang)
        words = f"{d} {name} {y}"
    elif lang in ("es", "pt"):
        d = "primeiro" if lang == "pt" and day == 1 else _cardinal(day, lang)
        words = f"{d} de {name} de {y}"
    else:  # nl, ar, hi: cardinal day, month, year
        words = f"{_cardinal(day, lang)} {name} {y}"
    return _padded(m, words)


_PLUS = {"en": "plus", "fr": "plus", "es": "más", "de": "plus", "it": "più", "pt": "mais",
         "nl": "plus", "ar": "زائد", "hi": "प्लस"}
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


def _say_phone(m: re.Match, lang: str) -> str:
    groups = re.findall(r"\d+", m.group())
    if not _is_phone(groups, m.group()):
        return m.group()
    words = ("، " if lang == "ar" else ", ").join(_digitwise(g, lang) for g in groups)
    return _padded(m, f"{_PLUS[lang]} {words}" if m.group().startswith("+") else words)


#: degree nouns (one, several), and the scales
_DEGREES = {
    "en": ("degree", "degrees", "Celsius", "Fahrenheit"),
    "fr": ("degré", "degrés", "Celsius", "Fahrenheit"),
    "es": ("grado", "grados", "Celsius", "Fahrenheit"),
    "de": ("Grad", "Grad", "Celsius", "Fahrenheit"),
    "it": ("grado", "gradi", "Celsius", "Fahrenheit"),
    "pt": ("grau", "graus", "Celsius", "Fahrenheit"),
    "nl": ("graad", "graden", "Celsius", "Fahrenheit"),
    "ar": ("درجة", "درجة", "مئوية", "فهرنهايت"),
    "hi": ("डिग्री", "डिग्री", "सेल्सियस", "फ़ारेनहाइट"),
}
_AR_DEGREE = ("درجة", "درجتان", "درجات", "درجة")


def _say_degrees(m: re.Match, lang: str) -> str:
    one, many, celsius, fahrenheit = _DEGREES[lang]
    token, negative = m.group("num"), bool(m.group("sign"))
    whole, fraction, _ = _split_number(token, lang)
    symbol = (m.group("scale") or "").upper() or {"℃": "C", "℉": "F"}.get(m.group("symbol"), "")
    scale = {"C": celsius, "F": fahrenheit}.get(symbol, "")
    minus = f"{_WORDS[lang].minus} " if negative else ""
    if lang == "ar" and not fraction:
        words = minus + _arabic_count(int(whole), _AR_DEGREE, True)
    else:
        amount = _say_number(token, lang)
        if not fraction:
            amount = _before_noun(amount, lang, "n" if lang == "de" else "m")
        words = f"{minus}{amount} {one if token == '1' else many}"
    return _padded(m, f"{words} {scale}" if scale else words)


#: "and" for "&" between words
_AND = {"en": "and", "fr": "et", "es": "y", "de": "und", "it": "e", "pt": "e", "nl": "en",
        "ar": "و", "hi": "और"}
_AMPERSAND = re.compile(r"(?<=[^\W\d_])[ \t]*&[ \t]*(?=[^\W\d_])")
_ARABIC_LETTER = re.compile(r"[\u0600-\u06ff]")


def _speak_ampersands(text: str, lang: str) -> str:
    """``&`` between words read as the language's "and" (es "e" before an "i" sound; ar "و"
    written joined to an Arabic word)."""

    def say(m: re.Match) -> str:
        after = m.string[m.end():m.end() + 3].lower()
        if lang == "es" and (after[:1] in "ií" or after[:2] in ("hi", "hí")) \
                and not after.startswith(("hie", "hia", "hio")):
            return " e "
        if lang == "ar" and _ARABIC_LETTER.match(after):
            return " و"
        return f" {_AND[lang]} "

    return _AMPERSAND.sub(say, text)


#: the word for "/" between numbers
_SLASH = {"en": "slash", "fr": "barre", "es": "barra", "de": "Schrägstrich", "it": "barra",
          "pt": "barra", "nl": "schuine streep", "ar": "شرطة مائلة", "hi": "स्लैश"}
#: named simple fractions: (numerator, denominator) → words (en builds the others up to tenths)
_FRACTION_NAMES = {
    "fr": {(1, 2): "un demi", (1, 3): "un tiers", (2, 3): "deux tiers", (1, 4): "un quart",
           (3, 4): "trois quarts"},
    "es": {(1, 2): "un medio", (1, 3): "un tercio", (2, 3): "dos tercios", (1, 4): "un cuarto",
           (3, 4): "tres cuartos"},
    "de": {(1, 2): "ein halb", (1, 3): "ein Drittel", (2, 3): "zwei Drittel",
           (1, 4): "ein Viertel", (3, 4): "drei Viertel"},
    "it": {(1, 2): "un mezzo", (1, 3): "un terzo", (2, 3): "due terzi", (1, 4): "un quarto",
           (3, 4): "tre quarti"},
    "pt": {(1, 2): "um meio", (1, 3): "um terço", (2, 3): "dois terços", (1, 4): "um quarto",
           (3, 4): "três quartos"},
    "nl": {(1, 2): "een half", (1, 3): "een derde", (2, 3): "twee derde", (1, 4): "een kwart",
           (3, 4): "drie kwart"},
    "ar": {(1, 2): "نصف", (1, 3): "ثلث", (2, 3): "ثلثان", (1, 4): "ربع", (3, 4): "ثلاثة أرباع"},
    "hi": {(1, 2): "आधा", (1, 3): "एक तिहाई", (2, 3): "दो तिहाई", (1, 4): "एक चौथाई",
           (3, 4): "तीन चौथाई"},
}
_SLASHED = re.compile(r"(?<![\w.,/-])\d+(?:/\d+)+(?![\w/]|[.,]\d)")


def _english_fraction(num: int, den: int) -> str | None:
    if not (0 < num < den <= 10):
        return None
    name = {2: "half", 4: "quarter"}.get(den) or _ordinal(den, "en")
    if num > 1:
        name = "halves" if den == 2 else name + "s"
    return f"{_cardinal(num, 'en')} {name}"


def _say_slashed(m: re.Match, lang: str) -> str:
    """"a/b" a named simple fraction (en "three quarters", "five eighths"; fr "un demi", de "drei
    Viertel": halves, thirds, quarters), otherwise the digit groups with the word for "slash"
    between them, read by the later rules ("01/05/2024", "24/7")."""
    parts = m.group().split("/")
    if len(parts) == 2 and parts[0][0] != "0" and parts[1][0] != "0":
        num, den = int(parts[0]), int(parts[1])
        words = (_english_fraction(num, den) if lang == "en"
                 else _FRACTION_NAMES[lang].get((num, den)))
        if words:
            return _padded(m, words)
    return _padded(m, f" {_SLASH[lang]} ".join(parts))


# --- 6. numbers, all together ---------------------------------------------------------------------


@dataclass(frozen=True)
class _NumberRules:
    """The compiled number patterns of one language."""

    currency_before: re.Pattern
    currency_after: re.Pattern
    percent: re.Pattern
    degrees: re.Pattern
    number: re.Pattern


_DIGITS = re.compile(r"\d+")
_SYMBOL = r"(?:US\$|(?<![\w\u0900-\u097f])(?:Rs|रु)\.?(?= ?[-−]?\d)|[$€£¥₹])"


@lru_cache(maxsize=None)
def _number_rules(lang: str) -> _NumberRules:
    num = _number_pattern(lang)
    scale = _SCALE_WORDS[lang][0]
    return _NumberRules(
        currency_before=re.compile(
            rf"(?P<sign>{_SIGN})?(?P<sym>{_SYMBOL}) ?(?P<sign2>[-−])?(?P<num>{num})"
            rf"(?:,-{{1,2}}(?![\w-]))?(?: (?P<scale>{scale})(?!\w))?(?!\d)"
        ),
        currency_after=re.compile(
            rf"(?P<sign>{_SIGN})?(?<!\d)(?P<num>{num})(?:,-{{1,2}})?(?: (?P<scale>{scale}))? ?"
            rf"(?P<sym>{_SYMBOL})(?!\w)"
        ),
        percent=re.compile(rf"(?P<sign>{_SIGN})?(?<!\d)(?P<num>{num}) ?[%٪]"),
        degrees=re.compile(rf"(?P<sign>{_SIGN})?(?<!\d)(?P<num>{num}) ?(?:°(?: ?(?P<scale>[CF])"
                           rf"(?!\w))?|(?P<symbol>[℃℉]))"),
        number=re.compile(rf"(?P<sign>{_SIGN})?(?<!\d)(?P<num>{num})"),
    )


def _safely(say, lang: str):
    """A replacement callback that falls back to reading the digits if anything goes wrong."""

    def replace(m: re.Match) -> str:
        try:
            return say(m)
        except Exception:  # never fail on odd input: read what digits there are
            return _padded(m, _digitwise(m.group(), lang) or m.group())

    return replace


def _expand_numbers(text: str, lang: str) -> str:
    """Times, amounts, percentages, ordinals, dates, years and other numbers as words."""
    rules = _number_rules(lang)

    def sub(pattern: re.Pattern, say, s: str) -> str:
        return pattern.sub(_safely(say, lang), s)

    def time(m: re.Match) -> str:
        return _padded(m, _say_time(int(m.group(1)), int(m.group(2) or 0), lang))

    def money(m: re.Match) -> str:
        negative = bool(m.group("sign") or m.groupdict().get("sign2"))
        code = _CURRENCY_SYMBOLS[m.group("sym")]
        words = _say_money(m.group("num"), code, lang, negative=negative, scale=m.group("scale"))
        return _padded(m, words)

    def percent(m: re.Match) -> str:
        amount = _say_number(m.group("num"), lang, negative=bool(m.group("sign")))
        if lang == "de" and amount.endswith("eins"):
            amount = amount[:-1]  # "ein Prozent"
        return _padded(m, f"{amount} {_WORDS[lang].percent}")

    def number(m: re.Match) -> str:
        words = _say_number(m.group("num"), lang, negative=bool(m.group("sign")), spell_long=True)
        return _padded(m, words)

    text = sub(_ISO_DATE, lambda m: _say_iso_date(m, lang), text)
    text = sub(_PHONE, lambda m: _say_phone(m, lang), text)
    if lang == "de":
        text = sub(_TIME_DE, time, text)
        text = sub(_DE_DATE, _say_german_date, text)
    elif lang == "fr":
        text = sub(_TIME_FR, time, text)
    elif lang == "hi":
        text = sub(_TIME_HI, time, text)
    text = sub(_TIME, time, text)
    text = sub(rules.currency_before, money, text)
    text = sub(rules.currency_after, money, text)
    text = sub(rules.percent, percent, text)
    if lang in _ORDINALS:
        text = sub(_ORDINALS[lang], lambda m: _padded_unless_same(m, _say_ordinal(m, lang)), text)
    text = sub(rules.degrees, lambda m: _say_degrees(m, lang), text)
    text = sub(_SLASHED, lambda m: _say_slashed(m, lang), text)
    if lang == "en":
        text = sub(_DECADE_EN, _say_decade, text)
    text = sub(_YEAR, lambda m: _say_year(m, lang), text)
    dotted = _DOTTED_COMMA_DECIMAL if lang in _COMMA_DECIMAL else _DOTTED
    text = sub(dotted, lambda m: _say_dotted(m, lang), text)
    text = sub(rules.number, number, text)
    return _DIGITS.sub(lambda m: _padded(m, _plain_integer(m.group(), lang)), text)


# --- 7. punctuation and whitespace ----------------------------------------------------------------

_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[,.!?;:…؟،؛।](?!\w))")
_QUESTION_EXCLAMATION = re.compile(r"[!?؟]{2,}")
_ELLIPSIS = re.compile(r"(?:\.{3,}|…)[.…]*|\.+…[.…]*")
_REPEATED = re.compile(r"([.,;:،؛।])\1+")
_WHITESPACE = re.compile(r"\s+")
#: list or heading markers that other rewriting left at the start (pictographs dropped before
#: them, say): dropped, so that the text reads the same when normalised again
_LEADING_MARKERS = re.compile(r"^(?:[-*+•#>]+(?: |$))+")


def _one_question_exclamation(m: re.Match) -> str:
    run = m.group()
    first = run[0]
    other = next((c for c in run if (c == "!") != (first == "!")), "")
    return first + other


def _tidy_punctuation(text: str) -> str:
    """Emphasis markers left over from markdown dropped; no space before punctuation; "!!!" →
    "!", "?!?!" → "?!", "...." / "…." → "…", ",," → ","."""
    text = _DANGLING_DOUBLE_EMPHASIS.sub("", text)
    dangling = None
    while dangling != text:
        dangling, text = text, _DANGLING_EMPHASIS.sub("", text)
    text = _SPACE_BEFORE_PUNCTUATION.sub("", text)
    text = _QUESTION_EXCLAMATION.sub(_one_question_exclamation, text)
    text = _ELLIPSIS.sub("…", text)
    return _REPEATED.sub(r"\1", text)
