"""Audio encoding for the OpenAI-style server: every response_format, whole and streamed, decoded back."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

av = pytest.importorskip("av")

from voxtral_tts.audio import to_pcm16  # noqa: E402
from voxtral_tts.encoding import (  # noqa: E402
    FORMATS, MAX_SPEED, MIN_SPEED, StreamEncoder, _atempo_factors, check_speed, encode_audio)

SR = 24000
CHUNKS = (1920, 7, 0, 5000)  # then the rest
LOSSLESS = ("wav", "pcm", "flac")
# How much longer than the input a decoded file may be: ADTS cannot signal AAC's 1024-sample priming
# nor its padding, and a streamed MP3 has no LAME header for the decoder to trim LAME's delay/padding.
EXTRA = {"aac": 0.090, "mp3": 0.075}


def sine(seconds: float = 1.0, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * SR)) / SR)).astype(np.float32)


def streamed(audio: np.ndarray, fmt: str, speed: float = 1.0) -> tuple[bytes, list[bytes]]:
    encoder = StreamEncoder(fmt, SR, speed)
    parts, start = [], 0
    for size in CHUNKS + (len(audio),):
        parts.append(encoder.encode(audio[start:start + size]))
        start += size
    parts.append(encoder.finish())
    return b"".join(parts), parts


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Mono samples (float in [-1, 1], or int16 for the lossless formats) and their rate."""
    if fmt == "pcm":
        return np.frombuffer(data, "<i2"), SR
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == 1
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(frames), stream.codec_context.sample_rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    samples = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)), n=8 * len(samples)))
    return float(np.argmax(spectrum) * rate / (8 * len(samples)))


def check_decodes(data: bytes, fmt: str, source: np.ndarray, speed: float = 1.0,
                  stream: bool = False) -> np.ndarray:
    """Decode, check the rate, the duration (len(source) / speed) and the 440 Hz peak; the samples."""
    samples, rate = decode(data, fmt)
    assert rate == (48000 if fmt == "opus" else SR)
    duration, expected = len(samples) / rate, len(source) / SR / speed
    if fmt in LOSSLESS or fmt == "opus" or (fmt == "mp3" and not stream):  # trimmed exactly
        assert abs(duration - expected) <= 1 / SR, (fmt, stream, duration, expected)
    else:
        assert expected <= duration <= expected + EXTRA[fmt], (fmt, stream, duration, expected)
    assert abs(dominant_hz(samples, rate) - 440.0) < 3.0
    return samples


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_whole_and_streamed_files_decode_to_the_sine(fmt):
    audio = sine()
    whole = encode_audio(audio, fmt)
    stream, parts = streamed(audio, fmt)
    for data, is_stream in ((whole, False), (stream, True)):
        samples = check_decodes(data, fmt, audio, stream=is_stream)
        if fmt in LOSSLESS:
            np.testing.assert_array_equal(samples, to_pcm16(audio))
        else:  # lossy: the 440 Hz peak is checked above, and its level is kept
            level = np.sqrt(np.mean(samples[len(samples) // 4: 3 * len(samples) // 4] ** 2))
            assert abs(level - 0.5 / np.sqrt(2)) < 0.05, level
    assert sum(len(part) for part in parts[:-1]) > 0, "streaming sent nothing before finish()"
    if fmt in ("aac", "pcm"):  # no header to patch: the stream is the file
        assert stream == whole


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_stream_prefix_is_playable_as_it_grows(fmt):
    """What was sent so far decodes, lagging the audio fed by no more than the codec's latency."""
    audio, encoder, sent = sine(1.0), StreamEncoder(fmt), b""
    for i in range(10):
        sent += encoder.encode(audio[i * 2400:(i + 1) * 2400])
    samples, rate = decode(sent, fmt)
    assert 0.75 <= len(samples) / rate <= 1.0
    assert abs(dominant_hz(samples, rate) - 440.0) < 3.0


def test_content_types():
    assert FORMATS == {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                       "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
    with pytest.raises(ValueError, match="mp3, opus, aac, flac, wav, pcm"):
        StreamEncoder("wma")
    assert StreamEncoder("ogg").fmt == "opus"  # the Rust server's name for Ogg/Opus
    with pytest.raises(ValueError, match="expected one of"):
        encode_audio(sine(), "m4a")


def test_container_formats():
    audio = sine(0.5)
    expect = {"mp3": ("mp3", "mp3"), "opus": ("ogg", "opus"), "aac": ("aac", "aac"), "flac": ("flac", "flac")}
    for fmt, (container_name, codec) in expect.items():
        with av.open(io.BytesIO(encode_audio(audio, fmt))) as container:
            assert container_name in container.format.name.split(",")
            assert container.streams.audio[0].codec_context.name.startswith(codec)
    assert encode_audio(audio, "aac")[:2] in (b"\xff\xf1", b"\xff\xf9")  # ADTS sync word
    opus = encode_audio(audio, "opus")
    head = opus.index(b"OpusHead")
    assert opus[:4] == b"OggS" and int.from_bytes(opus[head + 12:head + 16], "little") == 48000  # resampled


def test_wav_headers():
    audio = sine(0.25)
    whole = encode_audio(audio, "wav")
    riff, data_size = struct.unpack("<I", whole[4:8])[0], struct.unpack("<I", whole[40:44])[0]
    assert (whole[:4], whole[8:16], whole[36:40]) == (b"RIFF", b"WAVE" b"fmt ", b"data")
    assert data_size == 2 * len(audio) and riff == 36 + data_size == len(whole) - 8
    with wave.open(io.BytesIO(whole)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, SR, len(audio))

    stream, parts = streamed(audio, "wav")
    unknown = b"\xff" * 4
    assert len(parts[0]) == 44 + 2 * CHUNKS[0]
    assert parts[0][:44] == whole[:4] + unknown + whole[8:40] + unknown
    assert stream[44:] == whole[44:]
    with wave.open(io.BytesIO(stream)) as w:  # "unknown length": read to the end
        assert w.getframerate() == SR
        np.testing.assert_array_equal(np.frombuffer(w.readframes(10 * len(audio)), "<i2"), to_pcm16(audio))
    header_only = StreamEncoder("wav")
    assert len(header_only.encode(np.zeros(0, np.float32))) == 44
    assert len(header_only.encode(audio[:3])) == 6 and header_only.finish() == b""


def test_flac_stream_without_streaminfo_totals_decodes_fully():
    audio = sine(0.5)
    stream, _ = streamed(audio, "flac")
    whole = encode_audio(audio, "flac")
    total = lambda data: int.from_bytes(data[18:26], "big") & ((1 << 36) - 1)  # noqa: E731
    assert total(whole) == len(audio) and total(stream) == 0  # only the seekable file gets patched
    np.testing.assert_array_equal(decode(stream, "flac")[0], to_pcm16(audio))


def test_mp3_keeps_24khz_and_whole_file_is_gapless():
    audio = sine()
    with av.open(io.BytesIO(encode_audio(audio, "mp3"))) as container:
        assert container.streams.audio[0].codec_context.sample_rate == SR
    assert len(decode(encode_audio(audio, "mp3"), "mp3")[0]) == len(audio)  # LAME header trims delay
    assert len(decode(streamed(audio, "mp3")[0], "mp3")[0]) > len(audio)    # streamed: no LAME header


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus", "flac", "aac", "pcm"])
@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_speed_changes_tempo_not_pitch(fmt, speed):
    audio = sine()
    check_decodes(encode_audio(audio, fmt, SR, speed), fmt, audio, speed)
    check_decodes(streamed(audio, fmt, speed)[0], fmt, audio, speed, stream=True)


def test_extreme_speeds_chain_atempo():
    assert _atempo_factors(0.25) == [0.5, 0.5] and _atempo_factors(4.0) == [2.0, 2.0]
    assert all(0.5 <= f <= 2.0 for s in (0.3, 1.7, 3.3) for f in _atempo_factors(s))
    audio = sine(0.5)
    for speed, fmt in ((0.25, "wav"), (4.0, "pcm"), (0.25, "opus")):
        check_decodes(encode_audio(audio, fmt, SR, speed), fmt, audio, speed)
        check_decodes(streamed(audio, fmt, speed)[0], fmt, audio, speed, stream=True)


def test_speed_is_checked():
    assert check_speed(1) == 1.0 and check_speed("0.25") == MIN_SPEED and check_speed(4.0) == MAX_SPEED
    for bad in (5.0, 0.1, 0.0, -1.0, float("nan"), "fast", None, True):
        with pytest.raises(ValueError, match="speed must be a number from 0.25 to 4.0"):
            check_speed(bad)
    with pytest.raises(ValueError, match="speed"):
        StreamEncoder("mp3", speed=5.0)
    with pytest.raises(ValueError, match="speed"):
        encode_audio(sine(), "wav", speed=0.1)


def test_clipping_does_not_wrap():
    audio = np.array([1.5, -1.5, 2.0, 0.5, -0.25, 1.0, -1.0], np.float32)
    expected = [32767, -32767, 32767, 16384, -8192, 32767, -32767]
    assert np.frombuffer(encode_audio(audio, "pcm"), "<i2").tolist() == expected
    assert np.frombuffer(streamed(audio, "pcm")[0], "<i2").tolist() == expected
    assert decode(encode_audio(audio, "flac"), "flac")[0].tolist() == expected
    loud = 3.0 * sine(0.5)  # clipped to a square-ish wave, never wrapped to the other sign
    samples, _ = decode(encode_audio(loud, "wav"), "wav")
    assert np.all(np.sign(samples[loud > 0.1]) == 1) and np.all(np.sign(samples[loud < -0.1]) == -1)
    for fmt in ("aac", "opus", "mp3"):  # the float codecs get clipped samples too
        assert np.max(np.abs(decode(encode_audio(loud, fmt), fmt)[0])) < 1.3


def test_encoder_misuse():
    encoder = StreamEncoder("mp3")
    encoder.encode(sine(0.1))
    encoder.finish()
    with pytest.raises(RuntimeError):
        encoder.encode(sine(0.1))
    with pytest.raises(RuntimeError):
        encoder.finish()
