"""The text normaliser: each rule in each language, the fallbacks where num2words cannot help,
and the promises (no exception on odd input, no digit left, idempotence)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import random
import unicodedata

import pytest

from voxtral_tts import normalize
from voxtral_tts.errors import TextError
from voxtral_tts.normalize import LANGUAGES, Language, normalize_text, number_words, registry
from voxtral_tts.normalize.language import currency


def _cases(table: dict[str, list[tuple[str, str]]]) -> list:
    return [pytest.param(lang, text, want, id=f"{lang}:{text}")
            for lang, rows in table.items() for text, want in rows]


# --- the language argument and empty text ---------------------------------------------------


def test_languages() -> None:
    assert LANGUAGES == ("en", "fr", "es", "de", "it", "pt", "nl", "ar", "hi")


@pytest.mark.parametrize("language", ["xx", "english", "", "zh"])
def test_unknown_language_is_a_text_error_naming_the_languages(language: str) -> None:
    with pytest.raises(TextError) as caught:
        normalize_text("hello", language)
    message = str(caught.value)
    assert "\n" not in message and all(code in message for code in LANGUAGES)


def test_unknown_language_raises_even_for_empty_text() -> None:
    with pytest.raises(TextError):
        normalize_text("", "xx")


@pytest.mark.parametrize("language", ["EN", "en-US", "pt_BR", " de "])
def test_case_and_region_of_the_language_are_ignored(language: str) -> None:
    assert normalize_text("1 €", language) == normalize_text("1 €", language.strip()[:2].lower())


@pytest.mark.parametrize("text", ["", " ", "\n\t \u00a0", "\u200b\ufeff", "👋🏽", "**", "# ", "\x00"])
def test_nothing_to_say_gives_empty_text(text: str) -> None:
    for lang in LANGUAGES:
        assert normalize_text(text, lang) == ""


# --- rule 1: cardinals, decimals, negatives, digits in words ----------------------------------

NUMBERS = {
    "en": [("1,234.5", "one thousand two hundred thirty-four point five"),
           ("I have 3 cats", "I have three cats"),
           ("1,000,000 stars", "one million stars"),
           ("0.05", "zero point zero five"),
           ("-3 and −3", "minus three and minus three"),
           ("1,5", "one, five"),  # no grouping: two numbers
           ("1.2.3", "one dot two dot three"),
           ("mp3, A4, 4K", "mp three, A four, four K"),
           ("COVID-19", "COVID-nineteen"),
           ("agent 007", "agent zero zero seven"),
           ("call 5551234567", "call five five five one two three four five six seven")],
    "fr": [("1 234,5", "mille deux cent trente-quatre virgule cinq"),
           ("1\u202f234,5", "mille deux cent trente-quatre virgule cinq"),
           ("1.234", "mille deux cent trente-quatre"),
           ("3,14", "trois virgule quatorze"),
           ("0,05", "zéro virgule zéro cinq"),
           ("-3 degrés", "moins trois degrés"),
           ("80 ans", "quatre-vingts ans")],
    "es": [("1.234,5", "mil doscientos treinta y cuatro coma cinco"),
           ("-3", "menos tres"),
           ("1.000 personas", "mil personas")],
    "de": [("1.234,5", "eintausendzweihundertvierunddreißig Komma fünf"),
           ("1,5 Liter", "eins Komma fünf Liter"),  # "," is the decimal mark
           ("-3", "minus drei"),
           ("25 Jahre", "fünfundzwanzig Jahre"),
           ("Python 3.11", "Python drei Punkt elf"),  # "." is no decimal mark in German
           ("1.000.000 Menschen", "eine Million Menschen")],
    "it": [("1.234,5", "milleduecentotrentaquattro virgola cinque"),
           ("−3", "meno tre"),
           ("3,14", "tre virgola quattordici")],
    "pt": [("1.234,5", "mil duzentos e trinta e quatro vírgula cinco"),
           ("-3", "menos três")],
    "nl": [("1.234,5", "duizendtweehonderdvierendertig komma vijf"),
           ("-3", "min drie"),
           ("101", "honderdeen")],
    "ar": [("1,234.5", "ألف ومئتان وأربعة وثلاثون فاصلة خمسة"),
           ("٣٫٥", "ثلاثة فاصلة خمسة"),
           ("-5", "سالب خمسة"),
           ("200", "مئتان"),
           ("15", "خمسة عشر")],
    "hi": [("1,234.5", "एक हज़ार दो सौ चौंतीस दशमलव पाँच"),
           ("१२३", "एक सौ तेईस"),
           ("-3", "माइनस तीन"),
           ("1,00,000", "एक लाख"),
           ("12,34,567", "बारह लाख चौंतीस हज़ार पाँच सौ सड़सठ"),
           ("3.14", "तीन दशमलव एक चार")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(NUMBERS))
def test_numbers(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


# --- rule 2: ordinals ------------------------------------------------------------------------

ORDINALS = {
    "en": [("1st, 2nd, 3rd, 21st", "first, second, third, twenty-first"),
           ("the 11th and 101st", "the eleventh and one hundred first")],
    "fr": [("le 1er et la 1re", "le premier et la première"),
           ("le 2e, le 21e", "le deuxième, le vingt et unième"),
           ("la 2nde", "la seconde")],
    "es": [("el 1º y la 1ª", "el primero y la primera"),
           ("el 1.er piso", "el primer piso"),
           ("1° de mayo", "primero de mayo")],
    "it": [("il 1º e la 3ª", "il primo e la terza"),
           ("1° maggio", "primo maggio")],
    "pt": [("o 1º e a 1ª", "o primeiro e a primeira"),
           ("a 21ª vez", "a vigésima primeira vez")],
    "nl": [("de 1e, 1ste en 2de", "de eerste, eerste en tweede"),
           ("de 21e eeuw", "de eenentwintigste eeuw")],
    "de": [("am 3. Oktober", "am dritten Oktober"),
           ("Der 3. Oktober", "Der dritte Oktober"),
           ("3. Oktober 1990", "dritter Oktober neunzehnhundertneunzig"),
           ("im 19. Jahrhundert", "im neunzehnten Jahrhundert"),
           ("Am 3. und 4. Mai", "Am dritten und vierten Mai"),
           ("die 2. und 3. Klasse", "die zweite und dritte Klasse"),
           ("Es stieg auf 25. Die Polizei kam.", "Es stieg auf fünfundzwanzig. Die Polizei kam."),
           ("am 03.10.2024", "am dritten Oktober zweitausendvierundzwanzig")],
    "hi": [("21वीं सदी", "इक्कीसवीं सदी"),
           ("1ला, 2रा, 6ठा, 5वाँ", "पहला, दूसरा, छठा, पाँचवाँ")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(ORDINALS))
def test_ordinals(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


# --- rule 3: currency ----------------------------------------------------------------------

CURRENCY = {
    "en": [("$5", "five dollars"),
           ("$5.50", "five dollars and fifty cents"),
           ("$1 and $0.99", "one dollar and ninety-nine cents"),
           ("€10 or 10 €", "ten euros or ten euros"),
           ("£3, £1.01", "three pounds, one pound and one penny"),
           ("¥100", "one hundred yen"),
           ("₹500", "five hundred rupees"),
           ("$1,000,000", "one million dollars"),
           ("$5 million", "five million dollars"),
           ("-$5", "minus five dollars"),
           ("$5.5", "five point five dollars")],
    "fr": [("10,50 €", "dix euros et cinquante centimes"),
           ("1 €", "un euro"),
           ("£21", "vingt et une livres"),
           ("1 000 000 €", "un million d'euros"),
           ("3 milliards $", "trois milliards de dollars"),
           ("₹500", "cinq cents roupies")],
    "es": [("5,50 $", "cinco dólares con cincuenta centavos"),
           ("21 €", "veintiún euros"),
           ("200 £", "doscientas libras"),
           ("1.000.000 €", "un millón de euros"),
           ("¥100", "cien yenes")],
    "de": [("1.234,50 €", "eintausendzweihundertvierunddreißig Euro und fünfzig Cent"),
           ("1 €", "ein Euro"),
           ("₹1", "eine Rupie"),
           ("£3", "drei Pfund"),
           ("2,5 Mio. €", "zwei Komma fünf Millionen Euro"),
           ("5,- €", "fünf Euro"),
           ("¥100", "einhundert Yen")],
    "it": [("5,50 €", "cinque euro e cinquanta centesimi"),
           ("1 £", "una sterlina"),
           ("$1", "un dollaro"),
           ("1.000.000 €", "un milione di euro"),
           ("₹2", "due rupie")],
    "pt": [("5,50 $", "cinco dólares e cinquenta cêntimos"),
           ("1 £, 2 £, 200 £", "uma libra, duas libras, duzentas libras"),
           ("¥100", "cem ienes"),
           ("1.000.000 €", "um milhão de euros")],
    "nl": [("€ 5,50", "vijf euro en vijftig cent"),
           ("€ 1,-", "één euro"),
           ("£3", "drie pond"),
           ("¥100", "honderd yen")],
    "ar": [("$5.50", "خمسة دولارات وخمسون سنتًا"),
           ("$1", "دولار واحد"),
           ("$2", "دولاران"),
           ("$11", "أحد عشر دولارًا"),
           ("$100", "مائة دولار"),
           ("€2000", "ألفا يورو"),
           ("₹3", "ثلاث روبيات"),
           ("£12", "اثنا عشر جنيهًا")],
    "hi": [("₹500", "पाँच सौ रुपये"),
           ("₹1", "एक रुपया"),
           ("₹10.50", "दस रुपये पचास पैसे"),
           ("₹1,00,000", "एक लाख रुपये"),
           ("₹5 लाख", "पाँच लाख रुपये"),
           ("$5", "पाँच डॉलर")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(CURRENCY))
def test_currency(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


# --- rule 4: percentages -------------------------------------------------------------------

PERCENT = {
    "en": [("50%", "fifty percent"), ("-2.5%", "minus two point five percent")],
    "fr": [("12,5 %", "douze virgule cinq pour cent"), ("50 %", "cinquante pour cent")],
    "es": [("50 %", "cincuenta por ciento"), ("3,5 %", "tres coma cinco por ciento")],
    "de": [("50 %", "fünfzig Prozent"), ("1 %", "ein Prozent"),
           ("12,5 %", "zwölf Komma fünf Prozent")],
    "it": [("50%", "cinquanta per cento")],
    "pt": [("50%", "cinquenta por cento")],
    "nl": [("50%", "vijftig procent")],
    "ar": [("50%", "خمسون بالمئة"), ("٥٠٪", "خمسون بالمئة")],
    "hi": [("50%", "पचास प्रतिशत")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(PERCENT))
def test_percentages(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


# --- rule 5: years and times ---------------------------------------------------------------

YEARS_AND_TIMES = {
    "en": [("in 1999", "in nineteen ninety-nine"),
           ("2024, 2005, 1905", "twenty twenty-four, two thousand five, nineteen oh five"),
           ("the 1990s and '80s", "the nineteen nineties and eighties"),
           ("10:30", "ten thirty"),
           ("7:05", "seven oh five"),
           ("12:00", "twelve o'clock"),
           ("23:00", "twenty-three hundred")],
    "fr": [("en 1999", "en mille neuf cent quatre-vingt-dix-neuf"),
           ("10h30 ou 10:30", "dix heures trente ou dix heures trente"),
           ("1h05", "une heure cinq"),
           ("21h", "vingt et une heures")],
    "es": [("en 1999", "en mil novecientos noventa y nueve"),
           ("10:30", "diez y treinta"),
           ("1:05", "una y cinco"),
           ("10:00", "diez en punto")],
    "de": [("1999", "neunzehnhundertneunundneunzig"),
           ("10:30", "zehn Uhr dreißig"),
           ("um 10:30 Uhr", "um zehn Uhr dreißig"),
           ("8.30 Uhr", "acht Uhr dreißig"),
           ("1 Uhr", "ein Uhr")],
    "it": [("nel 1999", "nel millenovecentonovantanove"),
           ("13:45", "tredici e quarantacinque"),
           ("1:00", "una in punto")],
    "pt": [("em 1999", "em mil novecentos e noventa e nove"),
           ("13:45", "treze e quarenta e cinco"),
           ("1:00 e 2:00", "uma hora e duas horas")],
    "nl": [("in 1999", "in negentienhonderdnegenennegentig"),
           ("10:30", "tien uur dertig"),
           ("10:00", "tien uur")],
    "ar": [("1999", "ألف وتسعمائة وتسعة وتسعون"),
           ("2000", "ألفان"),
           ("10:30", "عشرة وثلاثون")],
    "hi": [("1999", "उन्नीस सौ निन्यानवे"),
           ("2024", "दो हज़ार चौबीस"),
           ("10:30", "दस बजकर तीस मिनट"),
           ("10:00", "दस बजे"),
           ("10:30 बजे, 7 बजे", "दस बजकर तीस मिनट, सात बजे")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(YEARS_AND_TIMES))
def test_years_and_times(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


# --- rule 6: typography, markdown, links, pictographs, punctuation, whitespace ------------------

TYPOGRAPHY = {
    "en": [("“Hello,” she said.", '"Hello," she said.'),
           ("it’s ‘fine’", "it's 'fine'"),
           ("a — b – c -- d", "a - b - c - d"),
           ("pages 10–20", "pages ten-twenty"),
           ("Wait.... What?!?! No!!! Fine,, ok;; so..", "Wait… What?! No! Fine, ok; so."),
           ("He said ... wait … what", "He said… wait… what"),
           ("a  \t b\n c", "a b c"),
           ("  padded  ", "padded"),
           ("Great job !", "Great job!"),
           ("ﬁne ＦＵＬＬ", "fine FULL"),
           ("zero\u200bwidth\ufeff soft\u00adhyphen\u200e", "zerowidth softhyphen")],
    "fr": [("« Bonjour » dit-il", '"Bonjour" dit-il'),
           ("l’homme — enfin", "l'homme - enfin")],
    "de": [("„Hallo“ sagte sie", '"Hallo" sagte sie')],
    "es": [("¡Hola! ¿Qué tal?", "¡Hola! ¿Qué tal?")],
    "it": [("dell’anno", "dell'anno")],
    "pt": [("«Olá»", '"Olá"')],
    "nl": [("‘s avonds", "'s avonds")],
    "ar": [("«مرحبا»", '"مرحبا"')],
    "hi": [("“नमस्ते”!!!", '"नमस्ते"!'), ("क्या??", "क्या?"), ("यह है।।", "यह है।")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(TYPOGRAPHY))
def test_typography(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


MARKDOWN = {
    "en": [("# Hello World", "Hello World."),
           ("## Done! ##", "Done!"),
           ("- first\n- second!\n* third\n+ fourth\n• fifth",
            "first. second! third. fourth. fifth."),
           ("1. Step one\n2) Step two", "Step one. Step two."),
           ("- [x] done task", "done task."),
           ("> quoted\n> text", "quoted text"),
           ("**bold**, __bold__, *it*, _it_, ~~gone~~ and `code`",
            "bold, bold, it, it, gone and code"),
           ("[the docs](https://example.com/docs) and ![a cat](cat.png)", "the docs and a cat"),
           ("Title\n\nBody text\nwrapped\n\n---\n\nEnd", "Title. Body text wrapped. End"),
           ("```python\nprint(x)\n```", "print(x)"),
           ("Hello\n\n", "Hello"),
           ("snake_case and 5 * 3", "snake_case and five * three"),
           ("✅ Done\n✅ Tested", "Done. Tested.")],
    "de": [("1. Einleitung\n2. Methoden", "Einleitung. Methoden."),
           ("3. Oktober ist ein Feiertag.", "dritter Oktober ist ein Feiertag.")],
    "fr": [("# Résumé", "Résumé.")],
    "hi": [("# शीर्षक\n- पहला बिंदु", "शीर्षक। पहला बिंदु।")],
    "ar": [("# عنوان\n- بند", "عنوان. بند.")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(MARKDOWN))
def test_markdown(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


LINKS = {
    "en": [("see https://www.example.com/path?q=1.", "see example dot com."),
           ("visit www.mistral.ai, or github.com/mistralai",
            "visit mistral dot ai, or github dot com"),
           ("<https://example.org/x>", "example dot org"),
           ("mail john.doe@example.com", "mail john dot doe at example dot com"),
           ("e.g. U.S. Dr. Smith at 5 p.m.", "e.g. U.S. Dr. Smith at five p.m.")],
    "fr": [("sur www.example.fr", "sur example point fr"), ("a@b.fr", "a arobase b point fr")],
    "de": [("auf spiegel.de", "auf spiegel Punkt de")],
    "es": [("en www.ejemplo.es", "en ejemplo punto es")],
    "it": [("su http://esempio.it", "su esempio punto it")],
    "pt": [("em www.exemplo.pt", "em exemplo ponto pt")],
    "nl": [("op www.voorbeeld.nl", "op voorbeeld punt nl")],
    "ar": [("www.example.com", "example نقطة com")],
    "hi": [("www.example.in", "example डॉट in")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(LINKS))
def test_links(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


@pytest.mark.parametrize("lang", LANGUAGES)
def test_emoji_and_pictographs_are_dropped(lang: str) -> None:
    text = "Hi 👋🏽 there 🇫🇷 ❤️ 👨‍👩‍👧 ok ✅ ★ ©®™ 1️⃣!"
    assert normalize_text(text, lang) == "Hi there ok " + normalize_text("1", lang) + "!"


@pytest.mark.parametrize(("lang", "text"), [
    ("ar", "مَرْحَبًا بِالعالم، كيف الحال؟"),
    ("ar", "السلام عليكم"),
    ("hi", "नमस्ते दुनिया, आप कैसे हैं?"),
    ("hi", "क्\u200dष और क्\u200cष"),  # ZWJ / ZWNJ inside a Devanagari word are kept
    ("ar", "می\u200cخواهم"),
])
def test_arabic_and_devanagari_letters_are_kept(lang: str, text: str) -> None:
    assert normalize_text(text, lang) == unicodedata.normalize("NFC", text)


def test_arabic_and_devanagari_digits_become_words() -> None:
    assert normalize_text("عام ٢٠٢٤", "ar") == "عام ألفان وأربعة وعشرون"
    assert normalize_text("वर्ष २०२४", "hi") == "वर्ष दो हज़ार चौबीस"


# --- fallbacks where num2words cannot help -------------------------------------------------


def _clear_caches() -> None:
    for cached in (number_words.cardinal, number_words.ordinal, number_words.year):
        cached.cache_clear()


@pytest.fixture
def num2words_without(monkeypatch):
    """num2words made to raise NotImplementedError for the given modes (as it does for a
    language or mode it lacks)."""

    def patch(*modes: str) -> None:
        real = number_words.num2words

        def fake(number, lang="en", to="cardinal", **kwargs):
            if to in modes:
                raise NotImplementedError(f"{to} not implemented")
            return real(number, lang=lang, to=to, **kwargs)

        monkeypatch.setattr(number_words, "num2words", fake)
        _clear_caches()

    yield patch
    _clear_caches()


def test_hindi_does_not_need_num2words(num2words_without) -> None:
    num2words_without("cardinal", "ordinal", "year", "currency")
    assert normalize_text("1999 में ₹1,00,000 और 21वीं", "hi") == \
        "उन्नीस सौ निन्यानवे में एक लाख रुपये और इक्कीसवीं"


def test_without_ordinals_an_ordinal_is_read_as_a_cardinal(num2words_without) -> None:
    num2words_without("ordinal")
    assert normalize_text("the 21st", "en") == "the twenty-one"


def test_without_years_a_year_is_read_as_a_cardinal(num2words_without) -> None:
    num2words_without("year")
    assert normalize_text("in 1999", "en") == "in one thousand nine hundred ninety-nine"


def test_without_cardinals_the_digits_are_left_one_by_one(num2words_without) -> None:
    num2words_without("cardinal")
    assert normalize_text("42", "fr") == "4 2"  # the last resort, and no endless recursion


@pytest.mark.parametrize(("lang", "want"), [
    ("fr", "cent yens et cinq cents roupies"),
    ("de", "einhundert Yen und fünfhundert Rupien"),
    ("it", "cento yen e cinquecento rupie"),
    ("pt", "cem ienes e quinhentas rupias"),
    ("nl", "honderd yen en vijfhonderd roepie"),
    ("ar", "مائة ين وخمسمائة روبية"),
])
def test_currencies_num2words_lacks(lang: str, want: str) -> None:
    """num2words' currency mode raises for yen and rupee in these languages (and says riyal for
    every Arabic amount): names come from the table here."""
    joiner = {"fr": " et ", "de": " und ", "it": " e ", "pt": " e ", "nl": " en ", "ar": " و"}[lang]
    assert normalize_text(f"¥100{joiner}₹500", lang) == want


def test_numbers_too_large_for_num2words_are_read_digit_by_digit() -> None:
    assert normalize_text("1.000.000.000.000.000.000.000.000.000.000", "es").startswith(
        "uno cero cero cero")


# --- promises: never raise, no digit left, idempotence ---------------------------------------

SAMPLES = {
    "en": "# Report\n\nIn 1999, I paid $5.50 for 1,234.5 apples at 10:30 — 50% off!!! "
          "The 21st time… see https://example.com 👋",
    "fr": "Le 1er mai à 10h30, « 12,5 % » de 1 234,50 € — c’est ça !",
    "es": "El 1º de mayo a las 10:30 pagué 1.234,50 € (un 12,5 %).",
    "de": "Am 3. Oktober 1990 um 10:30 Uhr kostete es 1.234,50 € und 12,5 % mehr.",
    "it": "Il 1º maggio alle 13:45 ho pagato 5,50 € (il 50%).",
    "pt": "No dia 1º às 13:45 paguei 200 £ e 5,50 $ (50%).",
    "nl": "Op de 2de om 10:30 kostte het € 5,50 (50%).",
    "ar": "في عام ١٩٩٩ دفعت $5.50 و 50% الساعة 10:30 مرحبا 👋",
    "hi": "मैंने 1999 में ₹500 दिए, 21वीं सदी, 10:30 बजे, 50% **छूट**!!",
}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_idempotent(lang: str) -> None:
    once = normalize_text(SAMPLES[lang], lang)
    assert once and normalize_text(once, lang) == once


_ODD = list("0123456789 \n\t.,:;!?-–—−%$€£¥₹#*_`[]()<>@/'\"“”«»‘’…hezmstºª°") + [
    "\ud800", "\u200d", "\u200c", "\ufe0f", "👋", "🏽", "🇫", "❤", "١", "٫", "ب", "ـ", "क", "्",
    "़", "१", "\x00", "\x7f", "\u202f", "\u00a0", "Uhr", "Oktober", "am ", "https://", "www.",
    ".com", "st", "1.", "# ", "- ", "\n\n", "**", "ﷺ", "ﬁ", "Ａ", "１"]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_odd_input_never_raises_and_leaves_no_digit(lang: str) -> None:
    rng = random.Random(f"normalize-{lang}")
    for _ in range(300):
        text = "".join(rng.choice(_ODD) for _ in range(rng.randint(0, 30)))
        out = normalize_text(text, lang)
        assert isinstance(out, str) and not any(c.isdigit() for c in out), (text, out)
        assert out == unicodedata.normalize("NFC", out) and out == out.strip()


# --- ISO dates, phone numbers, degrees, "&" and fractions ------------------------------------

ISO_DATES = {
    "en": [("2024-05-01", "May first, twenty twenty-four"),
           ("on 2024-12-25.", "on December twenty-fifth, twenty twenty-four."),
           ("2024-13-45", "twenty twenty-four-thirteen-forty-five"),  # no such month: as before
           ("2024-02-30", "twenty twenty-four-zero two-thirty")],  # no such day
    "fr": [("2024-05-01", "premier mai deux mille vingt-quatre"),
           ("le 2024-11-21", "le vingt et un novembre deux mille vingt-quatre")],
    "es": [("2024-05-01", "uno de mayo de dos mil veinticuatro")],
    "de": [("2024-05-01", "erster Mai zweitausendvierundzwanzig"),
           ("am 2024-10-03", "am dritten Oktober zweitausendvierundzwanzig"),
           ("2024-13-45", "zweitausendvierundzwanzig-dreizehn-fünfundvierzig")],
    "it": [("2024-05-01", "primo maggio duemilaventiquattro"),
           ("2024-05-02", "due maggio duemilaventiquattro")],
    "pt": [("2024-05-01", "primeiro de maio de dois mil e vinte e quatro")],
    "nl": [("2024-05-01", "één mei tweeduizendvierentwintig")],
    "ar": [("2024-05-01", "واحد مايو ألفان وأربعة وعشرون")],
    "hi": [("2024-05-01", "एक मई दो हज़ार चौबीस")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(ISO_DATES))
def test_iso_dates(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


PHONES = {
    "en": [("Call me at 555-1234.", "Call me at five five five, one two three four."),
           ("(555) 123-4567", "five five five, one two three, four five six seven"),
           ("555-123-4567", "five five five, one two three, four five six seven"),
           ("555.123.4567", "five five five, one two three, four five six seven"),
           ("1-800-555-1234", "one, eight zero zero, five five five, one two three four"),
           ("+33 6 12 34 56 78",
            "plus three three, six, one two, three four, five six, seven eight"),
           # not phone numbers: scores, ranges, dates, words with digits
           ("won 3-2", "won three-two"),
           ("pages 10-20", "pages ten-twenty"),
           ("1-2-3", "one-two-three"),
           ("100-1000", "one hundred-one thousand"),
           ("COVID-19", "COVID-nineteen")],
    "fr": [("06 12 34 56 78", "zéro six, un deux, trois quatre, cinq six, sept huit"),
           ("+33 6 12 34 56 78",
            "plus trois trois, six, un deux, trois quatre, cinq six, sept huit"),
           ("1 234 567", "un million deux cent trente-quatre mille cinq cent soixante-sept")],
    "es": [("555-1234", "cinco cinco cinco, uno dos tres cuatro"),
           ("+34 612 345 678",
            "más tres cuatro, seis uno dos, tres cuatro cinco, seis siete ocho")],
    "de": [("555-1234", "fünf fünf fünf, eins zwei drei vier"),
           ("+49 30 1234567", "plus vier neun, drei null, eins zwei drei vier fünf sechs sieben"),
           ("1.234.567",
            "eine Million zweihundertvierunddreißigtausendfünfhundertsiebenundsechzig")],
    "it": [("555-1234", "cinque cinque cinque, uno due tre quattro")],
    "pt": [("555-1234", "cinco cinco cinco, um dois três quatro")],
    "nl": [("555-1234", "vijf vijf vijf, één twee drie vier")],
    "ar": [("555-1234", "خمسة خمسة خمسة، واحد اثنان ثلاثة أربعة")],
    "hi": [("555-1234", "पाँच पाँच पाँच, एक दो तीन चार")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(PHONES))
def test_phone_numbers(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


DEGREES = {
    "en": [("-5°C", "minus five degrees Celsius"),
           ("98.6 °F", "ninety-eight point six degrees Fahrenheit"),
           ("a 90° angle", "a ninety degrees angle"),
           ("1°", "one degree"),
           ("10℃", "ten degrees Celsius")],
    "fr": [("-5°C", "moins cinq degrés Celsius"), ("1 °C", "un degré Celsius")],
    "es": [("-5°C", "menos cinco grados Celsius"),
           ("1° de mayo, 20° hoy", "primero de mayo, veinte grados hoy")],
    "de": [("-5 °C", "minus fünf Grad Celsius"), ("1°", "ein Grad"),
           ("2,5 °F", "zwei Komma fünf Grad Fahrenheit")],
    "it": [("-5°C", "meno cinque gradi Celsius"), ("1° maggio", "primo maggio")],
    "pt": [("-5°C", "menos cinco graus Celsius"), ("1° de maio", "primeiro de maio")],
    "nl": [("-5°C", "min vijf graden Celsius"), ("1°", "één graad")],
    "ar": [("-5°C", "سالب خمس درجات مئوية"), ("2°F", "درجتان فهرنهايت")],
    "hi": [("-5°C", "माइनस पाँच डिग्री सेल्सियस")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(DEGREES))
def test_degrees(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


AMPERSANDS_AND_FRACTIONS = {
    "en": [("Tom & Jerry, R&D", "Tom and Jerry, R and D"),
           ("5&6", "five and six"),
           ("1/2 cup, 3/4, 2/3, 5/8", "one half cup, three quarters, two thirds, five eighths"),
           ("24/7 and 9/11", "twenty-four slash seven and nine slash eleven"),
           ("01/05/2024", "zero one slash zero five slash twenty twenty-four"),
           ("and/or km/h", "and/or km/h")],
    "fr": [("Pierre & Marie", "Pierre et Marie"),
           ("1/2, 3/4, 5/8", "un demi, trois quarts, cinq barre huit"),
           ("01/05/2024", "zéro un barre zéro cinq barre deux mille vingt-quatre")],
    "es": [("agua & hielo, padre & hijo", "agua y hielo, padre e hijo"),
           ("Pedro & Ana", "Pedro y Ana"),
           ("1/2, 2/3", "un medio, dos tercios")],
    "de": [("Müller & Söhne", "Müller und Söhne"), ("1/2, 3/4", "ein halb, drei Viertel")],
    "it": [("Dolce & Gabbana", "Dolce e Gabbana"), ("1/4", "un quarto")],
    "pt": [("pão & manteiga", "pão e manteiga"), ("2/3", "dois terços")],
    "nl": [("Jan & Piet", "Jan en Piet"), ("3/4", "drie kwart")],
    "ar": [("خبز & ملح", "خبز وملح"), ("1/2", "نصف")],
    "hi": [("राम & श्याम", "राम और श्याम"), ("3/4", "तीन चौथाई")],
}


@pytest.mark.parametrize(("lang", "text", "want"), _cases(AMPERSANDS_AND_FRACTIONS))
def test_ampersands_and_fractions(lang: str, text: str, want: str) -> None:
    assert normalize_text(text, lang) == want


@pytest.mark.parametrize("lang", LANGUAGES)
def test_new_rules_are_idempotent_and_leave_no_digit(lang: str) -> None:
    text = "2024-05-01 555-1234 +33 6 12 34 56 78 -5°C 1/2 01/05/2024 A & B 3-2"
    once = normalize_text(text, lang)
    assert not any(c.isdigit() for c in once)
    assert normalize_text(once, lang) == once


# --- the package: one module per language, registered in one place --------------------------

CORE_MODULES = ("language", "markup", "number_words", "numbers", "registry", "text")


def _package_modules() -> dict[str, object]:
    return {info.name: importlib.import_module(f"{normalize.__name__}.{info.name}")
            for info in pkgutil.iter_modules(normalize.__path__)}


def test_the_registry_and_the_language_modules_agree() -> None:
    """Every module of the package that defines a language is registered under its own name,
    with that very object; LANGUAGES are the registered codes; the core modules define none."""
    modules = _package_modules()
    defined = {name: module.LANGUAGE for name, module in modules.items()
               if isinstance(getattr(module, "LANGUAGE", None), Language)}
    assert set(modules) == set(defined) | set(CORE_MODULES)
    assert LANGUAGES == registry.registered()
    assert set(LANGUAGES) == set(defined)
    for code, language in defined.items():
        assert language.code == code and registry.lookup(code) is language


@pytest.mark.parametrize("name", [name for name in CORE_MODULES if name != "registry"])
def test_the_core_never_asks_which_language_it_is(name: str) -> None:
    """No comparison with a language's code and no language code as a string in the shared
    modules: what differs between languages is a field or a hook of the language object."""
    tree = ast.parse(inspect.getsource(_package_modules()[name]))
    codes = [node for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and node.value in LANGUAGES]
    compared = [node for compare in ast.walk(tree) if isinstance(compare, ast.Compare)
                for node in (compare.left, *compare.comparators)
                if isinstance(node, ast.Attribute) and node.attr == "code"]
    assert not codes and not compared


class _Esperanto(Language):
    def time_words(self, hours: int, minutes: int) -> str:
        return f"la {number_words.ordinal(hours, self)} kaj {number_words.cardinal(minutes, self)}"


TOY = _Esperanto(
    code="eo", point="komo", dot="punkto", at="ĉe", minus="minus", percent="procentoj",
    money_and="kaj", and_word="kaj", slash="oblikvo", plus="plus",
    months=("januaro", "februaro", "marto", "aprilo", "majo", "junio", "julio", "aŭgusto",
            "septembro", "oktobro", "novembro", "decembro"),
    degree=("grado", "gradoj"), decimal_comma=True, fractions={(1, 2): "duono"},
    currencies={code: currency("eŭro", "eŭroj", sub=("cendo", "cendoj"))
                for code in ("USD", "EUR", "GBP", "JPY", "INR")},
)


@pytest.fixture
def registered_toy(monkeypatch):
    """The toy language registered (the registry restored afterwards)."""
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    return registry.register(TOY)


def test_a_language_is_one_object_the_core_needs_nothing_more(registered_toy) -> None:
    """A language defined outside the package, registered, is spoken by the shared rules with
    its own words and hooks only."""
    assert normalize.resolve_language("eo-EO") == "eo"
    text = "**Mi** havas 3 katojn, 1,50 € kaj 1/2 je 10:30 (2024-05-01, 20 °C, ana@x.org)"
    assert normalize_text(text, "eo") == (
        "Mi havas tri katojn, unu eŭro kaj kvindek cendoj kaj duono je la deka kaj tridek "
        "(unu majo du mil dudek kvar, dudek gradoj Celsius, ana ĉe x punkto org)")
    assert LANGUAGES == ("en", "fr", "es", "de", "it", "pt", "nl", "ar", "hi")


def test_register_refuses_a_taken_or_malformed_code(registered_toy) -> None:
    with pytest.raises(ValueError):
        registry.register(TOY)
    with pytest.raises(ValueError):
        registry.register(dataclasses.replace(TOY, code="EO1"))
    with pytest.raises(ValueError):
        registry.register(dataclasses.replace(TOY, code="ia", months=TOY.months[:11]))
    with pytest.raises(ValueError):
        registry.register(dataclasses.replace(TOY, code="ia", currencies={}))
