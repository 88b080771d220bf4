"""One request's events turned into what its caller wants — the one consumer of scheduler events
that the library (``TTS.generate`` / ``synthesize`` / ``stream``), ``voxtral-run`` (a file written
part by part) and the speech server (responses) all use, as faster-whisper hands out typed records.

:class:`Collector` takes a request's events in order (:meth:`Collector.take`) and keeps what every
caller needs: the request's finish reason (``end``, or ``length`` once a part stopped at its frame
budget), the frames and samples so far, the usage, each part's :class:`SynthesisResult` (with its
audio when asked to keep it) and the error that ended it. It says once, as a warning, that a part
was cut at its frame budget or had no audio. :meth:`Collector.audio` is the common loop: the audio
chunks of a stream of events, in order, raising the request's error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from .decoding import BOUND_CAPACITY, FINISHED_END
from .request import AudioChunk, Event, PartFinished, Request, RequestDone, RequestFailed, Usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthesisResult:
    text: str
    voice: str
    prompt_ids: np.ndarray  # int64 [P]: ids fed to the backbone ([AUDIO] at the voice rows)
    codes: np.ndarray  # int64 [T, 37]: frames turned into audio, +2 offset
    audio: np.ndarray  # float32 [T · 1920], unclipped
    sample_rate: int
    finished: bool  # True when END_AUDIO ended generation, False when the frame cap did
    seed: int | None = None  # the seed that reproduces this result (None with explicit noise)
    parts: tuple["SynthesisResult", ...] = field(default=(), repr=False)  # per text part, if split

    @property
    def n_frames(self) -> int:
        return int(self.codes.shape[0])

    @property
    def duration(self) -> float:
        return self.audio.shape[0] / self.sample_rate


class Collector:
    """Reads one request's events (see the module's docstring). ``sample_rate``: of the audio, for
    the results and the durations; ``keep_audio``: hold each part's audio for its result (the
    library's whole results; a file writer or a server passes the audio on instead);
    ``log_parts``: log each part of a multi-part request as it finishes (where no progress bar does)."""

    def __init__(self, request: Request, sample_rate: int, keep_audio: bool = False, log_parts: bool = False):
        self.request = request
        self.sample_rate = sample_rate
        self.keep_audio = keep_audio
        self.log_parts = log_parts
        self.finish_reason = FINISHED_END
        self.usage = Usage()
        self.frames = 0
        self.samples = 0
        self.part = 0  # the part the latest audio belongs to
        self.parts: list[SynthesisResult] = []
        self.error: Exception | None = None
        self.done = False
        self._audio: dict[int, list[np.ndarray]] = {}

    @property
    def n_parts(self) -> int:
        return len(self.request.parts)

    @property
    def seconds(self) -> float:
        """Seconds of audio so far."""
        return self.samples / self.sample_rate

    def take(self, event: Event) -> Event:
        """Account for the request's next event (returned as it is)."""
        if isinstance(event, AudioChunk):
            self.part = event.part
            self.samples += event.audio.shape[0]
            if self.keep_audio:
                self._audio.setdefault(event.part, []).append(event.audio)
        elif isinstance(event, PartFinished):
            self._part_finished(event)
        elif isinstance(event, RequestFailed):
            self.error = event.error
        elif isinstance(event, RequestDone):
            self.usage, self.done = event.usage, True
        return event

    def audio(self, events: Iterable[Event]) -> Iterator[np.ndarray]:
        """The audio chunks of ``events`` (this request's), in order, each event taken; the
        request's error is raised where it failed."""
        for event in events:
            self.take(event)
            if isinstance(event, AudioChunk):
                yield event.audio
            elif isinstance(event, RequestFailed):
                raise event.error

    def result(self) -> SynthesisResult:
        """The whole request's result (after :meth:`audio` or :meth:`take` saw it done): its one
        part's, or the parts concatenated."""
        if len(self.parts) == 1:
            return self.parts[0]
        parts = self.parts
        return SynthesisResult(
            text=self.request.text, voice=self.request.voice.name,
            prompt_ids=np.concatenate([r.prompt_ids for r in parts]), codes=np.concatenate([r.codes for r in parts]),
            audio=np.concatenate([r.audio for r in parts]), sample_rate=self.sample_rate,
            finished=all(r.finished for r in parts), seed=self.request.noise.seed, parts=tuple(parts))

    def _part_finished(self, event: PartFinished) -> None:
        self.frames += len(event.codes)
        if event.finish_reason != FINISHED_END:
            self.finish_reason = event.finish_reason
        self._warn_if_cut(event)
        pieces = self._audio.pop(event.part, [])
        self.parts.append(SynthesisResult(
            text=event.text, voice=self.request.voice.name, prompt_ids=event.prompt_ids, codes=event.codes,
            audio=np.concatenate(pieces) if pieces else np.zeros(0, np.float32), sample_rate=self.sample_rate,
            finished=event.finish_reason == FINISHED_END, seed=self.request.noise.seed))
        if self.log_parts and self.n_parts > 1:
            log.info("part %d of %d done: %.1f s of audio so far", len(self.parts), self.n_parts, self.seconds)

    def _warn_if_cut(self, event: PartFinished) -> None:
        """A part with no audio, or stopped at its frame budget before END_AUDIO: one warning naming the bound."""
        if event.codes.shape[0] == 0:
            log.warning("END_AUDIO at the first frame: no audio for %r", event.text[:60])
        if event.finish_reason != FINISHED_END:
            log.warning("part %d of %d stopped at its frame budget (%d frames, the %s limit) before END_AUDIO: its "
                        "audio is cut%s", event.part + 1, self.n_parts, len(event.codes), event.bound,
                        "; raise --max-frames / max_frames to allow more" if event.bound != BOUND_CAPACITY
                        else "; raise --capacity to allow more")
