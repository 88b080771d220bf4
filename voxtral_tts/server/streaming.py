"""A request's events as the body of its response: :func:`next_event` (the next audio chunk or
end, :data:`~.worker.GONE` once the client went away), a whole file (:func:`whole_file`) and the
two streamed bodies — chunked audio
(``stream_format: "audio"``, :func:`chunked`; a failure after the audio began cuts the transfer,
:class:`StreamAborted`) and server-sent events (``stream_format: "sse"``,
:func:`server_sent_events`: ``speech.audio.delta`` events, then ``speech.audio.done`` with the
usage, or an ``error`` event in OpenAI's shape).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging

from ..encoding import StreamEncoder
from ..runtime.request import AudioChunk, Cancelled, PartFinished, RequestDone, RequestFailed
from .errors import as_api_error, error_body
from .worker import GONE, Job

log = logging.getLogger(__name__)


async def next_event(job: Job) -> AudioChunk | RequestDone | RequestFailed | None:
    """The job's next audio chunk or end (done or failed), taken by its collector; :data:`GONE` once
    the client has gone away."""
    while True:
        event = await job.out.get()
        if event is GONE or (isinstance(event, RequestFailed) and isinstance(event.error, Cancelled)):
            return GONE
        if not isinstance(job.collector.take(event), PartFinished):
            job.took(event)
            return event


async def whole_file(job: Job, first, encoder) -> bytes | None:
    """The request's audio as one file, encoded chunk by chunk as it arrives (only the encoded
    bytes are kept, never the request's float audio), the container finished at the end;
    :data:`~.worker.GONE` once the client went away; the client's error if the request failed."""
    data, event = [], first
    while not isinstance(event, RequestDone):
        if event is GONE:
            return GONE
        if isinstance(event, RequestFailed):
            raise as_api_error(event.error)
        data.append(await asyncio.to_thread(encoder.encode, event.audio))
        event = await next_event(job)
    data.append(await asyncio.to_thread(encoder.finish))
    return b"".join(data)


class StreamAborted(Exception):
    """Raised inside a chunked audio stream after a failure: the server then closes the connection
    without the final chunk, so the client sees an incomplete transfer instead of a clean end."""


async def audio_events(job: Job, first):
    """``first`` and the events after it: each :class:`AudioChunk`, then the :class:`RequestDone`
    or :class:`RequestFailed` that ends the request (nothing when the client went away)."""
    event = first
    try:
        while isinstance(event, AudioChunk):
            yield event
            event = await next_event(job)
        if isinstance(event, RequestFailed):
            log.error("generation failed after streaming began: %s: %s", type(event.error).__name__, event.error)
        if event is not GONE:
            yield event
    finally:
        job.close()


async def chunked(job: Job, first, fmt: str, speed: float):
    encoder = StreamEncoder(fmt, speed=speed)
    async for event in audio_events(job, first):
        if isinstance(event, RequestFailed):
            raise StreamAborted("the request failed after its audio began streaming")
        if isinstance(event, AudioChunk) and (data := encoder.encode(event.audio)):
            yield data
    tail = encoder.finish()
    if tail:
        yield tail


async def server_sent_events(job: Job, first, fmt: str, speed: float):
    def event(payload: dict) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    encoder = StreamEncoder(fmt, speed=speed)
    collector = job.collector  # the part being spoken (progress for the client), the usage at the end
    async for item in audio_events(job, first):
        if isinstance(item, RequestFailed):  # OpenAI's error shape, and no done event
            error = as_api_error(item.error)
            yield event({"type": "error", **error_body(error.message, error.type, error.param, error.code)})
            return
        if isinstance(item, RequestDone):
            continue
        if data := encoder.encode(item.audio):
            yield event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode(),
                         "part": collector.part, "parts": collector.n_parts})
    tail = encoder.finish()
    if tail:
        yield event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode(), "part": collector.part,
                     "parts": collector.n_parts})
    tokens, frames = collector.usage.text_tokens, collector.usage.frames
    yield event({"type": "speech.audio.done", "finish_reason": collector.finish_reason, "parts": collector.n_parts,
                 "usage": {"input_tokens": tokens, "output_tokens": frames, "total_tokens": tokens + frames}})
