"""Voice files read without torch, the voice table, aliases, and the errors a user can hit."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from voxtral_tts.errors import VoiceError
from voxtral_tts.tensors import float32_to_bf16, write_safetensors
from voxtral_tts.tokenizer import Tekken
from voxtral_tts.voices import OPENAI_ALIASES, VoiceBank, read_voice_file, voice_language


@pytest.fixture(scope="module")
def bank(reference_model_dir):
    tok = Tekken.from_file(reference_model_dir)
    return VoiceBank(reference_model_dir / "voice_embedding", tok.voice_num_audio_tokens, 64)


def test_pt_read_without_torch_equals_torch_load(reference_model_dir):
    torch = pytest.importorskip("torch")
    for name in ("casual_male", "neutral_female"):
        path = reference_model_dir / "voice_embedding" / f"{name}.pt"
        ours = read_voice_file(path)
        theirs = torch.load(path, map_location="cpu", weights_only=True).float().numpy()
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(ours, read_voice_file(path.with_suffix(".safetensors")))


def test_voice_table_and_aliases(bank):
    assert bank.names == ["casual_male", "neutral_female"]
    assert bank.get("casual_male").embedding.shape == (5, 64)
    assert bank.get("neutral_female").n_audio_tokens == 3
    assert bank.get("echo").name == "casual_male" and bank.get("ALLOY").name == "neutral_female"
    assert bank.get(None).name == "neutral_female"  # default: alloy's voice
    assert bank.aliases == {"alloy": "neutral_female", "echo": "casual_male"}
    assert OPENAI_ALIASES["shimmer"] == "fr_female" and voice_language("fr_female") == "fr"


def test_unknown_voice_lists_the_available_ones(bank):
    with pytest.raises(VoiceError, match="unknown voice 'nova'; available: casual_male, neutral_female"):
        bank.get("nova")  # an alias whose voice this model lacks


def test_custom_voice_file(bank, tmp_path):
    rows = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    bits = float32_to_bf16(rows)
    path = tmp_path / "mine.safetensors"
    write_safetensors(path, {"embedding": ("BF16", (4, 64))}, lambda _: bits)
    voice = bank.get(str(path))
    assert voice.name == "mine" and voice.embedding.shape == (4, 64)
    with pytest.raises(VoiceError, match="not found"):
        bank.get(str(tmp_path / "absent.pt"))
    write_safetensors(path, {"embedding": ("BF16", (4, 32))}, lambda _: bits[:, :32].copy())
    with pytest.raises(VoiceError, match="width 32, this model's backbone takes 64"):
        bank.get(path)


def test_row_count_must_match_the_tokenizer_table(reference_model_dir, tmp_path):
    shutil.copytree(reference_model_dir / "voice_embedding", tmp_path / "v")
    bank = VoiceBank(tmp_path / "v", {"casual_male": 6, "neutral_female": 3}, 64)
    with pytest.raises(VoiceError, match="has 5 rows but tekken.json lists 6"):
        bank.get("casual_male")


def test_corrupt_and_truncated_pt(reference_model_dir, tmp_path):
    data = (reference_model_dir / "voice_embedding" / "casual_male.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[:300])
    with pytest.raises(VoiceError, match="corrupt or truncated"):
        read_voice_file(bad)
    bad.write_bytes(b"not a zip")
    with pytest.raises(VoiceError, match="corrupt or truncated"):
        read_voice_file(bad)


def test_pt_with_foreign_objects_is_refused(tmp_path):
    """The unpickler accepts only a saved tensor: arbitrary classes are never constructed."""
    import pickle

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(eval))
    with pytest.raises(VoiceError, match="unsupported object builtins.eval"):
        read_voice_file(path)
