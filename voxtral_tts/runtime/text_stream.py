"""Text that arrives while it is spoken: :class:`TextStream`, an open :class:`.request.Request` fed
segment by segment — what ``TTS.stream_text`` and the realtime server (``/v1/audio/speech/realtime``)
are made of.

Text pieces go into a :class:`~voxtral_tts.segmenter.Segmenter`; each segment it releases is
normalised for speech (in the options' language, else the voice's), checked against the KV cache
and appended to the request as its next part, so the scheduler starts it in a free slot while later
text is still arriving; :meth:`TextStream.close` speaks what is left and closes the request. A
segment with nothing to say once normalised (no letter or digit: only symbols, emoji or
punctuation) is skipped. The parts' noise comes from
the request's seed and each part's index (:meth:`.noise.NoiseSource.for_part`), so a fixed seed
gives the same audio however the text was timed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

import numpy as np

from ..errors import TextError
from ..segmenter import RESPONSIVE, RESPONSIVE_CHARS, Segmenter
from ..text import MAX_CHUNK_CHARS
from .options import SpeechOptions
from .request import AudioChunk, Request, RequestDone, RequestFailed

log = logging.getLogger(__name__)


class TextStream:
    """One open request and the segmenter that feeds it (see the module's docstring). ``tts``: the
    :class:`.tts.TTS` that speaks it; ``options``: the request's (``part_chars`` caps a segment, at
    most the mode's own cap); ``mode``: the segmenter's. The voice, options and mode are checked
    here, before any text."""

    def __init__(self, tts, options: SpeechOptions, mode: str = RESPONSIVE, streaming: bool = True):
        self.tts = tts
        self.options = options
        self.voice = tts.resolve_voice(options)
        own_cap = RESPONSIVE_CHARS if mode == RESPONSIVE else MAX_CHUNK_CHARS
        cap = own_cap if options.part_chars is None else min(own_cap, options.part_chars)
        self.segmenter = Segmenter(tts.language_of(options, self.voice), mode, cap)
        tts.check_expressiveness(options)
        self.request = Request("", (), self.voice, tts.noise_source(options), options.max_frames, streaming,
                               options.expressiveness, open=True)
        self._lock = threading.Lock()  # appends in order, from whichever thread feeds the text

    @property
    def pending(self) -> str:
        """Text received and not yet spoken (waiting for its segment to end)."""
        return self.segmenter.pending

    def append(self, text: str) -> int:
        """Take the next piece of text; how many parts it added (the segments it completed)."""
        with self._lock:
            return self._add(self.segmenter.push(text))

    def close(self) -> int:
        """The text is over: what is left becomes the last parts, and the request is closed."""
        with self._lock:
            added = self._add(self.segmenter.flush())
            self.request.close()
            return added

    def fail(self, error: BaseException) -> None:
        """End the request with ``error`` (the text's producer failed)."""
        self.request.cancel(error if isinstance(error, Exception) else TextError(f"text stream stopped: {error!r}"))

    def _add(self, segments: list[str]) -> int:
        added = 0
        for segment in segments:
            try:
                part = self.tts.said(segment, self.options, self.voice)
            except TextError:
                part = ""
            if not any(ch.isalnum() for ch in part):  # only symbols, emoji or punctuation
                log.debug("nothing to say in segment %r: skipped", segment[:60])
                continue
            self.tts.check_part(part, self.voice, self.options, self.request.noise)
            self.request.append(part)
            added += 1
        return added

    # --- the audio, for TTS.stream_text -------------------------------------------------------------
    def audio(self, pieces: Iterable[str], cancelled: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        """Read ``pieces`` on a thread of its own and yield the audio as the scheduler makes it."""
        def feed():
            try:
                for piece in pieces:
                    if self.request.cancelled:
                        return
                    self.append(piece)
                self.close()
            except BaseException as exc:  # the request ends with it; the consumer raises it
                self.fail(exc)

        threading.Thread(target=feed, name="voxtral-text-feed", daemon=True).start()
        try:
            yield from self.tts.collector(self.request).audio(self.tts.events(self.request, cancelled))
        finally:
            self.request.cancel()  # a no-op once done; stops the reader at its next piece

    async def audio_async(self, pieces: AsyncIterable[str],
                          cancelled: Callable[[], bool] | None = None) -> AsyncIterator[np.ndarray]:
        """Read ``pieces`` on the running event loop; the scheduler runs on a thread and its
        events come back to the loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        async def feed():
            try:
                async for piece in pieces:
                    self.append(piece)
                self.close()
            except Exception as exc:
                self.fail(exc)

        def run():
            try:
                try:
                    for event in self.tts.events(self.request, cancelled):
                        loop.call_soon_threadsafe(events.put_nowait, event)
                except Exception as exc:
                    loop.call_soon_threadsafe(events.put_nowait, RequestFailed(self.request, exc))
            except RuntimeError:  # the caller's event loop is closed: nobody is listening any more
                self.request.cancel()

        feeder = asyncio.create_task(feed())
        threading.Thread(target=run, name="voxtral-text-stream", daemon=True).start()
        collector = self.tts.collector(self.request)
        try:
            while True:
                event = collector.take(await events.get())
                if isinstance(event, AudioChunk):
                    yield event.audio
                elif isinstance(event, RequestFailed):
                    raise event.error
                elif isinstance(event, RequestDone):
                    return
        finally:
            self.request.cancel()
            feeder.cancel()
