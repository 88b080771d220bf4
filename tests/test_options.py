"""SpeechOptions: every field checked once, where the options are built, with a one-line error that
names it; the keyword form and the options form are one thing; the command lines and the server
word the same errors for their users."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from voxtral_tts import SpeechOptions
from voxtral_tts.errors import OptionError, TextError, VoxtralError


@pytest.mark.parametrize("fields, field, message", [
    ({"seed": -1}, "seed", "seed must be between 0 and 2^63 - 1, got -1"),
    ({"seed": 2**63}, "seed", "seed must be between 0 and 2^63 - 1"),
    ({"seed": True}, "seed", "seed must be between 0 and 2^63 - 1, got True"),
    ({"seed": 1.5}, "seed", "seed must be between"),
    ({"seed": 1, "noise": np.zeros((2, 36), np.float32)}, "seed", "give either seed or noise, not both"),
    ({"temperature": 2.5}, "temperature", "temperature must be a number from 0 (greedy) to 2, got 2.5"),
    ({"temperature": "1"}, "temperature", "temperature must be a number"),
    ({"max_frames": 0}, "max_frames", "max_frames must be at least 1, got 0"),
    ({"max_frames": 2.0}, "max_frames", "max_frames must be at least 1"),
    ({"part_chars": 0}, "part_chars", "part_chars must be at least 1, got 0"),
    ({"normalize": "yes"}, "normalize", "normalize must be true or false"),
    ({"expressiveness": 0.5}, "expressiveness", "expressiveness must be a number from 1.0 to 100"),
    ({"expressiveness": float("inf")}, "expressiveness", "expressiveness must be a number from 1.0 to 100"),
    ({"expressiveness": float("nan")}, "expressiveness", "expressiveness must be a number"),
    ({"expressiveness": "2"}, "expressiveness", "expressiveness must be a number"),
    ({"expressiveness": True}, "expressiveness", "expressiveness must be a number"),
])
def test_each_bad_field_is_one_line_naming_it(fields, field, message):
    with pytest.raises(OptionError) as caught:
        SpeechOptions(**fields)
    assert caught.value.field == field
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_language_is_the_normalisers_error():
    with pytest.raises(TextError, match="unknown language 'xx'"):
        SpeechOptions(language="xx")
    assert SpeechOptions(language="pt_BR").language == "pt"  # resolved once, where it is built


def test_options_are_frozen_and_checked_values_kept():
    options = SpeechOptions(voice="casual_male", seed=3, temperature=1)
    assert options.temperature == 1.0 and isinstance(options.temperature, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 4  # type: ignore[misc]


def test_build_from_fields_or_options():
    base = SpeechOptions(voice="casual_male", seed=3)
    assert SpeechOptions.build(None, voice="casual_male", seed=3) == base
    assert SpeechOptions.build(base) is base
    assert SpeechOptions.build(base, seed=4) == SpeechOptions(voice="casual_male", seed=4)
    with pytest.raises(OptionError, match="max_frames must be at least 1"):
        SpeechOptions.build(base, max_frames=0)  # a replaced field is checked like a new one
    with pytest.raises(VoxtralError, match="unknown speech option sed; the options are voice, seed"):
        SpeechOptions.build(None, sed=3)
    with pytest.raises(VoxtralError, match="options must be SpeechOptions, got str"):
        SpeechOptions.build("casual_male")  # type: ignore[arg-type]


def test_flag_wording_for_command_lines():
    with pytest.raises(OptionError) as caught:
        SpeechOptions(max_frames=0)
    assert caught.value.flag() == "--max-frames must be at least 1, got 0"


def test_keyword_fields_and_options_are_one_thing(reference_model_dir):
    import voxtral_tts

    tts = voxtral_tts.load(reference_model_dir, backend="torch", dtype="fp32", progress=False)
    options = SpeechOptions(voice="casual_male", seed=5, max_frames=4, temperature=0.7)
    by_options = tts.generate("Hello world.", options)
    by_fields = tts.generate("Hello world.", voice="casual_male", seed=5, max_frames=4, temperature=0.7)
    np.testing.assert_array_equal(by_options.codes, by_fields.codes)
    np.testing.assert_array_equal(by_options.audio, by_fields.audio)
    with pytest.raises(VoxtralError, match="unknown speech option voise"):
        tts.generate("Hello world.", voise="casual_male")


def test_voxtral_run_words_option_errors_as_flags(reference_model_dir, capsys):
    from voxtral_tts.cli import main

    assert main([str(reference_model_dir), "-t", "Hi.", "--max-frames", "0", "-o", "/tmp/unused.wav"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "voxtral-run: error: --max-frames must be at least 1, got 0"]


def test_voxtral_serve_checks_its_frame_cap_at_start(reference_model_dir, capsys):
    from voxtral_tts.server.cli import main

    assert main([str(reference_model_dir), "--max-frames", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "voxtral-serve: error: --max-frames must be at least 1, got 0"]
