"""The seed's interface: hub ids in every entry point (offline, from a hub cache made here), any
length to a file, output formats from the extension, ``--max-tokens``, case-insensitive voices."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from voxtral_tts.errors import VoxtralError
from voxtral_tts.hub import is_hub_id, model_path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory, tiny_model_dir) -> Path:
    """``$HF_HOME`` whose hub cache holds the tiny model as ``test-org/voxtral-tiny`` (the layout
    huggingface_hub writes: blobs behind snapshots/<commit>/, refs/main naming the commit)."""
    home = tmp_path_factory.mktemp("hf")
    repo = home / "hub" / "models--test-org--voxtral-tiny"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(tiny_model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return home


def run(args, hub_home, cwd, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def test_hub_ids_are_told_from_paths(tmp_path, monkeypatch):
    assert is_hub_id("mistralai/Voxtral-4B-TTS-2603") and is_hub_id("a/b")
    for text in ("./a", "/abs/path", "a/b/c", "a", "../x/y", "a/.."):
        assert not is_hub_id(text), text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not is_hub_id("org/name")  # a directory here wins
    assert model_path("org/name") == Path("org/name")
    with pytest.raises(VoxtralError, match="not a directory .* or a Hugging Face hub id"):
        model_path("no_such_dir")


@pytest.mark.slow  # voxtral-run in a subprocess
def test_voxtral_run_takes_a_hub_id_offline(hub_home, tmp_path):
    out = tmp_path / "hi.wav"
    proc = run(["voxtral_tts.cli", "test-org/voxtral-tiny", "-t", "Hi.", "-o", str(out), "--dtype", "fp32",
                "--max-tokens", "3", "--seed", "1", "-v", "CASUAL_MALE"], hub_home, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with wave.open(str(out)) as w:
        assert w.getnframes() == 3 * 1920 and w.getframerate() == 24000


@pytest.mark.parametrize("command", ["voxtral_tts.cli", "voxtral_tts.server.cli", "voxtral_tts.export.cli"])
def test_a_hub_id_not_cached_offline_is_one_line(hub_home, tmp_path, command):
    args = [command, "test-org/absent"] + (["-o", str(tmp_path / "e")] if "export" in command else []) + \
        (["-t", "Hi."] if command == "voxtral_tts.cli" else [])
    proc = run(args, hub_home, tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "test-org/absent: not in the local hub cache" in errors[0], proc.stderr
    assert errors[0] == proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr


@pytest.mark.slow  # a subprocess that loads the torch backend and generates
def test_load_takes_a_hub_id(hub_home, tmp_path):
    code = ("import voxtral_tts; tts = voxtral_tts.load('test-org/voxtral-tiny', backend='torch', dtype='fp32', "
            "progress=False); print(len(tts.generate('Hi.', max_frames=2, seed=0).codes))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr[-2000:]


# --- voxtral-run: any length, formats, options -------------------------------------------------------

@pytest.fixture(scope="module")
def run_main():
    from voxtral_tts.cli import main

    return main


@pytest.mark.parametrize("suffix", [".mp3", ".opus", ".ogg", ".flac", ".aac", ".pcm"])
def test_output_format_from_the_extension(run_main, tiny_engine_dir, tmp_path, suffix):
    pytest.importorskip("av")
    from voxtral_tts.encoding import EXTENSIONS

    out = tmp_path / f"speech{suffix}"
    assert run_main([str(tiny_engine_dir), "-t", "Hi there.", "-o", str(out), "--max-frames", "6", "--seed", "2",
                     "-q"]) == 0
    data = out.read_bytes()
    if suffix == ".pcm":
        assert len(data) == 6 * 1920 * 2
        return
    import av

    with av.open(str(out)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    assert abs(samples / rate - 6 * 0.08) < 0.1, (EXTENSIONS[suffix], samples, rate)


def test_default_output_is_output_wav_and_unknown_types_are_refused(run_main, tiny_engine_dir, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main([str(tiny_engine_dir), "-t", "Hi.", "--max-frames", "2", "-q"]) == 0
    assert (tmp_path / "output.wav").stat().st_size == 44 + 2 * 1920 * 2
    assert run_main([str(tiny_engine_dir), "-t", "Hi.", "-o", "x.txt", "-q"]) == 2
    assert "unknown audio file type" in capsys.readouterr().err


def test_any_length_to_a_file_part_by_part(run_main, tiny_engine_dir, tmp_path):
    """Over 4096 characters (the server's limit, not the CLI's): every part is written, and the
    file equals the library's synthesis of the same text."""
    import voxtral_tts

    text = " ".join(f"Sentence number {i} is here." for i in range(180))  # ~5,000 characters
    assert len(text) > 4096
    (tmp_path / "long.txt").write_text(text)
    out = tmp_path / "long.wav"
    assert run_main([str(tiny_engine_dir), "--text-file", str(tmp_path / "long.txt"), "-o", str(out),
                     "--max-frames", "1", "--seed", "3", "-q"]) == 0
    tts = voxtral_tts.load(tiny_engine_dir)
    whole = tts.synthesize(text, max_frames=1, seed=3)
    assert len(whole.parts) >= 13
    from voxtral_tts.audio import read_wav, to_pcm16

    audio, rate = read_wav(out)
    assert rate == 24000 and len(audio) == len(whole.audio)
    np.testing.assert_array_equal(to_pcm16(audio), to_pcm16(whole.audio))


# --- normalisation on the request path ----------------------------------------------------------------

@pytest.fixture(scope="module")
def ort_tts(tiny_engine_dir):
    import voxtral_tts

    return voxtral_tts.load(tiny_engine_dir)


def test_normalised_by_default_in_the_voices_language_and_off_as_given(ort_tts, tmp_path):
    from voxtral_tts.errors import TextError
    from voxtral_tts.normalize import normalize_text

    tts = ort_tts
    assert tts.request("I have 3 apples.", voice="casual_male").parts == ("I have three apples.",)
    assert tts.request("J'ai 3 pommes.", voice="casual_male", language="fr").parts == ("J'ai trois pommes.",)
    assert tts.request("  I have 3 apples. ", voice="casual_male", normalize=False).parts == ("I have 3 apples.",)
    # a voice file speaks English unless told otherwise
    src = next(tts.voice_bank.directory.glob("casual_male.*"))
    mine = tmp_path / f"mine{src.suffix}"
    shutil.copy(src, mine)
    assert tts.request("Am 3. Oktober.", voice=str(mine)).parts == (normalize_text("Am 3. Oktober.", "en"),)
    assert tts.request("Am 3. Oktober.", voice=str(mine), language="de").parts == ("Am dritten Oktober.",)
    # the prompt's text ids: the tokenizer's (mistral_common's, tests/test_tokenizer.py) of what is spoken
    r = tts.generate("I have 3 apples.", voice="casual_male", max_frames=1, seed=0, normalize=False)
    n = tts.voice_bank.get("casual_male").n_audio_tokens
    assert r.prompt_ids[n + 3:-2].tolist() == tts.tokenizer.encode("I have 3 apples.")
    with pytest.raises(TextError, match="empty once normalised"):
        tts.request("👍👍", voice="casual_male")
    with pytest.raises(TextError, match="unknown language 'xx'"):
        tts.request("Hi.", voice="casual_male", language="xx", normalize=False)


def test_voice_names_are_case_insensitive(ort_tts):
    assert ort_tts.voice_bank.get("Casual_Male").name == "casual_male"
    assert ort_tts.voice_bank.get("ALLOY").name == "neutral_female"
