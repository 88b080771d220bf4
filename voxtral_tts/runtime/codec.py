"""Codes → audio in codec calls of bounded size (spec §7.7).

The codec is causal with a ~21-frame receptive field, so a span of frames decoded with up to
``CODEC_CONTEXT_FRAMES`` frames of left context (whose audio is dropped) equals the same span of a
one-shot call to float precision. Every path uses these helpers: a whole utterance is decoded in
chunks of ``CODEC_CHUNK_FRAMES`` (:func:`codec_audio`), a stream in the chunks of
:func:`stream_chunk_frames`, and fixed-shape codecs (TensorRT, Core ML) pad a short chunk at the
end (:func:`pad_codec_chunk`). "Codec" always means this stage here; "decoding" is the backbone's
autoregressive loop (:mod:`.decoding`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import VoxtralError
from .constants import CODEC_CHUNK_FRAMES, CODEC_CONTEXT_FRAMES, CODEC_FRAMES, STREAM_CHUNKS

#: one codec call: codes [T, 37] (T ≤ CODEC_FRAMES) → audio [T · samples_per_frame]
CodecCall = Callable[[np.ndarray], np.ndarray]


def pad_codec_chunk(codes: np.ndarray, frames: int = CODEC_FRAMES, dtype=np.int64) -> np.ndarray:
    """codes [T, 37], 1 ≤ T ≤ frames → [1, frames, 37], the last frame repeated to the end: the
    input of a fixed-shape codec. The codec is causal, so the audio of the T real frames does not
    change; the caller keeps only theirs."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or not 1 <= codes.shape[0] <= frames:
        raise VoxtralError(f"a codec chunk is 1 to {frames} frames of codes, got shape {list(codes.shape)}")
    padded = np.empty((1, frames, codes.shape[1]), dtype)
    padded[0, : len(codes)] = codes
    padded[0, len(codes):] = codes[-1]
    return padded


def chunk_bounds(n_frames: int, chunk: int = CODEC_CHUNK_FRAMES) -> list[tuple[int, int]]:
    """[first, stop) of each codec call's new frames."""
    return [(first, min(n_frames, first + chunk)) for first in range(0, n_frames, chunk)]


def codec_span(codec: CodecCall, codes: Sequence[np.ndarray] | np.ndarray, first: int, stop: int,
               samples_per_frame: int, context: int = CODEC_CONTEXT_FRAMES) -> np.ndarray:
    """Audio of frames [first, stop): one codec call with up to ``context`` frames before ``first``,
    whose audio is dropped. ``codes`` is any sequence of [37] frames (an array or a list)."""
    start = max(0, first - context)
    audio = codec(np.asarray(codes[start:stop], dtype=np.int64))
    return np.asarray(audio[(first - start) * samples_per_frame :], dtype=np.float32)


def codec_audio(codec: CodecCall, codes: np.ndarray, samples_per_frame: int, chunk: int = CODEC_CHUNK_FRAMES,
                context: int = CODEC_CONTEXT_FRAMES) -> np.ndarray:
    """Codes [T, 37] → waveform [T · samples_per_frame], chunk by chunk with left context."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    pieces = [codec_span(codec, codes, first, stop, samples_per_frame, context)
              for first, stop in chunk_bounds(codes.shape[0], chunk)]
    return np.concatenate(pieces)


def stream_chunk_frames(emitted: int, schedule: Sequence[int] = STREAM_CHUNKS) -> int:
    """New frames in the next streamed chunk after ``emitted`` frames: the schedule's sizes in
    turn, the last repeating (default 2, 3, 5, 5, 5, 5, then 25)."""
    total = 0
    for size in schedule:
        if emitted <= total:
            return size
        total += size
    return schedule[-1]


def parse_stream_chunks(value: str | Sequence[int]) -> tuple[int, ...]:
    """A stream schedule from ``"2,3,5,25"`` or a sequence: positive frame counts, the last repeating."""
    items = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        sizes = tuple(int(item) for item in items)
    except (TypeError, ValueError):
        sizes = ()
    if not sizes or min(sizes) < 1 or max(sizes) > CODEC_CHUNK_FRAMES:
        raise VoxtralError(f"a stream schedule is comma-separated frame counts from 1 to {CODEC_CHUNK_FRAMES} "
                           f"(e.g. 2,3,5,25; the last repeats), got {value!r}")
    return sizes
