"""A reference recording made ready for voice creation: mono, 24 kHz, silence trimmed, 3–25 s, level set.

:func:`prepare` takes a path (any format PyAV reads) or an array with its sample rate and returns
float32 mono audio at 24 kHz:

- channels averaged to mono; resampled with PyAV (FFmpeg's swresample) when the rate differs;
- leading and trailing silence trimmed: 20 ms windows quieter than 40 dB under the loudest one
  (and at least −60 dBFS) count as silence; 100 ms of margin are kept on each side;
- at most 25 s kept: a longer recording is cut at its quietest 20 ms window between 15 s and
  25 s (a pause, when there is one), and a log line says where;
- under 3 s of sound, or no sound at all, is an error (one line);
- the level set so that the sounding windows' RMS is −23 dBFS, lowered if a peak would pass −1 dBFS.

Torch-free: numpy, and PyAV to read files or resample.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .errors import VoxtralError

log = logging.getLogger(__name__)

MIN_SECONDS, MAX_SECONDS = 3.0, 25.0
#: a long recording is cut at its quietest window after this many seconds (and before MAX_SECONDS)
CUT_SEARCH_FROM = 15.0
WINDOW_SECONDS = 0.02
SILENCE_BELOW_PEAK_DB = 40.0
SILENCE_FLOOR_DBFS = -60.0
MARGIN_SECONDS = 0.1
TARGET_RMS_DBFS = -23.0
PEAK_LIMIT_DBFS = -1.0


class ReferenceAudioError(VoxtralError):
    """A reference recording that cannot be used: unreadable, not audio, too short, silence only."""


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A file's first audio stream, decoded by PyAV → (float32 mono, its sample rate)."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceAudioError(f"{path}: not found" if not path.exists() else f"{path}: not a file")
    av = _av(f"reading {path.suffix or 'an audio file'}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ReferenceAudioError(f"{path}: holds no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            chunks = [_mono(frame.to_ndarray(), frame.format.is_planar, len(frame.layout.channels))
                      for frame in container.decode(stream)]
    except ReferenceAudioError:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReferenceAudioError(f"{path}: not an audio file PyAV can read ({_reason(exc)})") from None
    if not chunks or not rate:
        raise ReferenceAudioError(f"{path}: the audio stream holds no samples")
    return np.concatenate(chunks).astype(np.float32), int(rate)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__


def _av(what: str):
    try:
        import av
    except ImportError:
        raise ReferenceAudioError(f"{what} needs PyAV (pip install 'voxtral-tts[torch]', or pip install av)") from None
    return av


def _mono(samples: np.ndarray, planar: bool, channels: int) -> np.ndarray:
    """A decoded frame's samples [channels, n] (planar) or [1, n·channels] (packed) → mono float32."""
    x = samples.astype(np.float32)
    if np.issubdtype(samples.dtype, np.integer):  # s16 / s32 → [-1, 1]
        x /= float(np.iinfo(samples.dtype).max)
    x = x.reshape(channels, -1) if planar else x.reshape(-1, channels).T
    return x.mean(axis=0)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """An array [n], [n, channels] or [channels, n] (the shorter side is the channels) → float32 [n]."""
    x = np.asarray(audio)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
    if x.ndim != 1:
        raise ReferenceAudioError(
            f"reference audio must be 1-D (mono) or 2-D (with channels), got shape {list(x.shape)}"
        )
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    return np.asarray(x, dtype=np.float32)


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 ``audio`` at ``rate`` → at ``target`` (FFmpeg's swresample through PyAV)."""
    if rate == target:
        return audio
    av = _av(f"resampling {rate} Hz audio to {target} Hz")
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None], dtype=np.float32), format="flt",
                                       layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def window_db(audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The RMS level (dBFS) of each whole 20 ms window."""
    size = int(rate * WINDOW_SECONDS)
    n = len(audio) // size
    rms = np.sqrt(np.mean(np.square(audio[:n * size].reshape(n, size), dtype=np.float64), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def prepare(audio: str | Path | np.ndarray, sample_rate: int | None = None, label: str | None = None) -> np.ndarray:
    """A path or an array (+ ``sample_rate``) → float32 mono 24 kHz audio, trimmed, 3–25 s, level set."""
    if isinstance(audio, (str, Path)):
        label = label or str(audio)
        samples, rate = read_audio(audio)
    else:
        label = label or "reference audio"
        if sample_rate is None:
            raise ReferenceAudioError("an audio array needs its sample_rate")
        samples, rate = to_mono(audio), int(sample_rate)
    if rate <= 0:
        raise ReferenceAudioError(f"{label}: sample rate must be positive, got {rate}")
    if not np.all(np.isfinite(samples)):
        raise ReferenceAudioError(f"{label}: the audio holds NaN or infinite samples")
    samples = resample(samples, rate)
    levels = window_db(samples)
    if levels.size == 0 or levels.max() < SILENCE_FLOOR_DBFS:
        raise ReferenceAudioError(f"{label}: silence only (no 20 ms window louder than {SILENCE_FLOOR_DBFS:g} dBFS)")
    threshold = max(levels.max() - SILENCE_BELOW_PEAK_DB, SILENCE_FLOOR_DBFS)
    sounding = np.flatnonzero(levels >= threshold)
    size = int(SAMPLE_RATE * WINDOW_SECONDS)
    margin = int(SAMPLE_RATE * MARGIN_SECONDS)
    start = max(sounding[0] * size - margin, 0)
    end = min((sounding[-1] + 1) * size + margin, len(samples))
    samples = samples[start:end]
    seconds = len(samples) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise ReferenceAudioError(f"{label}: {seconds:.1f} s of sound after trimming silence; a voice needs at least "
                                  f"{MIN_SECONDS:g} s ({MIN_SECONDS:g}–{MAX_SECONDS:g} s)")
    if seconds > MAX_SECONDS:
        levels = window_db(samples)
        first, last = int(CUT_SEARCH_FROM / WINDOW_SECONDS), int(MAX_SECONDS / WINDOW_SECONDS)
        cut = (first + int(np.argmin(levels[first:last]))) * size
        log.info("%s: %.1f s of sound; kept the first %.1f s (cut at the quietest moment between %g and %g s)",
                 label, seconds, cut / SAMPLE_RATE, CUT_SEARCH_FROM, MAX_SECONDS)
        samples = samples[:cut]
    return normalize_level(samples)


def normalize_level(audio: np.ndarray) -> np.ndarray:
    """Scale so the sounding 20 ms windows' RMS is :data:`TARGET_RMS_DBFS`, peaks at most :data:`PEAK_LIMIT_DBFS`."""
    levels = window_db(audio)
    threshold = max(levels.max() - SILENCE_BELOW_PEAK_DB, SILENCE_FLOOR_DBFS)
    loud = 10 ** (levels[levels >= threshold] / 20)
    rms = float(np.sqrt(np.mean(loud**2)))
    gain = 10 ** (TARGET_RMS_DBFS / 20) / rms
    peak = float(np.max(np.abs(audio))) * gain
    limit = 10 ** (PEAK_LIMIT_DBFS / 20)
    if peak > limit:
        gain *= limit / peak
    return (audio * gain).astype(np.float32)
