"""voxtral-run end to end, as a user runs it (a subprocess, the installed console script)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from voxtral_tts.audio import read_wav

pytest.importorskip("torch")


def bars(stderr: str) -> list[str]:
    """The progress bars drawn on stderr, each state of each bar."""
    return [line for line in re.split(r"[\r\n]", stderr) if "%|" in line]


def promises_nothing(bar: str) -> bool:
    """No remaining time ("<04:26", "<?") and no rate ("6.66s/part", "2.10part/s") in a bar."""
    return "<" not in bar and "/s" not in bar


def voxtral_run(*args, stdin: str | None = None, env: dict | None = None):
    exe = shutil.which("voxtral-run")
    cmd = [exe] if exe else [sys.executable, "-m", "voxtral_tts.cli"]
    return subprocess.run(cmd + [str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow  # voxtral-run in subprocesses, seconds each
def test_writes_a_wav_of_1920_samples_per_frame(tiny_model_dir, tmp_path):
    out = tmp_path / "hello.wav"
    proc = voxtral_run(
        tiny_model_dir, "-t", "Hello world.", "-v", "echo", "-o", out, "--max-frames", "6", "--seed", "3"
    )
    assert proc.returncode == 0, proc.stderr
    audio, rate = read_wav(out)
    assert rate == 24000 and audio.shape == (6 * 1920,)
    assert "wrote" in proc.stderr and "seed 3" in proc.stderr


@pytest.mark.slow  # voxtral-run in subprocesses, seconds each
def test_stdin_and_text_file(tiny_model_dir, tmp_path):
    proc = voxtral_run(tiny_model_dir, "-o", tmp_path / "a.wav", "--max-frames", "2", "-q", stdin="From stdin.")
    assert proc.returncode == 0, proc.stderr
    assert read_wav(tmp_path / "a.wav")[0].shape == (2 * 1920,)
    (tmp_path / "t.txt").write_text("From a file.", encoding="utf-8")
    proc = voxtral_run(tiny_model_dir, "--text-file", tmp_path / "t.txt", "-o", tmp_path / "b.wav", "--max-frames", "2")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow  # voxtral-run in subprocesses, seconds each
def test_long_text_is_split_and_concatenated(tiny_model_dir, tmp_path):
    text = " ".join(f"Sentence {i} is part of a long text." for i in range(20))  # > 400 characters
    proc = voxtral_run(
        tiny_model_dir,
        "-t",
        text,
        "-o",
        tmp_path / "long.wav",
        "--max-frames",
        "2",
        "--capacity",
        "1024",
        "--no-normalize",
    )  # the text as given: 2 parts
    assert proc.returncode == 0, proc.stderr
    assert "split into 2 parts" in proc.stderr
    assert read_wav(tmp_path / "long.wav")[0].shape == (2 * 2 * 1920,)
    # parts take unequal, unknown times: the bar counts them and promises no remaining time
    speaking = [bar for bar in bars(proc.stderr) if bar.startswith("speaking")]
    assert speaking and "2/2 part" in speaking[-1] and all(map(promises_nothing, speaking)), speaking


def test_one_run_says_each_fact_once_and_truly(reference_model_dir, tmp_path):
    """The fixture's checkpoint (2.2 M parameters, BF16 in the file) read into bf16 and computed
    in bf16: the count and storage dtype said once by loading, the compute dtype once by the
    backend — never "computed in float32" next to "bfloat16 compute"."""
    proc = voxtral_run(reference_model_dir, "-t", "Hello.", "-o", tmp_path / "a.wav", "--max-frames", "3",
                       "--backend", "torch", "--dtype", "bf16")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    path = reference_model_dir / "consolidated.safetensors"
    assert [line for line in lines if "parameters" in line] == [
        f"loading {path}: 2.2 M parameters stored as BF16, read into bfloat16 (the codec into float32)"]
    computes = [line for line in lines if "comput" in line]
    assert len(computes) == 1 and computes[0].startswith("torch backend on cpu: bfloat16 compute,"), lines
    loading = [bar for bar in bars(proc.stderr) if bar.startswith("loading weights")]
    assert loading and "155/155 tensor" in loading[-1] and all(map(promises_nothing, loading)), loading


def test_list_voices(tiny_model_dir):
    proc = voxtral_run(tiny_model_dir, "--list-voices")
    assert proc.returncode == 0
    assert "casual_male" in proc.stdout and "alias echo" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["-t", "   "], "text is empty"),
        (["-t", "Hi.", "-v", "darth"], "unknown voice 'darth'"),
        (["-t", "Hi.", "--reference-audio", "me.wav"], "me.wav: not found"),
        (["-t", "Hi.", "-o", "out.txt"], r"unknown audio file type; name the output \*\.wav"),
        (["-t", "Hi.", "--backend", "torch", "--threads", "2"], "applies to the onnxruntime backend"),
        (["-t", "Hi.", "--dtype", "bf16", "--backend", "onnxruntime"], "applies to the torch backend"),
        (["-t", "Hi.", "--backend", "torch", "--device", "tpu"], "unknown device 'tpu'|runs on cpu or cuda"),
        (["-t", "Hi.", "-o", "nowhere/dir/a.wav"], r"nowhere/dir is not a writable directory"),
        (["-t", "Hi.", "--seed", "-1"], r"--seed must be between 0 and 2\^63 - 1, got -1"),
        (["-t", "Hi.", "--temperature", "warm"], r"argument --temperature: invalid float value: 'warm'"),
        (["-t", "Hi.", "--expressiveness", "0.5"], r"--expressiveness must be a number from 1\.0 to 100 .*, got 0\.5"),
    ],
)
def test_input_errors_are_one_line(tiny_model_dir, tmp_path, args, message):
    proc = voxtral_run(tiny_model_dir, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxtral-run: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    import re

    assert re.search(message, lines[0])


@pytest.mark.slow  # voxtral-run in subprocesses, seconds each
def test_model_dir_errors_are_one_line(reference_model_dir, tmp_path):
    proc = voxtral_run(tmp_path / "absent", "-t", "Hi.")
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    broken = tmp_path / "broken"
    shutil.copytree(reference_model_dir, broken)
    ckpt = broken / "consolidated.safetensors"
    ckpt.chmod(0o644)
    ckpt.write_bytes(ckpt.read_bytes()[:100_000])
    proc = voxtral_run(broken, "-t", "Hi.", "-o", tmp_path / "x.wav")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "truncated" in proc.stderr.strip().splitlines()[-1]


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_engine_file_errors_name_the_file(tiny_engine_dir, tmp_path):
    """A truncated graph weights file or embedding table, or an engine without its manifest: one
    line that names what is wrong (not a traceback, not "consolidated.safetensors: not found")."""
    for rel in ("backbone.onnx.data", "embeddings/tokens.npy"):
        broken = shutil.copytree(tiny_engine_dir, tmp_path / rel.replace("/", "_"))
        data = (broken / rel).read_bytes()
        (broken / rel).write_bytes(data[: len(data) // 2])
        line = _one_line(voxtral_run(broken, "-t", "Hi.", "-o", tmp_path / "x.wav", "--max-frames", "2", "-q"))
        assert str(broken / rel) in line and "export the engine again" in line, line
    partial = shutil.copytree(tiny_engine_dir, tmp_path / "partial")
    (partial / "manifest.json").unlink()
    line = _one_line(voxtral_run(partial, "-t", "Hi.", "-o", tmp_path / "x.wav", "-q"))
    assert "has an engine's files but no manifest.json" in line


@pytest.mark.slow  # voxtral-run in subprocesses, seconds each
def test_unwritable_places_are_one_line(tiny_model_dir, tmp_path):
    """An engine directory or an engine cache that cannot be created (here: below a file)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    exe = shutil.which("voxtral-export")
    cmd = [exe] if exe else [sys.executable, "-m", "voxtral_tts.export.cli"]
    proc = subprocess.run(cmd + [str(tiny_model_dir), "-o", str(blocker / "sub"), "-q"], capture_output=True,
                          text=True, timeout=120)
    assert "cannot create the engine directory" in _one_line(proc)
    proc = voxtral_run(tiny_model_dir, "--backend", "onnxruntime", "-t", "Hi.", "-o", tmp_path / "x.wav", "-q",
                       env={"VOXTRAL_TTS_CACHE": str(blocker / "cache")})
    assert "cannot create the engine cache" in _one_line(proc)


@pytest.mark.parametrize("module, args", [
    ("voxtral_tts.cli", ["MODEL", "--seed", "abc"]),
    ("voxtral_tts.server.cli", ["MODEL", "--port", "http"]),
    ("voxtral_tts.export.cli", ["MODEL", "--precision", "fp8"]),
    ("voxtral_tts.cli", ["MODEL", "--no-such-flag"]),
])
def test_bad_flags_are_one_line_in_every_command(module, args, capsys):
    """argparse's own errors too: one line, exit status 2 (not the whole usage)."""
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and "usage" not in lines[0], lines
