"""Text normalisation before tokenisation: written forms rewritten as the words a speaker says.

``normalize_text(text, language)`` returns speakable text for the model: numbers, amounts,
percentages, times and ordinals become words in the chosen language (from ``num2words``; Hindi,
which ``num2words`` lacks, from its own tables), markdown and decorative typography are reduced
to plain text, and pictographs are dropped. It never raises on odd input (any Unicode; empty text
gives empty text), only on an unknown language (``TextError``), leaves no digit behind, and
normalising its output again changes nothing. Torch-free: the standard library and ``num2words``.

The rules apply in this order; the shared ones are written once, and each asks the language
object for its words and forms (no rule tests which language it is):

1. characters, 2. pictographs, 3. typography — :mod:`.text`
4. links, 5. markdown — :mod:`.markup`
6. numbers: dates, phone numbers, times, amounts, percentages, ordinals, degrees, fractions,
   years, numbers, ampersands — :mod:`.numbers` (the patterns and their order),
   :mod:`.number_words` (numbers as words, ``num2words``)
7. punctuation and whitespace — :mod:`.text`

A language is one module (:mod:`.en`, :mod:`.fr`, :mod:`.es`, :mod:`.de`, :mod:`.it`, :mod:`.pt`,
:mod:`.nl`, :mod:`.ar`, :mod:`.hi`) that defines ``LANGUAGE``, a :class:`~.language.Language`
(fields: its words and number conventions; methods: hooks for what needs more than a word), and
whose docstring states its rules. The line below that registers the built-in modules is the one
place that lists them; :func:`~.registry.register` adds another at run time.
"""

from __future__ import annotations

from . import ar, de, en, es, fr, hi, it, nl, pt
from .language import Language
from .markup import speak_links, speak_new_links, unwrap_markdown
from .numbers import expand_numbers, speak_ampersands
from .registry import lookup, register, registered
from .text import clean_characters, drop_pictographs, finish, fold_typography, tidy_punctuation

for _module in (en, fr, es, de, it, pt, nl, ar, hi):
    register(_module.LANGUAGE)

#: the codes of the built-in languages
LANGUAGES = registered()

__all__ = ["LANGUAGES", "Language", "normalize_text", "register", "resolve_language"]


def normalize_text(text: str, language: str = "en") -> str:
    """``text`` rewritten as speakable words in ``language`` (one of ``LANGUAGES``, or one
    registered since; a region suffix such as ``en-US`` or ``pt_BR`` is accepted and ignored)."""
    lang = lookup(language)
    if not text:
        return ""
    text = clean_characters(text)
    text = drop_pictographs(text)
    text = fold_typography(text)
    text = speak_links(text, lang)
    text = unwrap_markdown(text, lang)
    text = expand_numbers(text, lang)
    text = speak_ampersands(text, lang)  # after the numbers: "5&6" → "five and six"
    text = tidy_punctuation(text)
    text = speak_new_links(text, lang)  # "5.com" became "five.com"
    return finish(text)


def resolve_language(language: str) -> str:
    """``language`` as the code of a registered language (``en-US`` → ``en``), or TextError."""
    return lookup(language).code
