"""The Wyoming protocol (Home Assistant's local voice pipeline) in ``voxtral-serve``: one connection's
events — ``describe``, ``synthesize``, the streaming ``synthesize-start`` / ``-chunk`` / ``-stop`` —
turned into requests of the server's :class:`~.worker.Synthesizer`, the same worker and decode batch
as the HTTP API (:mod:`.wyoming_serve` starts both).

Per connection, one :class:`SpeechHandler` (the ``wyoming`` package's :class:`AsyncEventHandler`):

- ``describe`` → ``info``: one TTS program (:func:`describe`), every voice with its language.
- ``synthesize`` → ``audio-start`` (24 kHz, 16-bit, mono), an ``audio-chunk`` for each chunk the
  scheduler streams (its stream schedule: the first after 160 ms of audio), ``audio-stop``.
- ``synthesize-start``, ``synthesize-chunk``…, ``synthesize-stop``: one open request
  (:class:`~voxtral_tts.runtime.text_stream.TextStream`, as ``TTS.stream_text``): the text goes
  through the incremental segmenter as it arrives and each complete segment becomes the request's
  next part, spoken while the client is still sending; one ``audio-start`` … ``audio-stop`` for the
  whole stream, then ``synthesize-stopped``. The ``synthesize`` copy of the text a client sends
  inside the stream (for servers without streaming) is ignored.

Answers go out in the order their requests came. Bad input, an unknown voice, a full server or a
failed generation is an ``error`` event (``code``: :data:`CODES`) and the connection stays open for
the next request; a stream that had an error still ends with ``synthesize-stopped``. A client that
closes its connection cancels its work at the next frame; a connection with nothing to do for
``idle_timeout`` seconds (no event, nothing generating: a stream waiting for text counts as idle)
is told so (``idle_timeout``) and closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from wyoming.audio import AudioChunk as WyomingAudio
from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, SelectProgram, TtsProgram, TtsVoice
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .. import __version__
from ..audio import to_pcm16
from ..errors import TextError, VoiceError, VoxtralError
from ..normalize import resolve_language
from ..runtime.options import SpeechOptions
from ..runtime.request import RequestDone, RequestFailed
from ..runtime.text_stream import TextStream
from ..runtime.tts import TTS
from ..text import check_text
from ..voices import Voice, voice_gender, voice_language
from .errors import APIError, quoted
from .streaming import next_event
from .voice_store import READY
from .voices_api import Voices
from .worker import GONE, Job, Synthesizer

log = logging.getLogger(__name__)

PROGRAM = "voxtral"
ATTRIBUTION = Attribution(name="Mistral AI", url="https://huggingface.co/mistralai/Voxtral-4B-TTS-2603")
SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
CHANNELS = 1
#: the ``code`` of each ``error`` event this server sends
CODES = ("loading", "model_unavailable", "overloaded", "unknown_voice", "unknown_language", "empty_text",
         "text_too_long", "invalid_text", "unsupported_text_format", "invalid_event", "unknown_program",
         "no_stream", "stream_open", "voice_unavailable", "voice_not_ready", "internal_error", "idle_timeout")
LANGUAGE_NAMES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian",
                  "pt": "Portuguese", "nl": "Dutch", "ar": "Arabic", "hi": "Hindi"}


class Refusal(Exception):
    """What the client is told instead of audio: an ``error`` event's text and code."""

    def __init__(self, text: str, code: str):
        if code not in CODES:  # the documented codes are all there is
            raise ValueError(f"undocumented error code {code!r}")
        super().__init__(text)
        self.text, self.code = text, code

    def event(self) -> Event:
        return Error(text=self.text, code=self.code).event()


# --- describe ---------------------------------------------------------------------------------------

def describe(tts: TTS, model_id: str, voices: Voices | None = None) -> Info:
    """The ``info`` answer: one TTS program with every voice the model has (presets and any other
    voice of its bank), each with its language and a description naming its OpenAI aliases, then
    the voices made from recordings (``voices``: the server's, :mod:`.voices_api`) that are ready."""
    aliases = tts.voice_bank.aliases
    listed = []
    for name in tts.voices:
        language = voice_language(name)
        description = f"{name} — {LANGUAGE_NAMES.get(language, language)}"
        if voice_gender(name):
            description += f", {voice_gender(name)}"
        also = sorted(alias for alias, target in aliases.items() if target == name)
        if also:
            description += "; also " + ", ".join(also)
        listed.append(TtsVoice(name=name, attribution=ATTRIBUTION, installed=True, description=description,
                               version=model_id, languages=[language]))
    for record in voices.store.all() if voices is not None else []:
        if record.get("status") == READY:
            listed.append(TtsVoice(name=record["id"], attribution=ATTRIBUTION, installed=True, version=model_id,
                                   description=f"{record.get('name') or record['id']} — made from a recording",
                                   languages=list(record.get("languages") or [])))
    program = TtsProgram(name=PROGRAM, attribution=ATTRIBUTION, installed=True, version=__version__,
                         description=f"Voxtral-4B-TTS-2603 text to speech ({model_id}, voxtral-tts {__version__})",
                         voices=listed, supports_synthesize_streaming=True)
    return Info(tts=[program])


def choose_voice(tts: TTS, voice: object, voices: Voices | None = None) -> tuple[str | Voice, str | None]:
    """The voice a request's ``voice`` object names — ``name`` (a preset, an OpenAI alias, any voice of
    the bank, or the id of a voice made from a recording that is ready: its rows), else the first
    voice of ``language`` (the default voice if it speaks it), else the default voice — and the
    language to read the text in (``language`` if given, else None: the voice's own). ``speaker`` is
    ignored: the voices have no speakers."""
    if voice is None:
        voice = {}
    if not isinstance(voice, dict):
        raise Refusal("voice must be an object with a name and/or a language", "invalid_event")
    name, language = voice.get("name"), voice.get("language")
    if language is not None:
        try:
            language = resolve_language(str(language))
        except VoxtralError:
            raise Refusal(f"unknown language {quoted(language)}; describe lists the voices' languages",
                          "unknown_language") from None
    bank = tts.voice_bank
    if name is not None and voices is not None:
        try:
            created = voices.created_voice(tts, str(name), "voice")
        except APIError as exc:  # made from a recording, and not ready (or its file unreadable)
            raise Refusal(exc.message, "voice_not_ready" if exc.code == "voice_not_ready"
                          else "voice_unavailable") from None
        if created is not None:
            return created, language
    if name is not None:
        try:
            return bank.resolve_name(str(name)), language
        except VoxtralError:
            raise Refusal(f"unknown voice {quoted(name)}; describe lists them", "unknown_voice") from None
    if language is None:
        return bank.default, None
    speakers = [v for v in [bank.default, *tts.voices] if voice_language(v) == language]
    if not speakers:
        raise Refusal(f"no voice speaks {quoted(language)}; describe lists the voices' languages",
                      "unknown_language")
    return speakers[0], language


def checked_text(text: object, max_chars: int) -> str:
    if not isinstance(text, str):
        raise Refusal("text must be a string", "invalid_event")
    try:
        return check_text(text, max_chars)
    except TextError as exc:
        raise Refusal(str(exc), "text_too_long" if len(text.strip()) > max_chars else "empty_text") from None


def check_format(text_format: object) -> None:
    if text_format not in (None, "text"):
        raise Refusal(f"text_format {quoted(text_format)} is not supported; send plain text",
                      "unsupported_text_format")


# --- one connection ---------------------------------------------------------------------------------

class _Audio:
    """One answer's audio: ``audio-start`` before its first chunk, ``audio-stop`` at its end."""

    def __init__(self, handler: "SpeechHandler", rate: int):
        self.handler, self.rate = handler, rate
        self.started = False

    async def chunk(self, pcm: bytes) -> None:
        if not self.started:
            await self.start()
        await self.handler.write_event(WyomingAudio(rate=self.rate, width=SAMPLE_WIDTH, channels=CHANNELS,
                                                    audio=pcm).event())

    async def start(self) -> None:
        self.started = True
        await self.handler.write_event(AudioStart(rate=self.rate, width=SAMPLE_WIDTH, channels=CHANNELS).event())

    async def stop(self) -> None:
        await self.handler.write_event(AudioStop().event())


class _TextStream:
    """A ``synthesize-start`` … ``synthesize-stop`` stream: ONE open request of the server's worker
    (:class:`~voxtral_tts.runtime.text_stream.TextStream`, what ``TTS.stream_text`` is made of),
    submitted at the start; each segment the segmenter completes is appended as its next part while
    the client is still writing, and the scheduler starts it in a free slot. :meth:`run` (in the
    connection's order of answers) writes its audio as it comes."""

    def __init__(self, handler: "SpeechHandler", start: dict):
        self.handler = handler
        self.chars = 0
        self.failure: Refusal | None = None  # why the stream stopped speaking (said once, in order)
        self.stopped = asyncio.Event()  # synthesize-stop came
        self.stream: TextStream | None = None
        self.job: Job | None = None
        voice = None
        try:
            check_format(start.get("text_format"))
            tts = handler.tts()
            voice, language = choose_voice(tts, start.get("voice"), handler.voices)
            options = SpeechOptions(voice=voice, language=language, max_frames=handler.synth.options.max_frames)
            self.stream = TextStream(tts, options)  # reads the voice's file
            self.job = handler.submit(tts, self.stream.request)
        except VoiceError as exc:
            self.failure = voice_unavailable(voice, exc)
        except Refusal as refusal:
            self.failure = refusal

    def add(self, text: object) -> None:
        if self.failure is not None:
            return
        limit = self.handler.synth.options.max_input_chars
        if not isinstance(text, str):
            return self._fail(Refusal("text must be a string", "invalid_event"))
        self.chars += len(text)
        if self.chars > limit:
            return self._fail(Refusal(f"the stream's text is longer than the limit of {limit} characters",
                                      "text_too_long"))
        try:
            self.stream.append(text)
        except VoxtralError as exc:  # a segment too long for the model's context
            self._fail(Refusal(str(exc), "invalid_text"))

    def stop(self) -> None:
        if self.failure is None:
            try:
                self.stream.close()
            except VoxtralError as exc:
                self._fail(Refusal(str(exc), "invalid_text"))
        self.stopped.set()

    def _fail(self, refusal: Refusal) -> None:
        """Stop speaking: the request leaves the scheduler; the rest of the text is ignored."""
        self.failure = refusal
        if self.job is not None:
            self.job.close()

    async def run(self) -> None:
        """The stream's audio as it is made, an error if it failed, and at synthesize-stop
        ``audio-stop`` (if audio began) and ``synthesize-stopped``."""
        handler = self.handler
        audio = _Audio(handler, handler.synth.tts.sample_rate) if self.job is not None else None
        if self.job is not None:
            try:
                await handler.play(self.job, audio)
            except Refusal as refusal:
                self.failure = self.failure or refusal
        if self.failure is not None:
            await handler.write_event(self.failure.event())
        await self.stopped.wait()
        if audio is not None and audio.started:
            await audio.stop()
        await handler.write_event(SynthesizeStopped().event())


def voice_unavailable(voice, exc: VoiceError) -> Refusal:
    """A preset's file the server cannot read: the operator's to fix (logged), not the client's."""
    name = voice.name if isinstance(voice, Voice) else voice
    log.error("voice %s cannot be read: %s", name, exc)
    return Refusal(f"voice {quoted(name)} is unavailable on this server", "voice_unavailable")


class SpeechHandler(AsyncEventHandler):
    """One Wyoming connection. Its requests run one after another on a task of their own (so that
    the connection is read meanwhile: stream text, a disconnect), answers in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, synth: Synthesizer,
                 idle_timeout: float | None = None, voices: Voices | None = None):
        super().__init__(reader, writer)
        self.synth = synth
        self.voices = voices  # the voices made from recordings (None: presets only)
        self.idle_timeout = idle_timeout
        self._work: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._worker = asyncio.create_task(self._run_work(), name="wyoming requests")
        self._stream: _TextStream | None = None
        self._job: Job | None = None  # the request whose audio is being written
        self._live: set[Job] = set()  # every request submitted and not yet over (a stream's, before its turn)
        self._idle: asyncio.TimerHandle | None = None
        self._touch()

    # --- events in -------------------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        self._touch()
        try:
            await self._dispatch(event)
        except ConnectionError:
            return False
        return True

    async def _dispatch(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if Describe.is_type(event.type):
            try:
                info = describe(self.tts(), self.synth.options.model_id, self.voices).event()
            except Refusal as refusal:
                info = refusal.event()
            await self.write_event(info)
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=data.get("text")).event())
        elif SelectProgram.is_type(event.type):
            if data.get("name") != PROGRAM:
                self._answer(Refusal(f"unknown program {quoted(data.get('name'))}; this server has "
                                     f"one: {PROGRAM!r}", "unknown_program"))
        elif Synthesize.is_type(event.type):
            if self._stream is None:  # inside a stream: the copy of its text for servers without streaming
                self._work.put_nowait(lambda: self._synthesize(data))
        elif SynthesizeStart.is_type(event.type):
            if self._stream is not None:
                self._answer(Refusal("a stream is already open; send synthesize-stop first", "stream_open"))
            else:
                self._stream = _TextStream(self, data)
                self._work.put_nowait(self._stream.run)
        elif SynthesizeChunk.is_type(event.type):
            if self._stream is None:
                self._answer(Refusal("synthesize-chunk outside a stream: send synthesize-start first", "no_stream"))
            else:
                self._stream.add(data.get("text"))
        elif SynthesizeStop.is_type(event.type):
            if self._stream is None:
                self._answer(Refusal("synthesize-stop outside a stream: send synthesize-start first", "no_stream"))
            else:
                self._stream.stop()
                self._stream = None
        else:
            log.debug("wyoming: %s ignored", event.type)

    def _answer(self, refusal: Refusal) -> None:
        """An error event, in its place among the answers."""
        self._work.put_nowait(lambda: self.write_event(refusal.event()))

    # --- requests --------------------------------------------------------------------------------
    def tts(self) -> TTS:
        if self.synth.load_error:  # the detail is in the log
            raise Refusal("the model failed to load; see the server log", "model_unavailable")
        if not self.synth.ready:
            raise Refusal("the model is still loading; retry shortly", "loading")
        return self.synth.tts

    async def _synthesize(self, data: dict) -> None:
        audio = None
        try:
            check_format(data.get("text_format"))
            tts = self.tts()
            text = checked_text(data.get("text"), self.synth.options.max_input_chars)
            voice, language = choose_voice(tts, data.get("voice"), self.voices)
            audio = _Audio(self, tts.sample_rate)
            await self.speak(text, voice, language, audio)
        except Refusal as refusal:
            await self.write_event(refusal.event())
            if audio is None or not audio.started:
                return  # nothing began: the error is the whole answer
        if not audio.started:  # no frame at all: still a (silent) answer
            await audio.start()
        await audio.stop()

    async def speak(self, text: str, voice: str, language: str | None, audio: _Audio) -> None:
        """One text as one request of the server's worker, its audio written as it comes."""
        tts = self.tts()
        try:
            options = SpeechOptions(voice=voice, language=language, max_frames=self.synth.options.max_frames)
            request = tts.request(text, options)
        except VoiceError as exc:
            raise voice_unavailable(voice, exc) from None
        except TextError as exc:  # nothing to say once normalised
            raise Refusal(str(exc), "empty_text") from None
        except VoxtralError as exc:
            raise Refusal(str(exc), "invalid_text") from None
        await self.play(self.submit(tts, request), audio)

    def submit(self, tts: TTS, request) -> Job:
        """``request`` queued on the server's worker (the HTTP API's too), or the refusal of a full server."""
        job = Job(request, tts.collector(request), asyncio.get_running_loop())
        try:
            self.synth.submit(job)
        except APIError as exc:  # the queue is full
            raise Refusal(exc.message, exc.code or "overloaded") from None
        self._live.add(job)
        return job

    async def play(self, job: Job, audio: _Audio) -> None:
        """Write the job's audio chunks as the scheduler makes them, until it is done (or cancelled);
        its failure as a refusal. The job is closed at the end (cancelled if still running)."""
        self._job = job
        try:
            while True:
                event = await next_event(job)
                if event is GONE or isinstance(event, RequestDone):
                    return
                if isinstance(event, RequestFailed):
                    if isinstance(event.error, VoxtralError):
                        raise Refusal(str(event.error), "invalid_text")
                    log.error("generation failed: %s: %s", type(event.error).__name__, event.error)
                    raise Refusal("internal server error", "internal_error")
                await audio.chunk(to_pcm16(event.audio).tobytes())
        finally:
            job.close()  # a no-op once done; else (cancelled, connection lost) it leaves at the next frame
            self._job = None
            self._live.discard(job)

    async def _run_work(self) -> None:
        while True:
            work = await self._work.get()
            try:
                await work()
            except ConnectionError:  # the client went away while being answered
                await self.stop()
                return
            except Exception:  # a fault of this server: said, logged, and the connection goes on
                log.exception("wyoming: a request failed")
                try:
                    await self.write_event(Refusal("internal server error", "internal_error").event())
                except ConnectionError:
                    await self.stop()
                    return
            self._touch()

    # --- the connection --------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await super().run()
        except ConnectionError:  # reset by the client (it closed with our audio unread): disconnect() has run
            pass

    def _touch(self) -> None:
        """Restart the idle clock (an event came in, or an answer was finished)."""
        if self.idle_timeout is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.idle_timeout, self._on_idle)

    def _on_idle(self) -> None:
        job = self._job
        if job is not None and not (job.request.open and len(job.collector.parts) == job.collector.n_parts):
            return self._touch()  # generating (or queued) is not idle; a stream waiting for text is
        log.info("wyoming: closing a connection idle for %g s", self.idle_timeout)
        asyncio.ensure_future(self._close_idle())

    async def _close_idle(self) -> None:
        try:
            await self.write_event(Refusal(f"no request for {self.idle_timeout:g} s; closing the connection",
                                           "idle_timeout").event())
        except ConnectionError:
            pass
        await self.stop()

    async def disconnect(self) -> None:
        """The client has gone (or the connection was closed): cancel its work."""
        if self._idle is not None:
            self._idle.cancel()
        self._worker.cancel()
        for job in list(self._live):  # also a stream opened behind other work, not yet played
            job.close()
