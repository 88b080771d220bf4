"""What the normaliser knows of one language: the :class:`Language` object.

Each language module (``en.py``, ``fr.py``, ...) defines one ``LANGUAGE``: an instance of
:class:`Language`, or of a subclass that overrides some of its hooks. The fields are the
language's words and number conventions; the hooks (methods) are the rules that need more than
a word: a cardinal's form before a noun, how an amount, a time, a date or an ordinal is said.
The defaults here are the plainest form of each rule (a cardinal, a noun, no agreement), so a
new language states only where it differs. The shared rules (:mod:`.numbers`, :mod:`.text`,
:mod:`.markup`) ask the language object and never test which language it is.

Currency amounts are said as cardinal + the currency's name from ``currencies`` (``num2words``'
own currency mode is not used: it reads an ``int`` as cents, says "zero dollars", lacks yen and
rupee in most languages). Two decimals are read as the subunit (cents, pence, centimes, ...),
others as a decimal amount; :meth:`Language.before_noun` makes the number agree with the noun's
gender, and :meth:`Language.count_phrase` puts a "de"/"di" after a "million" noun where the
language has one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .number_words import cardinal, ordinal, say_number, split_number, year


@dataclass(frozen=True)
class Unit:
    """A counted noun: singular, plural and grammatical gender ("m", "f" or "n")."""

    singular: str
    plural: str
    gender: str = "m"


@dataclass(frozen=True)
class Currency:
    unit: Unit
    subunit: Unit | None = None


def gendered_ordinal(language: "Language", m: re.Match) -> str:
    """An ordinal in words, feminine after the "ª" mark (group 2): the Iberian and Italian rule
    (1º primero / primo / primeiro, 1ª primera / prima / primeira)."""
    words = ordinal(int(m.group(1)), language)
    return re.sub(r"o\b", "a", words) if m.group(2) == "ª" else words


def currency(singular: str, plural: str, gender: str = "m",
             sub: tuple[str, ...] | None = None) -> Currency:
    """A :class:`Currency` in one line: ``currency("livre", "livres", "f", sub=("penny",
    "pence"))``."""
    return Currency(Unit(singular, plural, gender), Unit(*sub) if sub else None)


#: the currency symbols every language reads, and the ISO code each stands for (``¥`` is yen,
#: ``$`` US dollars); every language's ``currencies`` (or its ``say_money``) covers these codes
CURRENCY_SYMBOLS = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR",
                    "Rs": "INR", "Rs.": "INR", "रु": "INR", "रु.": "INR"}

#: one rule a language adds to the number stage: a pattern and what a match is said as
Rule = tuple[re.Pattern, Callable[[re.Match], str]]


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, a key of the number caches
class Language:
    """One language's words, number conventions and rules (fields: data; methods: hooks)."""

    code: str  # the ISO 639-1 code ``normalize_text`` accepts
    point: str  # the decimal separator, spoken
    dot: str  # "." in a host name or a dotted number ("1.2.3")
    at: str  # "@" in an e-mail address
    minus: str
    percent: str
    money_and: str  # between units and cents ("" = nothing)
    and_word: str  # "&" between words
    slash: str  # "/" between digit groups ("24/7")
    plus: str  # a phone number's leading "+"
    months: tuple[str, ...]  # January ... December, for dates
    degree: tuple[str, str]  # the word for degrees: one, several
    celsius: str = "Celsius"
    fahrenheit: str = "Fahrenheit"
    degree_gender: str = "m"
    sentence_end: str = "."  # added to a heading or list item with no final punctuation
    list_comma: str = ", "  # between the groups of a phone number
    #: decimals marked with "," and thousands with "." or a space (otherwise "." and ",")
    decimal_comma: bool = False
    #: up to three decimals read as a number (fr "virgule vingt-cinq"), not digit by digit
    decimals_as_number: bool = False
    num2words_code: str | None = None  # num2words' name of the language, if not ``code``
    #: named simple fractions: (numerator, denominator) → words
    fractions: dict[tuple[int, int], str] = field(default_factory=dict)
    currencies: dict[str, Currency] = field(default_factory=dict)  # ISO code → names
    scale_words: str = ""  # a regex of the scale nouns an amount may have ("$5 million")
    scale_gender: str = "m"
    #: abbreviated scale nouns and their (singular, plural) ("Mio." → Million, Millionen)
    scale_abbreviations: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: a scale noun after which the counted noun takes ``of_word`` ("un million d'euros")
    million_of: re.Pattern | None = None
    of_word: str = ""
    percent_gender: str | None = None  # the gender "percent" asks of a number, if it agrees
    time_patterns: tuple[re.Pattern, ...] = ()  # times besides HH:MM ("10h30", "10 Uhr")
    ordinal_pattern: re.Pattern | None = None  # written ordinals: number and suffix
    #: a line that looks like a list item but is not ("3. Oktober ...")
    not_a_list_item: re.Pattern | None = None
    #: words a "." follows without ending the sentence (titles, "e.g."), lower case, without the
    #: final "." (read by the incremental segmenter, :mod:`voxtral_tts.segmenter`)
    abbreviations: frozenset[str] = frozenset()
    #: a closing quote the language writes after a space ("« Oui. »"): it still closes the sentence
    spaced_closer: str = ""

    # --- number words ------------------------------------------------------------------------

    def fix_number_words(self, words: str) -> str:
        """num2words' output in the form this language writes it."""
        return words

    def own_cardinal(self, n: int) -> str | None:
        """The cardinal from the language's own tables, or None to ask num2words."""
        return None

    def standalone_form(self, words: str) -> str:
        """A cardinal said on its own, where it differs from the form before a counted noun."""
        return words

    def year_words(self, n: int) -> str:
        """A four-digit year (1000-2099) as it is said; the cardinal by default."""
        return cardinal(n, self)

    def before_noun(self, words: str, gender: str) -> str:
        """A cardinal's form before a noun of ``gender`` ("m", "f" or "n")."""
        return words

    def count_phrase(self, number_words: str, noun: str) -> str:
        """A number and the noun it counts ("un million d'euros" where a "million" asks it)."""
        if self.million_of and self.million_of.search(number_words):
            return f"{number_words} {self.of_word} {noun}"
        return f"{number_words} {noun}"

    def count(self, n: int, unit: Unit) -> str:
        noun = unit.singular if n == 1 else unit.plural
        return self.count_phrase(self.before_noun(cardinal(n, self), unit.gender), noun)

    # --- amounts, degrees ----------------------------------------------------------------------

    def say_money(self, token: str, code: str, *, negative: bool, scale: str | None) -> str:
        """An amount: units and (two decimals) subunits, or a decimal amount of units, or with a
        scale noun ("five million dollars")."""
        whole, fraction, _ = split_number(token, self)
        n = int(whole)
        minus = f"{self.minus} " if negative else ""
        unit, sub = self.currencies[code].unit, self.currencies[code].subunit
        if scale:
            scale_noun = scale
            if scale in self.scale_abbreviations:
                one, many = self.scale_abbreviations[scale]
                scale_noun = one if n == 1 and not fraction else many
            amount = say_number(token, self)
            if not fraction:
                amount = self.before_noun(amount, self.scale_gender)
            return minus + self.count_phrase(f"{amount} {scale_noun}", unit.plural)
        if fraction and len(fraction) == 2 and sub is not None:
            cents = int(fraction)
            parts = []
            if n or not cents:
                parts.append(self.count(n, unit))
            if cents:
                parts.append(self.count(cents, sub))
            joiner = f" {self.money_and} " if self.money_and else " "
            return minus + joiner.join(parts)
        if fraction:
            return minus + self.count_phrase(say_number(token, self), unit.plural)
        return minus + self.count(n, unit)

    def say_degrees(self, token: str, *, negative: bool) -> str:
        """A number of degrees with the noun (the scale is added after it)."""
        _, fraction, _ = split_number(token, self)
        amount = say_number(token, self)
        if not fraction:
            amount = self.before_noun(amount, self.degree_gender)
        minus = f"{self.minus} " if negative else ""
        return f"{minus}{amount} {self.degree[0] if token == '1' else self.degree[1]}"

    # --- times, dates, ordinals, fractions, "&" ------------------------------------------------

    def time_words(self, hours: int, minutes: int) -> str:
        """A 24-hour time (0-23, 0-59): the hours, then the minutes if any."""
        h = cardinal(hours, self)
        return f"{h} {cardinal(minutes, self)}" if minutes else h

    def date_words(self, day: int, month: int, year_number: int, before: str) -> str:
        """A valid date (``before``: the text before it): cardinal day, month, year."""
        return f"{cardinal(day, self)} {self.months[month - 1]} {year(year_number, self)}"

    def say_ordinal(self, m: re.Match) -> str:
        """A match of ``ordinal_pattern`` (group 1 the number) as words; returning the match
        unchanged leaves it to the other rules."""
        return ordinal(int(m.group(1)), self)

    def fraction_name(self, numerator: int, denominator: int) -> str | None:
        """A simple fraction's name ("three quarters"), or None to read it with "slash"."""
        return self.fractions.get((numerator, denominator))

    def ampersand(self, after: str) -> str:
        """What "&" between two words is said as (``after``: the next three characters)."""
        return f" {self.and_word} "

    def rules_after_times(self) -> tuple[Rule, ...]:
        """Rules of the language's own, applied after the times (German "03.10.2024")."""
        return ()

    def rules_before_years(self) -> tuple[Rule, ...]:
        """Rules of the language's own, applied before the years (English "the 1990s")."""
        return ()
