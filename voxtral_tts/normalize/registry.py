"""The registered languages: the one place that maps a code to its :class:`~.language.Language`.

The package's ``__init__`` registers the built-in languages, in the order of ``LANGUAGES``;
:func:`register` adds another (a language module of one's own) at run time.
"""

from __future__ import annotations

import re

from ..errors import TextError
from .language import CURRENCY_SYMBOLS, Language

_REGISTERED: dict[str, Language] = {}
_CODE = re.compile(r"[a-z]{2,3}")


def register(language: Language) -> Language:
    """Make ``language`` one that ``normalize_text`` accepts by its code; returns it. Refused
    (ValueError): a code taken already or not 2-3 lowercase letters, other than 12 months, and a
    currency of :data:`~.language.CURRENCY_SYMBOLS` with no name (unless ``say_money`` is the
    language's own)."""
    if not isinstance(language, Language):
        raise TypeError(f"not a Language: {language!r}")
    if not _CODE.fullmatch(language.code):
        raise ValueError(f"a language code is 2 or 3 lowercase letters, not {language.code!r}")
    if language.code in _REGISTERED:
        raise ValueError(f"language {language.code!r} is registered already")
    if len(language.months) != 12:
        raise ValueError(f"language {language.code!r} names {len(language.months)} months, not 12")
    missing = set(CURRENCY_SYMBOLS.values()) - set(language.currencies)
    if missing and type(language).say_money is Language.say_money:
        raise ValueError(f"language {language.code!r} has no name for {', '.join(sorted(missing))}")
    _REGISTERED[language.code] = language
    return language


def registered() -> tuple[str, ...]:
    """The codes of the registered languages, in the order they were registered."""
    return tuple(_REGISTERED)


def lookup(language: str) -> Language:
    """The registered language of ``language`` (case and a region suffix such as ``en-US`` or
    ``pt_BR`` ignored), or TextError naming the registered codes."""
    code = re.split(r"[-_]", str(language).strip().lower(), maxsplit=1)[0]
    if code not in _REGISTERED:
        raise TextError(f"unknown language {language!r}: use one of {', '.join(_REGISTERED)}")
    return _REGISTERED[code]
