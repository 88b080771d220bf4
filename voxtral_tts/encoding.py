"""Encode float32 mono audio for `/v1/audio/speech`'s `response_format`s, as a whole file or as a stream.

A `StreamEncoder` takes the waveform chunk by chunk as it is generated; every `encode()` returns the
bytes that can be sent now and `finish()` the rest, so that their concatenation is one valid file:

* pcm: raw s16le samples, nothing else.
* wav: a 44-byte header, then s16le samples. A stream's length is unknown when the header goes out,
  so its RIFF and data sizes are 0xFFFFFFFF ("read to the end"), as streaming servers do; the whole
  file (`whole_file=True`, used by `encode_audio`) gets the exact sizes.
* mp3, opus (Ogg), aac (ADTS), flac: PyAV encodes and muxes into a file-like sink with the muxer's
  `flush_packets` on, so each call hands back what the muxer has written so far (Ogg pages are cut
  every 100 ms; encoders hold back a frame or two, so a stream lags ~0.1-0.2 s). A streaming sink is
  not seekable, so no muxer seeks back to patch its header: flac's STREAMINFO keeps total samples = 0
  and no MD5, mp3 gets no Xing/LAME header (decoders then keep the encoder delay and padding, a few
  tens of ms). The whole-file path uses a seekable `io.BytesIO`, which gets them right.

Float audio is clipped to [-1, 1]; pcm, wav and flac get it as 16-bit (x 32767, rounded, like
`voxtral_tts.audio.to_pcm16`), the lossy codecs as float. Opus is resampled to 48 kHz. `speed` changes
the tempo without changing the pitch with ffmpeg's `atempo` filter, whose state carries across chunks;
the output has round(len(audio) / speed) samples.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

from .audio import to_pcm16

FORMATS: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
#: other names a client may use for a format: "ogg" is the Rust server's name for Ogg/Opus
FORMAT_ALIASES = {"ogg": "opus"}
#: an output file's extension → its format (``voxtral-run -o speech.mp3``)
EXTENSIONS = {".wav": "wav", ".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".flac": "flac", ".aac": "aac",
              ".pcm": "pcm"}
MIN_SPEED, MAX_SPEED = 0.25, 4.0

# response_format -> (muxer, ffmpeg encoder, encoder sample rate (None: the input's), bit rate)
_CODECS = {
    "mp3": ("mp3", "libmp3lame", None, 64000),
    "opus": ("ogg", "libopus", 48000, 32000),
    "aac": ("adts", "aac", None, 64000),
    "flac": ("flac", "flac", None, None),
}
_UNKNOWN_SIZE = 0xFFFFFFFF


def check_format(fmt: str) -> str:
    """``fmt`` by its name or an alias (``ogg`` → ``opus``), or ValueError."""
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown response_format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return fmt


def check_speed(speed) -> float:
    """`speed` as a float in [MIN_SPEED, MAX_SPEED], or ValueError."""
    try:
        value = float(speed)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(speed, bool) or not MIN_SPEED <= value <= MAX_SPEED:  # NaN fails the comparison
        raise ValueError(f"speed must be a number from {MIN_SPEED} to {MAX_SPEED}, got {speed!r}")
    return value


def wav_header(data_bytes: int = _UNKNOWN_SIZE, sample_rate: int = 24000) -> bytes:
    """The 44-byte header of a 16-bit mono WAV; the default sizes mean "unknown length" (streaming)."""
    riff = _UNKNOWN_SIZE if data_bytes >= _UNKNOWN_SIZE - 36 else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
            + b"data" + struct.pack("<I", min(data_bytes, _UNKNOWN_SIZE)))


def _atempo_factors(speed: float) -> list[float]:
    """Split `speed` into factors within [0.5, 2], the range every ffmpeg's atempo accepts."""
    factors = []
    while speed > 2.0:
        factors.append(2.0)
        speed /= 2.0
    while speed < 0.5:
        factors.append(0.5)
        speed /= 0.5
    return factors + [speed]


def _frame(samples: np.ndarray, fmt: str, sample_rate: int, pts: int):
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), fmt, "mono")
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = Fraction(1, sample_rate)
    return frame


class _Tempo:
    """A chain of `atempo` filters: float32 samples in, float32 samples out, at the same rate. At the
    end, atempo drops its last window (up to ~60 ms at speed 0.25), so `finish` pushes silence behind
    the audio and cuts the output at round(input / speed) samples."""

    def __init__(self, speed: float, sample_rate: int):
        import av.filter

        self.speed, self.rate, self.pts, self.emitted = speed, sample_rate, 0, 0
        self.graph = av.filter.Graph()
        nodes = [self.graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono",
                                        time_base=Fraction(1, sample_rate))]
        nodes += [self.graph.add("atempo", repr(factor)) for factor in _atempo_factors(speed)]
        nodes.append(self.graph.add("abuffersink"))
        self.graph.link_nodes(*nodes).configure()

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if len(audio):
            self.graph.push(_frame(audio, "flt", self.rate, self.pts))
            self.pts += len(audio)
        return self._pull()

    def finish(self) -> np.ndarray:
        """What the filters still hold, up to the exact length."""
        missing = round(self.pts / self.speed) - self.emitted
        self.graph.push(_frame(np.zeros(self.rate // 5, np.float32), "flt", self.rate, self.pts))
        self.graph.push(None)
        return self._pull()[: max(0, missing)]

    def _pull(self) -> np.ndarray:
        out = []
        while True:
            try:
                out.append(self.graph.pull().to_ndarray().reshape(-1))
            except (BlockingIOError, EOFError):  # PyAV's EAGAIN / EOF errors subclass these
                break
        audio = np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
        self.emitted += len(audio)
        return audio


class _Pipe:
    """A write-only, unseekable sink that hands its bytes out as they come."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data) -> int:
        self.data += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.data)
        self.data.clear()
        return data


class StreamEncoder:
    """Encode a waveform given chunk by chunk: `encode()` each chunk and send what it returns, then
    send `finish()`. With `whole_file=True` every byte comes from `finish()`, with exact headers."""

    def __init__(self, fmt: str, sample_rate: int = 24000, speed: float = 1.0, *, whole_file: bool = False,
                 sink=None):
        """``sink``: with ``whole_file``, a seekable binary file the compressed formats are muxed
        into as they come (their headers patched at the end) instead of memory."""
        self.fmt, self.rate, self.whole_file, self._file = check_format(fmt), int(sample_rate), whole_file, sink
        speed = check_speed(speed)
        self.tempo = _Tempo(speed, self.rate) if speed != 1.0 else None
        self.samples, self.started, self.finished, self.pcm = 0, False, False, bytearray()
        self.container = None
        if fmt in _CODECS:
            self._open_codec()

    def _open_codec(self) -> None:
        import av
        from av.audio.resampler import AudioResampler

        muxer, codec, rate, bit_rate = _CODECS[self.fmt]
        self.sink = (self._file or io.BytesIO()) if self.whole_file else _Pipe()
        options = {"flush_packets": "1"}
        if muxer == "ogg":
            options["page_duration"] = "100000"  # µs: at most 100 ms of audio waits for its page
        self.container = av.open(self.sink, mode="w", format=muxer, options=options)
        self.stream = self.container.add_stream(codec, rate=rate or self.rate)
        self.stream.codec_context.layout = "mono"
        if bit_rate:
            self.stream.codec_context.bit_rate = bit_rate
        # flac gets 16-bit samples converted here (x 32767, like pcm/wav), the lossy codecs float;
        # PyAV's encoder converts to the codec's own sample format and frame size.
        self.sample_format = "s16" if self.fmt == "flac" else "flt"
        self.resampler = None
        if rate and rate != self.rate:  # opus: 48 kHz
            self.resampler = AudioResampler(format="flt", layout="mono", rate=rate)

    def encode(self, audio: np.ndarray) -> bytes:
        """Add float32 mono samples (any number, even none); return the bytes ready to send now."""
        if self.finished:
            raise RuntimeError("StreamEncoder.encode() after finish()")
        audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if self.tempo is not None:
            audio = self.tempo(audio)
        return self._write(audio)

    def finish(self) -> bytes:
        """Flush the filters, encoder and muxer; return the last bytes (or, whole_file, the file)."""
        if self.finished:
            raise RuntimeError("StreamEncoder.finish() called twice")
        out = self._write(self.tempo.finish() if self.tempo is not None else np.zeros(0, np.float32))
        self.finished = True
        if self.container is not None:
            if self.resampler is not None:
                self._mux(self.resampler.resample(None))
            self._mux([None])  # flush the encoder
            self.container.start_encoding()  # no-op unless no audio came: still write the header
            self.container.close()
            if self._file is not None:
                return out
            return out + (self.sink.getvalue() if self.whole_file else self.sink.take())
        if self.whole_file:  # pcm / wav, kept until now for the exact WAV sizes
            return (wav_header(len(self.pcm), self.rate) if self.fmt == "wav" else b"") + bytes(self.pcm)
        return out

    def _write(self, audio: np.ndarray) -> bytes:
        first, pts = not self.started, self.samples
        self.started, self.samples = True, self.samples + len(audio)
        if self.container is None:  # pcm / wav
            data = to_pcm16(audio).tobytes()
            if self.whole_file:
                self.pcm += data
                return b""
            return (wav_header(sample_rate=self.rate) if self.fmt == "wav" and first else b"") + data
        if len(audio):
            samples = to_pcm16(audio) if self.sample_format == "s16" else audio
            frames = [_frame(samples, self.sample_format, self.rate, pts)]
            if self.resampler is not None:
                frames = self.resampler.resample(frames[0])
            self._mux(frames)
        return b"" if self.whole_file else self.sink.take()

    def _mux(self, frames) -> None:
        for frame in frames:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)


def encode_audio(audio: np.ndarray, fmt: str, sample_rate: int = 24000, speed: float = 1.0) -> bytes:
    """A whole file of `audio` (float32 mono) in `fmt`, at `speed`."""
    encoder = StreamEncoder(fmt, sample_rate, speed, whole_file=True)
    return encoder.encode(audio) + encoder.finish()


def audio_format(path) -> str:
    """The format an output file's extension names (:data:`EXTENSIONS`), or ValueError."""
    path = Path(path)
    if path.suffix.lower() not in EXTENSIONS:
        raise ValueError(f"{path}: unknown audio file type; name the output "
                         f"{', '.join('*' + e for e in EXTENSIONS)}")
    return EXTENSIONS[path.suffix.lower()]


class AudioFile:
    """An audio file written as the audio is generated, in the format its extension names
    (:data:`EXTENSIONS`): wav and pcm sample by sample (the WAV header's sizes written at the end),
    the others through PyAV into the file (its headers patched at the end). Memory does not grow
    with the audio's length. A context manager: ``close()`` completes the file."""

    def __init__(self, path, sample_rate: int = 24000):
        self.path, self.fmt = Path(path), audio_format(path)
        self.rate, self.samples, self._data_bytes = int(sample_rate), 0, 0
        self._file = open(self.path, "wb")
        self._encoder = None
        try:
            if self.fmt == "wav":
                self._file.write(wav_header(0, self.rate))  # sizes written at close
            elif self.fmt != "pcm":
                self._encoder = StreamEncoder(self.fmt, self.rate, whole_file=True, sink=self._file)
        except BaseException:
            self._file.close()
            raise

    def write(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        self.samples += len(audio)
        if self._encoder is not None:
            self._encoder.encode(audio)
            return
        data = to_pcm16(audio).tobytes()
        self._file.write(data)
        self._data_bytes += len(data)

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            if self._encoder is not None:
                self._encoder.finish()
            elif self.fmt == "wav":
                self._file.seek(0)
                self._file.write(wav_header(self._data_bytes, self.rate))
        finally:
            self._file.close()

    def __enter__(self) -> "AudioFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
