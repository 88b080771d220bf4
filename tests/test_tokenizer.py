"""Tests of voxtral_tts.tokenizer: text ids and speech prompts against the spec's goldens and mistral_common."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from voxtral_tts.errors import TokenizerError
from voxtral_tts.tokenizer import Tekken

# Spec §4.4: voice -> N ([AUDIO] placeholders = rows of the voice embedding).
VOICE_NUM_AUDIO_TOKENS = {
    "casual_female": 214, "casual_male": 147, "cheerful_female": 132, "neutral_female": 218,
    "neutral_male": 169, "pt_male": 144, "pt_female": 175, "nl_male": 138, "nl_female": 146,
    "it_male": 168, "it_female": 172, "fr_male": 97, "fr_female": 97, "es_male": 208,
    "es_female": 138, "de_male": 163, "de_female": 147, "ar_male": 67, "hi_male": 94, "hi_female": 86,
}

# Spec §3.3: golden text ids (the 6-row table, then the behavioural facts).
GOLDEN_TEXT_IDS = {
    "Hello.": [22177, 1046],
    "Paris is a beautiful city!": [42572, 1395, 1261, 15568, 5970, 1033],
    "Grüße aus München — die Straße ist schön.":
        [20560, 1671, 9755, 3558, 28943, 2251, 1828, 27277, 3444, 63844, 1046],
    "Ciao! Però... non è così, vero?":
        [1067, 37477, 1033, 105315, 2880, 2767, 4847, 20063, 1044, 46712, 1063],
    "مرحبا كيف حالك؟": [4341, 1708, 26986, 24675, 17086, 1559, 6944],
    "Numbers 1234567890 and symbols !@#$%^&*() plus   spaces.":
        [45508, 1032, *range(1049, 1058), 1048, 1321, 26414, 2662, 1064, 1035, 1036, 1037, 1094,
         1038, 1042, 1690, 2984, 1256, 18971, 1046],
    "1234567890": [*range(1049, 1058), 1048],
    "Tab\tand\nnewline handling.": [16256, 1009, 1421, 1010, 3080, 2839, 21490, 1046],
}

HELLO_WORLD_IDS = [1072, 1522, 1111, 1285, 1270, 1543, 1046]  # "Hello world." with the fixture vocab


# ---------------------------------------------------------------- the fixture tekken.json


@pytest.fixture(scope="module")
def tiny(reference_model_dir: Path) -> Tekken:
    return Tekken.from_file(reference_model_dir / "tekken.json")


def test_fixture_text_ids(tiny: Tekken):
    assert tiny.encode("Hello world.") == HELLO_WORLD_IDS
    assert tiny.encode("") == []


def test_fixture_special_ids_and_voices(tiny: Tekken):
    assert (tiny.bos_id, tiny.audio_id, tiny.begin_audio_id) == (1, 24, 25)
    assert (tiny.next_audio_text_id, tiny.repeat_audio_text_id) == (36, 35)
    assert tiny.special_id("</s>") == 2
    assert tiny.voice_num_audio_tokens == {"casual_male": 5, "neutral_female": 3}


def test_fixture_speech_prompt(tiny: Tekken):
    n = tiny.voice_num_audio_tokens["casual_male"]
    assert tiny.speech_prompt(tiny.encode("Hello world."), n) == [
        1, 25, 24, 24, 24, 24, 24, 36, 1072, 1522, 1111, 1285, 1270, 1543, 1046, 35, 25]


def test_fixture_identity_and_directory_loading(tiny: Tekken, reference_model_dir: Path):
    path = reference_model_dir / "tekken.json"
    assert tiny.path == path
    assert tiny.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    from_dir = Tekken.from_file(str(reference_model_dir))
    assert (from_dir.path, from_dir.sha256) == (path, tiny.sha256)


def test_special_strings_are_plain_text(tiny: Tekken):
    ids = tiny.encode("[AUDIO]")
    assert 24 not in ids and all(i >= 1000 for i in ids)
    assert tiny.encode("<s>[BEGIN_AUDIO]") == tiny.encode("<s>") + tiny.encode("[BEGIN_AUDIO]")


def test_voice_table_matches_spec(spec_dir: Path):
    """Guards the hand-written table above against typos: parse the rows of spec §4.4."""
    text = (spec_dir / "voxtral-tts-2603.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+) \| \d+ \| (\d+) \| [\d.]+ \|$", text, flags=re.M)
    assert {name: int(n) for name, n in rows} == VOICE_NUM_AUDIO_TOKENS


# ---------------------------------------------------------------- full-vocabulary synthetic v7 file


@pytest.fixture(scope="module")
def full_path(tmp_path_factory, reference_model_dir: Path) -> Path:
    """A v7 tekken.json: the Tekken vocabulary bundled with mistral_common (tekken_240911.json, v3,
    no special_tokens) + the fixture's 1000 real special-token names + the spec §4.4 voice table.
    This is all mistral_common's encode_speech_request needs: the `audio` section gives it an audio
    encoder and the voice table; the `special_tokens` names give it [AUDIO], [BEGIN_AUDIO],
    [NEXT_AUDIO_TEXT] and [REPEAT_AUDIO_TEXT]. The bundled file's `image` section is dropped."""
    mistral_common = pytest.importorskip("mistral_common")
    bundled = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    base = json.loads(bundled.read_text(encoding="utf-8"))
    fixture = json.loads((reference_model_dir / "tekken.json").read_text(encoding="utf-8"))
    assert len(fixture["special_tokens"]) == 1000
    data = {
        "config": dict(base["config"], version="v7", default_vocab_size=131072,
                       default_num_special_tokens=1000),
        "vocab": base["vocab"],
        "special_tokens": fixture["special_tokens"],
        "audio": dict(fixture["audio"], voice_num_audio_tokens=VOICE_NUM_AUDIO_TOKENS),
    }
    path = tmp_path_factory.mktemp("tekken-full") / "tekken.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def full(full_path: Path) -> Tekken:
    return Tekken.from_file(full_path)


@pytest.fixture(scope="module")
def reference(full_path: Path):
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    return MistralTokenizer.from_file(str(full_path))


@pytest.mark.parametrize("text", list(GOLDEN_TEXT_IDS))
def test_golden_text_ids(full: Tekken, text: str):
    assert full.encode(text) == GOLDEN_TEXT_IDS[text]


def test_space_before_digit_is_its_own_token(full: Tekken):
    assert full.encode(" 7") == [1032, 1055]


def test_full_special_ids_and_voices(full: Tekken):
    assert [full.bos_id, full.audio_id, full.begin_audio_id, full.next_audio_text_id,
            full.repeat_audio_text_id] == [1, 24, 25, 36, 35]
    assert full.voice_num_audio_tokens == VOICE_NUM_AUDIO_TOKENS


def test_vocab_is_truncated_to_default_vocab_size(full: Tekken, full_path: Path, reference):
    """Vocab entries 130072.. are not merge candidates: a tail token must not come out as one id."""
    vocab = json.loads(full_path.read_text(encoding="utf-8"))["vocab"]
    tail = next(e["token_str"] for e in vocab[130072:]
                if e["token_str"].isalpha() and e["token_str"].islower() and len(e["token_str"]) > 3)
    ids = full.encode(tail)
    assert len(ids) > 1 and max(ids) < 131072
    assert ids == reference.instruct_tokenizer.tokenizer.encode(tail, bos=False, eos=False)


SPEECH_REQUESTS = [
    ("Hello.", "ar_male"),
    ("Paris is a beautiful city!", "casual_male"),
    ("Grüße aus München — die Straße ist schön.", "de_female"),
    ("مرحبا كيف حالك؟", "hi_female"),
    ("Tab\tand\nnewline handling.", "fr_female"),
    ("[AUDIO] <s> [BEGIN_AUDIO] stay text 🎉", "neutral_female"),
]


@pytest.mark.parametrize("text, voice", SPEECH_REQUESTS)
def test_speech_prompt_matches_mistral_common(full: Tekken, reference, text: str, voice: str):
    from mistral_common.protocol.speech.request import SpeechRequest

    expected = reference.encode_speech_request(SpeechRequest(input=text, voice=voice)).tokens
    n = full.voice_num_audio_tokens[voice]
    prompt = full.speech_prompt(full.encode(text), n)
    assert prompt == expected
    assert prompt.count(24) == n and len(prompt) == n + len(full.encode(text)) + 5


def test_spec_prompt_examples(full: Tekken):
    hello = full.speech_prompt(full.encode("Hello."), full.voice_num_audio_tokens["ar_male"])
    assert hello == [1, 25, *[24] * 67, 36, 22177, 1046, 35, 25] and len(hello) == 74
    paris = full.speech_prompt(full.encode("Paris is a beautiful city!"),
                               full.voice_num_audio_tokens["casual_male"])
    assert paris == [1, 25, *[24] * 147, 36, 42572, 1395, 1261, 15568, 5970, 1033, 35, 25]
    assert len(paris) == 158


# ---------------------------------------------------------------- errors


def _fixture_data(reference_model_dir: Path) -> dict:
    return json.loads((reference_model_dir / "tekken.json").read_text(encoding="utf-8"))


def _write(tmp_path: Path, payload) -> Path:
    path = tmp_path / "tekken.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return path


def test_missing_file(tmp_path: Path):
    with pytest.raises(TokenizerError, match=r"nope\.json.*cannot read"):
        Tekken.from_file(tmp_path / "nope.json")
    with pytest.raises(TokenizerError, match=r"tekken\.json.*cannot read"):
        Tekken.from_file(tmp_path)  # a directory without tekken.json


def test_invalid_json(tmp_path: Path):
    with pytest.raises(TokenizerError, match=r"tekken\.json: invalid JSON"):
        Tekken.from_file(_write(tmp_path, '{"config": {'))


def test_legacy_bare_array(tmp_path: Path, reference_model_dir: Path):
    with pytest.raises(TokenizerError, match=r"tekken\.json: .*legacy bare-array"):
        Tekken.from_file(_write(tmp_path, _fixture_data(reference_model_dir)["vocab"]))


def test_old_version(tmp_path: Path, reference_model_dir: Path):
    data = _fixture_data(reference_model_dir)
    data["config"]["version"] = "v3"
    with pytest.raises(TokenizerError, match=r"tekken\.json: is version v3; speech prompts need v7 or later"):
        Tekken.from_file(_write(tmp_path, data))


def test_newer_version_and_no_version_are_accepted(tmp_path: Path, reference_model_dir: Path):
    data = _fixture_data(reference_model_dir)
    data["config"]["version"] = "v11"
    assert Tekken.from_file(_write(tmp_path, data)).encode("Hello world.") == HELLO_WORLD_IDS
    del data["config"]["version"]
    assert Tekken.from_file(_write(tmp_path, data)).encode("Hello world.") == HELLO_WORLD_IDS


def test_missing_special_token(tmp_path: Path, reference_model_dir: Path):
    data = _fixture_data(reference_model_dir)
    data["special_tokens"] = [t for t in data["special_tokens"] if t["token_str"] != "[AUDIO]"]
    with pytest.raises(TokenizerError, match=r"tekken\.json: lacks the special token '\[AUDIO\]'"):
        Tekken.from_file(_write(tmp_path, data))


def test_special_id_unknown_name(tiny: Tekken):
    with pytest.raises(TokenizerError, match=r"\[NO_SUCH_TOKEN\]"):
        tiny.special_id("[NO_SUCH_TOKEN]")


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d["config"].pop("pattern"), r"'config\.pattern' is missing"),
    (lambda d: d["config"].update(default_vocab_size="2048"), r"'config\.default_vocab_size' must be an integer"),
    (lambda d: d.pop("special_tokens"), r"'special_tokens' is missing"),
    (lambda d: d["vocab"][300].update(rank=7), r"vocab entry 300 is malformed"),
    (lambda d: d["vocab"][10].update(token_bytes="QQ=="), r"vocab entry 10 is malformed"),
    (lambda d: d["vocab"][5].update(token_bytes="not base64!"), r"vocab entry 5 is malformed"),
])
def test_malformed_fields(tmp_path: Path, reference_model_dir: Path, breakage, message):
    data = _fixture_data(reference_model_dir)
    breakage(data)
    with pytest.raises(TokenizerError, match=r"tekken\.json: .*" + message):
        Tekken.from_file(_write(tmp_path, data))


def test_random_models_can_take_the_released_vocabulary(tmp_path):
    """``python -m voxtral_tts.testing --vocab tekken`` (the default for --size full): a random model
    whose prompts have the released tokenizer's ids and token counts, for speed work."""
    pytest.importorskip("mistral_common")
    from voxtral_tts.testing import main, tiny_params, write_random_model

    # the released vocabulary size: only its first 131072 - 1000 entries are merge candidates
    model = write_random_model(tmp_path / "m", tiny_params(vocab_size=131072), checkpoint=False, vocabulary="tekken")
    tekken = Tekken.from_file(model)
    for text, ids in GOLDEN_TEXT_IDS.items():
        assert tekken.encode(text) == ids
    byte_level = Tekken.from_file(write_random_model(tmp_path / "b", tiny_params(), checkpoint=False))
    assert len(byte_level.encode("Paris is a beautiful city!")) == 26  # one token a byte
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "x"), "--vocab", "words"])
    assert exit_.value.code == 2
