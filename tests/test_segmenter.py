"""The incremental segmenter (voxtral_tts.segmenter): its cuts per language and mode, and that the
cuts do not depend on how the text arrives — split at every character boundary, or fed one
character at a time, it gives the segments of the whole text."""

from __future__ import annotations

import random
import re

import pytest

from voxtral_tts.errors import TextError, VoxtralError
from voxtral_tts.segmenter import CLAUSE_CHARS, LONG_FORM_CHARS, RESPONSIVE_CHARS, Segmenter, segments
from voxtral_tts.text import MAX_CHUNK_CHARS, split_text

CASES = [
    # English: abbreviations, decimals, quotes after the stop, lower case after "?", initials,
    # acronyms, ellipses
    ("en", "Hello there. Mr. Smith paid $3.50 for it! \"Really?\" she asked. J. R. R. Tolkien lived in the "
           "U.S. for a while... Well... maybe not. See voxtral.ai (the site.) Then stop",
     ["Hello there.", "Mr. Smith paid $3.50 for it!", "\"Really?\" she asked.",
      "J. R. R. Tolkien lived in the U.S. for a while...", "Well... maybe not.", "See voxtral.ai (the site.)",
      "Then stop"]),
    # a numbered list (one line per item, no cut after the numbers), then a paragraph
    ("en", "1. Buy milk\n2. Buy eggs\n\nDone? Yes.", ["1. Buy milk\n2. Buy eggs", "Done?", "Yes."]),
    # German: "N." an ordinal before a month or a lower-case word, a number ending a sentence before a
    # capital; "z.B.", "Dr." abbreviations
    ("de", "Am 3. Oktober kam Dr. Weber. Das kostet 25. Die Leute kamen z.B. aus Berlin, die 2. und 3. "
           "Klasse auch. Ende.",
     ["Am 3. Oktober kam Dr. Weber.", "Das kostet 25.", "Die Leute kamen z.B. aus Berlin, die 2. und 3. Klasse auch.",
      "Ende."]),
    # French: the closing guillemet after a space, the space before "!" and "?", "M." an initial, "Mme"
    ("fr", "Il a dit « Oui. » Puis Mme Roux est partie. M. Dupont est là ! Quoi ? Rien.",
     ["Il a dit « Oui. »", "Puis Mme Roux est partie.", "M. Dupont est là !", "Quoi ?", "Rien."]),
    # Spanish: opening "¿" "¡" start the next sentence; "Sra." an abbreviation
    ("es", "¿Vienes? ¡Claro! La Sra. García llegó a las 3.30 hoy.",
     ["¿Vienes?", "¡Claro!", "La Sra. García llegó a las 3.30 hoy."]),
    ("it", "Il dott. Rossi è qui. Costa 3,5 euro. Bene!", ["Il dott. Rossi è qui.", "Costa 3,5 euro.", "Bene!"]),
    ("pt", "A Sra. Silva chegou. Tudo bem? Sim.", ["A Sra. Silva chegou.", "Tudo bem?", "Sim."]),
    ("nl", "Dhr. Jansen komt bijv. morgen. Prima!", ["Dhr. Jansen komt bijv. morgen.", "Prima!"]),
    # Hindi: the danda; "डॉ." (Dr.) an abbreviation
    ("hi", "नमस्ते। आप कैसे हैं? डॉ. शर्मा यहाँ हैं।", ["नमस्ते।", "आप कैसे हैं?", "डॉ. शर्मा यहाँ हैं।"]),
    # Arabic: its question mark; no case, so every stop before a space ends a sentence
    ("ar", "مرحبا. كيف حالك؟ أنا بخير.", ["مرحبا.", "كيف حالك؟", "أنا بخير."]),
    # wide stops need no space after them
    ("en", "这是第一句。这是第二句！好吗？", ["这是第一句。", "这是第二句！", "好吗？"]),
]

LONG = " ".join(f"Sentence number {i} is here, with a few more words in it." for i in range(30))
CLAUSES = ("This first clause is long enough to be spoken on its own, and this second one is also long enough "
           "to go alone; a third follows: short. Done.")
RUN_ON = "word " * 150 + "end."


def fed(text: str, pieces: list[str], language: str = "en", mode: str = "responsive") -> list[str]:
    segmenter = Segmenter(language, mode)
    out = []
    for piece in pieces:
        out += segmenter.push(piece)
    return out + segmenter.flush()


@pytest.mark.parametrize("language, text, expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_sentence_ends_per_language(language, text, expected):
    assert segments(text, language) == expected


@pytest.mark.parametrize("mode", ["responsive", "long_form"])
@pytest.mark.parametrize("language, text", [(c[0], c[1]) for c in CASES] + [("en", LONG), ("en", CLAUSES),
                                                                            ("en", RUN_ON)])
def test_every_split_gives_the_same_segments(language, text, mode):
    whole = segments(text, language, mode)
    assert re.sub(r"[\s,]", "", "".join(whole)) == re.sub(r"[\s,]", "", text)  # nothing lost, nothing added
    assert fed(text, list(text), language, mode) == whole  # one character at a time
    for k in range(len(text) + 1):  # and split in two at every boundary
        assert fed(text, [text[:k], text[k:]], language, mode) == whole, k
    rng = random.Random(7)
    for _ in range(20):  # and in random pieces
        cuts = sorted(rng.sample(range(1, len(text)), 6))
        assert fed(text, [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])], language, mode) == whole


def test_a_segment_is_released_as_soon_as_it_is_known_complete():
    segmenter = Segmenter("en")
    assert segmenter.push("Hello there.") == []  # "there." may still close with a quote or go on
    assert segmenter.push(" ") == []  # the next word decides (a lower-case one goes on)
    assert segmenter.push("How") == ["Hello there."]
    assert segmenter.pending == " How"
    assert segmenter.push(" are you") == [] and segmenter.flush() == ["How are you"]
    assert segmenter.pending == "" and segmenter.flush() == []


def test_responsive_cuts_long_clauses_and_caps_run_on_text():
    got = segments(CLAUSES, "en")
    assert got == ["This first clause is long enough to be spoken on its own,",
                   "and this second one is also long enough to go alone;", "a third follows: short.", "Done."]
    assert all(len(s) >= CLAUSE_CHARS for s in got[:2])
    capped = segments(RUN_ON, "en")
    assert all(len(s) <= RESPONSIVE_CHARS + 1 for s in capped) and capped[0].endswith("word,")
    assert " ".join(capped).replace(",", "") == RUN_ON.strip()


def test_long_form_segments_grow_to_the_part_size():
    got = segments(LONG, "en", "long_form")
    assert got[0] == "Sentence number 0 is here, with a few more words in it."  # the first sentence alone
    assert len(got[1]) >= LONG_FORM_CHARS[1] and len(got[2]) >= LONG_FORM_CHARS[2]
    assert all(len(s) > MAX_CHUNK_CHARS - 60 for s in got[3:-1])  # then whole sentences up to the cap
    assert all(len(s) <= MAX_CHUNK_CHARS for s in got)
    assert len(got[1]) < len(got[2]) < len(got[3])
    # no sentence end at all: the long-text splitter's cut
    assert segments(RUN_ON, "en", "long_form") == split_text(RUN_ON)


def test_errors():
    with pytest.raises(VoxtralError, match="streaming mode"):
        Segmenter("en", "fast")
    with pytest.raises(TextError, match="unknown language"):
        Segmenter("xx")
    with pytest.raises(VoxtralError, match="max_chars"):
        Segmenter("en", max_chars=0)
    with pytest.raises(VoxtralError, match="string"):
        Segmenter("en").push(b"bytes")
