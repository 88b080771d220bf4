"""Waveforms to PCM and WAV. The model's output is float32 mono, unclipped (spec §7.6): clipping to
[-1, 1] happens here, when converting to 16-bit PCM."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24000


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float [-1, 1] → int16 (clipped, scaled by 32767, rounded to nearest)."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2")


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(to_pcm16(audio).tobytes())
    return buffer.getvalue()


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    path = Path(path)
    path.write_bytes(wav_bytes(audio, sample_rate))
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV as float32 in [-1, 1] and its sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return data.astype(np.float32) / 32767.0, w.getframerate()
