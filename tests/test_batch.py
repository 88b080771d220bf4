"""Many texts in one run: the library's ``TTS.synthesize_many`` and ``voxtral-run --batch`` (files
written atomically, the two manifests, bad lines reported and skipped, a rerun resuming) — on the
tiny model in torch fp32, in process."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")

import voxtral_tts  # noqa: E402
from voxtral_tts import batch, cli  # noqa: E402
from voxtral_tts.audio import read_wav, to_pcm16  # noqa: E402
from voxtral_tts.errors import TextError, VoxtralError  # noqa: E402

FAST = ["--backend", "torch", "--dtype", "fp32", "--capacity", "256", "--max-frames", "4", "-q"]


@pytest.fixture(scope="module")
def tts(tiny_model_dir):
    return voxtral_tts.load(tiny_model_dir, backend="torch", dtype="fp32", capacity=256, max_batch=3, progress=False)


# --- the library ---------------------------------------------------------------------------------------

def test_synthesize_many_yields_each_result_as_it_finishes(tts):
    """Five items on three slots: every index once, each result that of the text alone; per-item
    options; a bad item raises, or is yielded with return_exceptions; stopping early cleans up."""
    texts = ["One.", "Two is a longer one, with more words.", "Three.", "Four here.", "Five and last."]
    items = [*texts[:4], (texts[4], voxtral_tts.SpeechOptions(seed=9, max_frames=3, voice="neutral_female"))]
    got = dict(tts.synthesize_many(items, voxtral_tts.SpeechOptions(seed=1, max_frames=5)))
    assert sorted(got) == [0, 1, 2, 3, 4]
    for i, text in enumerate(texts[:4]):
        alone = tts.synthesize(text, seed=1, max_frames=5)
        np.testing.assert_array_equal(got[i].audio, alone.audio)
    assert got[4].voice == "neutral_female" and got[4].n_frames == 3 and got[4].seed == 9

    bad = ["Fine.", "   ", "Also fine."]
    with pytest.raises(VoxtralError):
        list(tts.synthesize_many(bad, voxtral_tts.SpeechOptions(max_frames=2)))
    assert tts.scheduler.idle
    out = dict(tts.synthesize_many(bad, voxtral_tts.SpeechOptions(max_frames=2), return_exceptions=True))
    assert isinstance(out[1], VoxtralError) and out[0].n_frames == out[2].n_frames == 2

    many = tts.synthesize_many(["A."] * 10, voxtral_tts.SpeechOptions(max_frames=20))
    next(many)
    many.close()
    assert tts.scheduler.idle and sorted(tts.scheduler._loop.free) == [0, 1, 2]


# --- voxtral-run --batch -------------------------------------------------------------------------------

def write_lines(path, *lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def voxtral_run(model, batch_file, out_dir, *extra) -> int:
    return cli.main([str(model), "--batch", str(batch_file), "--out-dir", str(out_dir), *FAST, *map(str, extra)])


def read_manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_batch_writes_every_line_and_both_manifests(tiny_model_dir, tts, tmp_path):
    lines = write_lines(tmp_path / "lines.jsonl",
                        {"text": "Hello there.", "seed": 1, "file": "hello.wav"},
                        {"text": "A pipe | in it.", "voice": "neutral_female", "seed": 2, "format": "pcm"},
                        "",
                        {"text": "Third, 3 apples.", "seed": 3, "temperature": 0.5, "expressiveness": 1.5,
                         "max_frames": 3})
    out = tmp_path / "out"
    assert voxtral_run(tiny_model_dir, lines, out, "--max-batch", "3") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000002.pcm", "000004.wav", "hello.wav", "manifest.jsonl", "metadata.csv"]
    audio, rate = read_wav(out / "hello.wav")
    expected = tts.synthesize("Hello there.", seed=1, max_frames=4)
    assert rate == 24000
    np.testing.assert_array_equal(to_pcm16(audio), to_pcm16(expected.audio))
    pcm = np.frombuffer((out / "000002.pcm").read_bytes(), np.int16)
    assert len(pcm) == 4 * 1920

    entries = read_manifest(out)
    assert [e["file"] for e in entries] == ["hello.wav", "000002.pcm", "000004.wav"]
    first = entries[0]
    assert (
        first["id"] == "hello"
        and first["line"] == 1
        and first["voice"] == tts.voice_bank.get(None).name
        and first["seed"] == 1
    )
    assert first["duration"] == pytest.approx(4 * 0.08) and first["frames"] == 4 and first["finish_reason"] == "length"
    third = entries[2]
    assert third["text"] == "Third, 3 apples." and third["spoken"] == "Third, three apples."
    assert third["temperature"] == 0.5 and third["frames"] == 3 and third["language"] == "en"
    assert third["expressiveness"] == 1.5 and first["expressiveness"] is None  # None: the model's own
    with open(out / "metadata.csv", newline="") as f:  # LJSpeech: id|text|normalized text, no quoting
        rows = list(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["hello", "Hello there.", "Hello there."]
    assert rows[1][0] == "000002" and rows[1][1] == "A pipe in it." and len(rows) == 3


def test_bad_lines_are_reported_and_skipped(tiny_model_dir, tmp_path, capsys, monkeypatch):
    lines = write_lines(tmp_path / "lines.jsonl",
                        {"text": "Good one.", "seed": 1},
                        '{"text": "no closing brace"',
                        {"text": "Who?", "voice": "nobody"},
                        {"text": "   "},
                        {"text": "Too hot.", "temperature": 9},
                        {"text": "Odd field.", "speed": 2},
                        {"text": "Twice.", "file": "000001.wav"},
                        {"text": "Fails to be written.", "seed": 2},
                        {"text": "Good too.", "seed": 3, "file": "last"})
    real_replace = os.replace

    def replace(src, dst):  # the audio of line 8 cannot be renamed into place
        if str(dst).endswith("000008.wav"):
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(batch.os, "replace", replace)
    out = tmp_path / "out"
    assert voxtral_run(tiny_model_dir, lines, out) == 1
    err = capsys.readouterr().err
    for number, words in [(2, "invalid JSON"), (3, "nobody"), (4, "empty"), (5, "temperature"), (6, "speed"),
                          (7, "line 1 already writes"), (8, "disk gone")]:
        assert any(line.startswith(f"line {number}: ") and words in line for line in err.splitlines()), (number, err)
    assert sorted(p.name for p in out.iterdir()) == ["000001.wav", "last.wav", "manifest.jsonl", "metadata.csv"]
    assert [e["line"] for e in read_manifest(out)] == [1, 9]


def test_a_rerun_skips_what_is_done(tiny_model_dir, tmp_path, caplog, monkeypatch):
    lines = write_lines(tmp_path / "lines.jsonl", {"text": "First.", "seed": 1}, {"text": "Second.", "seed": 2})
    out = tmp_path / "out"
    assert voxtral_run(tiny_model_dir, lines, out) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.wav")}
    # a crash: the second entry's manifest line cut short, a temporary file left behind
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text(manifest[0] + "\n" + manifest[1][:20])
    (out / ".000002.wav.abc.partial").write_bytes(b"RIFF")
    write_lines(lines, {"text": "First.", "seed": 1}, {"text": "Second.", "seed": 2}, {"text": "Third.", "seed": 3})
    with caplog.at_level("INFO", logger="voxtral_tts"):
        assert voxtral_run(tiny_model_dir, lines, out) == 0
    assert "1 of 3 utterances already done" in caplog.text
    assert (out / "000001.wav").stat().st_mtime_ns == stamps["000001.wav"]  # not written again
    assert sorted(p.name for p in out.iterdir()) == ["000001.wav", "000002.wav", "000003.wav", "manifest.jsonl",
                                                     "metadata.csv"]
    assert [e["line"] for e in read_manifest(out)] == [1, 2, 3]
    assert len((out / "metadata.csv").read_text().splitlines()) == 3
    # a changed text is spoken again
    write_lines(lines, {"text": "First, changed.", "seed": 1}, {"text": "Second.", "seed": 2},
                {"text": "Third.", "seed": 3})
    caplog.clear()
    with caplog.at_level("INFO", logger="voxtral_tts"):
        assert voxtral_run(tiny_model_dir, lines, out) == 0
    assert "2 of 3 utterances already done" in caplog.text
    assert read_manifest(out)[0]["text"] == "First, changed." and len(read_manifest(out)) == 3
    # all done: the model is not even loaded
    monkeypatch.setattr(batch, "open_tts", lambda *a, **k: pytest.fail("loaded the model for nothing"))
    assert voxtral_run(tiny_model_dir, lines, out) == 0


def test_batch_usage_errors(tiny_model_dir, tmp_path, capsys):
    assert voxtral_run(tiny_model_dir, tmp_path / "missing.jsonl", tmp_path / "out") == 2
    assert "no such batch file" in capsys.readouterr().err
    lines = write_lines(tmp_path / "lines.jsonl", {"text": "Hi."})
    assert cli.main([str(tiny_model_dir), "--batch", str(lines), *FAST]) == 2
    assert "--batch needs --out-dir" in capsys.readouterr().err
    assert cli.main([str(tiny_model_dir), "-t", "Hi.", "--out-dir", str(tmp_path), *FAST]) == 2
    assert "--out-dir applies with --batch" in capsys.readouterr().err
    assert voxtral_run(tiny_model_dir, lines, tmp_path / "out", "--temperature", "9") == 2
    assert "--temperature" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tiny_model_dir), "--batch", str(lines), "-t", "Hi.", "--out-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert not (tmp_path / "out").exists()


def test_parse_line_names_what_is_wrong(tts):
    defaults = {"voice": None, "seed": None, "temperature": 0.0, "max_frames": None, "normalize": True,
                "language": None}
    line = batch.parse_line(12, '{"text": "Hi.", "file": "x", "format": "ogg"}', defaults, tts.voice_bank, "wav")
    assert (line.file, line.fmt, line.id) == ("x.opus", "opus", "x")
    for raw, words in [('[1, 2]', "JSON object"), ('{"text": 3}', "text"), ('{"text": "a", "file": "../x.wav"}',
                                                                              "plain file name"),
                       ('{"text": "a", "file": "x.wav", "format": "mp3"}', "does not match"),
                       ('{"text": "a", "format": "midi"}', "unknown format"), ('{"text": "a", "file": "x.doc"}',
                                                                               "unknown audio file type"),
                       ('{"text": "a", "language": "xx"}', "language")]:
        with pytest.raises((VoxtralError, TextError), match=words):
            batch.parse_line(1, raw, defaults, tts.voice_bank, "wav")
