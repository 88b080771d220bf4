"""Mistral's realtime speech, ``WebSocket /v1/audio/speech/realtime`` (what the ``mistralai`` SDK's
``client.audio.realtime_speech.connect`` / ``speak_stream`` speak): text sent in pieces while it is
written, speech sent back as soon as each segment of it is complete — a thin layer over
:class:`~voxtral_tts.runtime.text_stream.TextStream` (what ``TTS.stream_text`` is made of), run by
the server's worker like every REST request.

The session, in JSON text messages:

- on connect the server sends ``session.created`` with the settings (``request_id``, ``model``,
  ``voice``, ``response_format`` ``pcm``, ``streaming_mode`` ``responsive``, ``expressiveness``,
  ``is_ref_audio``); the client may send ``session.update`` ``{"session": {voice,
  response_format, streaming_mode, expressiveness}}`` (null or absent: unchanged; ``voice`` a
  preset, an alias or a created voice's id; ``ref_audio`` is answered with an error: making a voice
  takes minutes, so make it first with ``POST /v1/audio/voices``) at any time, answered with
  ``session.updated``; the settings apply from the next generation on;
- ``input_text.append`` ``{"text"}`` adds text to the current generation (the first one starts it);
  each segment (:mod:`voxtral_tts.segmenter`, in the session's ``streaming_mode``) is spoken while
  the client goes on sending, and its audio comes as ``speech.audio.delta`` ``{"audio_data":
  base64}`` — ``pcm`` raw little-endian float32 mono at 24 kHz, the other formats as the REST
  server streams them (each generation one stream);
- ``input_text.flush`` (with an optional last ``text``) ends the generation: what is left is
  spoken, then ``speech.audio.done`` with its ``usage`` — and the session stays open for the next
  one (whose text may already be arriving); ``input_text.end`` does the same and then closes the
  session (code 1000);
- a message the server cannot take (not JSON, an unknown type, a bad field, an unknown voice, a
  server that is full) is answered with an ``error`` event ``{"error": {"message", "code"}}`` (the
  HTTP status the REST API would give) and the session goes on; so is a generation that fails.

Limits: text received and not yet spoken is at most ``ServerOptions.max_input_chars`` per
session, and a session with nothing to say or send for ``ServerOptions.realtime_idle_s`` is
ended — each with an ``error`` event, then a close (1009 too much text, 1008 idle). The model still
loading or failed: an ``error`` event, then close 1013 (try again later). A generation counts
against the same batch and queue as REST requests (a full server: an ``error`` event with code
503). A client that goes away cancels its generations; the worker never waits for a client (a slow
reader only delays its own audio).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from contextlib import suppress
from dataclasses import dataclass

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketState

from ..encoding import check_format
from ..errors import VoiceError, VoxtralError
from ..runtime.options import SpeechOptions
from ..runtime.request import AudioChunk, RequestDone, RequestFailed
from ..runtime.text_stream import TextStream
from ..voices import Voice
from ..segmenter import MODES, RESPONSIVE
from . import mistral
from .auth import WEBSOCKET_KEY_PROTOCOL
from .errors import APIError, as_api_error, quoted
from .schemas import ServerOptions
from .streaming import next_event
from .voices_api import VOICES_PATH, Voices
from .worker import GONE, Job, Synthesizer

log = logging.getLogger(__name__)

PATH = "/v1/audio/speech/realtime"
#: WebSocket close codes (RFC 6455): the session is over, too much text, idle, try again later
CLOSE_DONE, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER = 1000, 1008, 1009, 1013
_FORMATS = ("pcm", "wav", "mp3", "flac", "opus")
EMPTY = "empty"  # a flush with no generation: its speech.audio.done, in order
#: what sending to a client that went away raises (Starlette, uvicorn)
GONE_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


class SessionUpdate(BaseModel):
    """``session.update``'s ``session``: Mistral's fields; null or absent leaves one as it is."""

    model_config = ConfigDict(extra="forbid")

    voice: str | None = None
    ref_audio: str | None = None
    response_format: str | None = None
    streaming_mode: str | None = None
    expressiveness: float | None = Field(default=None, ge=1.0, allow_inf_nan=False)


@dataclass
class Settings:
    voice: str | Voice  # a preset's name, or a created voice's rows (``voice_name`` its id)
    voice_name: str
    response_format: str = "pcm"
    streaming_mode: str = RESPONSIVE
    expressiveness: float | None = None  # None: the model's own guidance scale


class Session:
    """One WebSocket's session (see the module's docstring)."""

    def __init__(self, websocket: WebSocket, synth: Synthesizer, options: ServerOptions, voices: Voices):
        self.ws = websocket
        self.synth = synth
        self.tts = synth.tts
        self.options = options
        self.voices = voices
        self.id = uuid.uuid4().hex
        self.model = websocket.query_params.get("model") or options.model_id
        default = self.tts.voice_bank.default
        self.settings = Settings(voice=default, voice_name=default)
        self.current: tuple[TextStream, Job] | None = None  # the generation taking text
        self.jobs: list[Job] = []  # generations not yet fully sent, in order
        #: for the sender, in order: (job, format) of each generation, EMPTY (a flush with no text), None (the end)
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.ended = False
        self.active = asyncio.get_running_loop().time()  # when the client or the server last sent something

    # --- what the server sends ------------------------------------------------------------------------
    def session(self) -> dict:
        s = self.settings
        scale = s.expressiveness if s.expressiveness is not None else self.tts.config.flow.cfg_alpha
        return {"request_id": self.id, "model": self.model, "voice": s.voice_name, "response_format": s.response_format,
                "streaming_mode": s.streaming_mode, "expressiveness": scale, "is_ref_audio": False}

    async def send(self, payload: dict) -> None:
        await self.ws.send_text(json.dumps(payload))
        self.active = asyncio.get_running_loop().time()

    async def error(self, error: APIError | str, code: int = 400) -> None:
        message, code = (error.message, error.status) if isinstance(error, APIError) else (error, code)
        await self.send({"type": "error", "error": {"message": message, "code": code}})

    # --- the client's messages ------------------------------------------------------------------------
    async def take(self, raw: str) -> None:
        """One client message: act on it, or answer an ``error`` event."""
        try:
            message = json.loads(raw)
        except ValueError:
            return await self.error("the message is not valid JSON")
        kind = message.get("type") if isinstance(message, dict) else None
        try:
            if kind == "session.update":
                self.update(message.get("session"))
                await self.send({"type": "session.updated", "session": self.session()})
            elif kind == "input_text.append":
                self.append(self.text_of(message, required=True))
            elif kind in ("input_text.flush", "input_text.end"):
                text = self.text_of(message, required=False)
                if text:
                    self.append(text)
                self.finish_generation()
                if kind == "input_text.end":
                    self.ended = True
                    self.outbox.put_nowait(None)
            else:
                await self.error(f"unknown message type {quoted(kind)}: the client sends session.update, "
                                 "input_text.append, input_text.flush or input_text.end")
        except SessionOver:
            raise
        except APIError as exc:
            await self.error(exc)

    @staticmethod
    def text_of(message: dict, required: bool) -> str | None:
        text = message.get("text")
        if text is None and not required:
            return None
        if not isinstance(text, str):
            raise APIError(400, f"{message.get('type')}: text must be a string", param="text")
        return text

    def update(self, payload) -> None:
        """Apply ``session.update``'s fields (all of them, or none on an error)."""
        if not isinstance(payload, dict):
            raise APIError(400, "session.update: session must be an object", param="session")
        try:
            update = SessionUpdate.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "session"
            raise APIError(400, f"session.update: {where}: {first['msg']}", param=where) from None
        if update.ref_audio is not None:  # making a voice takes minutes or more: not inside a live session
            raise APIError(400, f"session.update: ref_audio is not taken in a realtime session (making a voice "
                                f"takes minutes or more); create the voice with POST {VOICES_PATH} and send its id "
                                "as voice", param="ref_audio", code="not_supported")
        settings = Settings(**vars(self.settings))
        if update.voice is not None:
            settings.voice = self.voices.named(self.tts, update.voice, "voice")
            settings.voice_name = (update.voice.strip().lower() if isinstance(settings.voice, Voice)
                                   else settings.voice)
        if update.response_format is not None:
            if update.response_format not in _FORMATS:
                raise APIError(400, f"response_format must be one of {', '.join(_FORMATS)}, got "
                                    f"{quoted(update.response_format)}", param="response_format")
            settings.response_format = update.response_format
        if update.streaming_mode is not None:
            if update.streaming_mode not in MODES:
                raise APIError(400, f"streaming_mode must be {' or '.join(MODES)}, got "
                                    f"{quoted(update.streaming_mode)}", param="streaming_mode")
            settings.streaming_mode = update.streaming_mode
        if update.expressiveness is not None:
            settings.expressiveness = update.expressiveness
        self.settings = settings

    def append(self, text: str) -> None:
        """Text for the current generation (started here if there is none)."""
        if self.buffered() + len(text) > self.options.max_input_chars:
            raise SessionOver(CLOSE_TOO_BIG, f"more than {self.options.max_input_chars} characters of text are "
                                             "waiting to be spoken in this session; send less ahead of the audio")
        if self.current is None:
            self.current = self.start()
        stream = self.current[0]
        try:
            stream.append(text)
        except VoxtralError as exc:
            raise APIError(400, f"input_text.append: {exc}", param="text") from None

    def start(self) -> tuple[TextStream, Job]:
        """A new generation with the session's settings, queued with the server's worker (503 when full)."""
        s = self.settings
        try:
            options = SpeechOptions(voice=s.voice, max_frames=self.options.max_frames, expressiveness=s.expressiveness)
            stream = TextStream(self.tts, options, s.streaming_mode)
        except VoiceError as exc:  # a preset's file the server cannot read: the server's fault
            log.error("voice %s cannot be read: %s", s.voice_name, exc)
            raise APIError(500, f"voice {s.voice_name!r} is unavailable on this server", "server_error",
                           code="voice_unavailable") from None
        except VoxtralError as exc:
            raise APIError(400, str(exc)) from None
        job = Job(stream.request, self.tts.collector(stream.request), asyncio.get_running_loop())
        self.synth.submit(job)
        self.jobs.append(job)
        self.outbox.put_nowait((job, check_format(s.response_format)))
        return stream, job

    def finish_generation(self) -> None:
        """Flush: the current generation speaks what is left and ends (no generation: an empty one's
        ``speech.audio.done``)."""
        if self.current is None:
            self.outbox.put_nowait(EMPTY)
            return
        stream, _ = self.current
        self.current = None
        try:
            stream.close()
        except VoxtralError as exc:
            stream.fail(exc)

    def buffered(self) -> int:
        """Characters received and not yet spoken: the parts not finished and the text not yet cut."""
        total = len(self.current[0].pending) if self.current else 0
        for job in self.jobs:
            total += sum(len(p) for p in job.request.parts[len(job.collector.parts):])
        return total

    def idle_for(self) -> float:
        """Seconds since the client or the server last sent anything."""
        return asyncio.get_running_loop().time() - self.active

    # --- the sender -----------------------------------------------------------------------------------
    async def sender(self) -> None:
        """Send each generation's audio and end, in order; close once the client ended the session."""
        while True:
            item = await self.outbox.get()
            if item is None:
                await self.ws.close(CLOSE_DONE)
                return
            if item is EMPTY:
                await self.done(0, 0, "end")
            else:
                await self.send_generation(*item)

    async def send_generation(self, job: Job, fmt: str) -> None:
        encoder = mistral.encoder(fmt, self.tts.sample_rate, False)
        try:
            while True:
                event = await next_event(job)
                if event is GONE:
                    return
                if isinstance(event, AudioChunk):
                    await self.delta(encoder.encode(event.audio))
                elif isinstance(event, RequestFailed):
                    await self.error(as_api_error(event.error))
                    return
                elif isinstance(event, RequestDone):
                    await self.delta(encoder.finish())
                    usage = job.collector.usage
                    await self.done(usage.text_tokens, usage.frames, job.collector.finish_reason)
                    return
        finally:
            job.close()
            self.jobs.remove(job)

    async def delta(self, data: bytes) -> None:
        if data:
            await self.send({"type": "speech.audio.delta", "audio_data": base64.b64encode(data).decode()})

    async def done(self, tokens: int, frames: int, finish_reason: str) -> None:
        await self.send({"type": "speech.audio.done", "finish_reason": finish_reason,
                         "usage": {"prompt_tokens": tokens, "completion_tokens": frames,
                                   "total_tokens": tokens + frames}})

    def cancel(self) -> None:
        """The client went away (or the session ended early): stop every generation."""
        for job in self.jobs:
            job.close()


class SessionOver(APIError):
    """A limit ends the session: an ``error`` event, then a close with ``code``."""

    def __init__(self, code: int, message: str):
        super().__init__(400, message)
        self.close_code = code


def chosen_subprotocol(offered: list[str]) -> str | None:
    """The subprotocol the handshake answers with: the first one offered that is not the API key's
    carrier (``openai-insecure-api-key.KEY``, :mod:`.auth`), else that one (a browser fails a
    handshake that offered subprotocols and was answered with none); None when none was offered."""
    plain = [p for p in offered if not p.startswith(WEBSOCKET_KEY_PROTOCOL)]
    return (plain or list(offered) or [None])[0]


async def serve_session(websocket: WebSocket, synth: Synthesizer, options: ServerOptions, voices: Voices) -> None:
    await websocket.accept(subprotocol=chosen_subprotocol(websocket.scope.get("subprotocols", [])))
    if not synth.ready:
        message = ("the model failed to load; see the server log" if synth.load_error
                   else "the model is still loading; retry shortly")
        await websocket.send_text(json.dumps({"type": "error", "error": {"message": message, "code": 503}}))
        await websocket.close(CLOSE_TRY_LATER, message[:120])
        return
    session = Session(websocket, synth, options, voices)
    await session.send({"type": "session.created", "session": session.session()})
    sender = asyncio.create_task(session.sender())
    idle = options.realtime_idle_s
    try:
        while not session.ended:
            try:
                message = await asyncio.wait_for(websocket.receive(), max(idle - session.idle_for(), 0.01))
            except asyncio.TimeoutError:
                if session.idle_for() < idle:  # audio went out meanwhile
                    continue
                raise SessionOver(CLOSE_POLICY, f"nothing sent either way for {idle:g} s: the session is "
                                                "closed") from None
            if message["type"] == "websocket.disconnect":
                return
            session.active = asyncio.get_running_loop().time()
            if message.get("text") is None:
                await session.error("send JSON text messages, not binary ones")
                continue
            await session.take(message["text"])
        await sender  # the last generations are sent, then the close
    except SessionOver as exc:
        with suppress(*GONE_ERRORS):
            await session.error(exc)
            await websocket.close(exc.close_code, exc.message[:120])
    except GONE_ERRORS:  # the client went away mid-send
        pass
    finally:
        session.cancel()
        sender.cancel()
        if websocket.application_state == WebSocketState.CONNECTED:
            with suppress(*GONE_ERRORS):
                await websocket.close(CLOSE_DONE)


def add_realtime(app: FastAPI, synth: Synthesizer, options: ServerOptions, voices: Voices) -> None:
    """The realtime route on ``app`` (``voices``: the server's created voices, which ``voice`` may name)."""

    @app.websocket(PATH)
    async def realtime(websocket: WebSocket):
        await serve_session(websocket, synth, options, voices)
