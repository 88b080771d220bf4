"""Rules 4 and 5 of the pipeline: links and markdown — shared, with the language's words for
"dot" and "at" and its sentence end.

==================  ===================================  ===========================================
rule                input                                output
==================  ===================================  ===========================================
4. links            ``https://www.example.com/a?b=1``    ``example dot com`` (host only)
                    ``ana.b@mail.org``                   ``ana dot b at mail dot org``
5. markdown         ``# Title``, ``- item``, ``1. item``  ``Title.``, ``item.`` (a period added if
                                                         there is no final punctuation; the same
                                                         at a blank line between paragraphs)
                    ``**b**`` ``*i*`` ``_i_`` ```c```    ``b`` ``i`` ``i`` ``c``
                    ``[text](url)`` ``![alt](url)``      ``text`` ``alt``; ``> ``, fences and
                                                         rules (``---``) dropped
==================  ===================================  ===========================================

A line the language marks as ``not_a_list_item`` (German "3. Oktober ...") keeps its number.
Addresses that appear only once digits became words ("a@1.com" → "a@one.com") are read after
the number rules (:func:`speak_new_links`).
"""

from __future__ import annotations

import re

from .language import Language

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


def _speak_host(host: str, lang: Language) -> str:
    labels = [label for label in host.lower().split(".") if any(c.isalnum() for c in label)]
    return f" {lang.dot} ".join(labels)


def _speak_url(m: re.Match, lang: Language) -> str:
    url = m.group()
    tail = ""
    while url and url[-1] in _TRAILING_PUNCTUATION:
        url, tail = url[:-1], url[-1] + tail
    host = re.split(r"[/?#:]", _SCHEME.sub("", url), maxsplit=1)[0]
    return (_speak_host(host, lang) if host else "") + tail


def _speak_email(m: re.Match, lang: Language) -> str:
    user, host = m.group().split("@", 1)
    return f"{_speak_host(user, lang)} {lang.at} {_speak_host(host, lang)}"


def speak_links(text: str, lang: Language) -> str:
    """E-mail addresses and URLs in a speakable form: "user dot name at example dot com"; a URL
    is read as its host without "www." (scheme, port, path, query and fragment are dropped)."""
    text = _AUTOLINK.sub(r"\1", text)
    text = _EMAIL.sub(lambda m: _speak_email(m, lang), text)
    text = _URL.sub(lambda m: _speak_url(m, lang), text)
    return _speak_bare_domains(text, lang)


def _speak_bare_domains(text: str, lang: Language) -> str:
    return _BARE_DOMAIN.sub(lambda m: _speak_url(m, lang), text)


def speak_new_links(text: str, lang: Language) -> str:
    """Addresses that appeared once digits became words ("a@1.com" → "a@one.com")."""
    text = _EMAIL.sub(lambda m: _speak_email(m, lang), text)
    return _speak_bare_domains(text, lang)


# --- 5. markdown ----------------------------------------------------------------------------------

_FENCE = re.compile(r"^[ \t]*(?:```|~~~).*$", re.M)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^[ \t]*(?:[-*+•‣◦▪▸►]|\d{1,3}[.)])(?:[ \t]+(?:\[[ xX]\][ \t]+)?(.*))?$")
_QUOTE_MARKER = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^>\s]+|[^>\s@]+@[^>\s]+)>")
_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)", re.S)
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])|"
                     r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])", re.S)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S)
_FINAL_PUNCTUATION = re.compile(r"[.!?…:;؟।][\"'”’»)\]]*$")


def _end_sentence(line: str, lang: Language) -> str:
    """The line with a sentence end added if it has no final punctuation."""
    line = line.rstrip()
    if line and not _FINAL_PUNCTUATION.search(line):
        line += lang.sentence_end
    return line


def unwrap_markdown(text: str, lang: Language) -> str:
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
            if lang.not_a_list_item and lang.not_a_list_item.match(unquoted):
                marker = None
            if not marker and unquoted == line:
                break
            line, item = (marker.group(1) or "", True) if marker else (unquoted, item)
        lines.append(_end_sentence(line, lang) if item else line)
    return "\n".join(lines)


