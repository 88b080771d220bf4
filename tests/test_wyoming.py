"""The Wyoming protocol in ``voxtral-serve`` (Home Assistant), live: the ``wyoming`` package's own
client (``AsyncTcpClient``) against the server on the tiny engine, with the HTTP API in the same
process on the same worker — describe, synthesize, streaming synthesis with text sent over time,
errors as events, a client that goes away, both protocols in one decode batch, the command."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")
pytest.importorskip("wyoming")

from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.error import Error  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.info import Describe, Info, SelectProgram  # noqa: E402
from wyoming.tts import (  # noqa: E402
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

import voxtral_tts  # noqa: E402
from voxtral_tts.runtime.constants import STREAM_CHUNKS  # noqa: E402
from voxtral_tts.server.app import create_app  # noqa: E402
from voxtral_tts.server.cli import main as serve_main  # noqa: E402
from voxtral_tts.server.schemas import ServerOptions  # noqa: E402
from voxtral_tts.server.worker import Job, Synthesizer  # noqa: E402
from voxtral_tts.server.wyoming import CODES, Refusal, choose_voice, describe  # noqa: E402
from voxtral_tts.server.wyoming_serve import serve  # noqa: E402
from voxtral_tts.testing import Forwarding, free_port  # noqa: E402

from test_server import FRAMES, HeldBackend, wait_until, wrapped  # noqa: E402

SAMPLES = FRAMES * 1920  # per request: the tiny model never stops by itself, FRAMES is its cap


class LiveBoth:
    """HTTP (uvicorn) and Wyoming in one event loop on a thread, on the app's one worker — as
    ``voxtral-serve --wyoming`` runs them."""

    def __init__(self, load, options: ServerOptions, idle_timeout: float | None = None):
        self.app = create_app(load, options)
        self.synth: Synthesizer = self.app.state.synthesizer
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.port = free_port()
        self.http = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        coroutine = serve(self.synth, f"tcp://127.0.0.1:{self.port}", idle_timeout=idle_timeout, http=self.http,
                          sockets=[sock], voices=self.app.state.voices)
        self.thread = threading.Thread(target=asyncio.run, args=(coroutine,), daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.synth.ready:
            assert time.time() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)

    def close(self):
        self.http.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tiny_engine_dir):
    server = LiveBoth(lambda: voxtral_tts.load(tiny_engine_dir), ServerOptions(max_frames=FRAMES))
    yield server
    server.close()


def client(port: int) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=30)


async def answer(c: AsyncTcpClient, until=(AudioStop, Error)) -> list[Event]:
    """The events the server sends up to the first of type ``until``."""
    events = []
    while True:
        event = await c.read_event()
        assert event is not None, f"connection closed after {[e.type for e in events]}"
        events.append(event)
        if any(kind.is_type(event.type) for kind in until):
            return events


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def audio_of(events: list[Event]) -> np.ndarray:
    return np.frombuffer(b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type)),
                         "<i2")


def error_of(events: list[Event]) -> Error:
    assert Error.is_type(events[-1].type), [e.type for e in events]
    return Error.from_event(events[-1])


# --- describe and synthesize ------------------------------------------------------------------------

def test_describe_lists_one_streaming_program_with_every_voice(live):
    async def scenario():
        async with client(live.port) as c:
            await c.write_event(Describe().event())
            return Info.from_event(await c.read_event())

    info = run(scenario())
    [program] = info.tts
    assert program.name == "voxtral" and program.installed and program.supports_synthesize_streaming
    assert program.attribution.name == "Mistral AI" and program.version == voxtral_tts.__version__
    assert "Voxtral" in program.description
    tts = live.synth.tts
    assert [v.name for v in program.voices] == tts.voices
    casual_male = {v.name: v for v in program.voices}["casual_male"]  # the fixture's two voices speak English
    assert casual_male.languages == ["en"] and casual_male.description == "casual_male — English, male; also echo"
    assert all(v.installed and v.attribution.url and v.version for v in program.voices)


def test_synthesize_streams_audio_in_the_scheduler_chunks(live):
    async def scenario():
        async with client(live.port) as c:
            await c.write_event(SelectProgram("voxtral").event())
            await c.write_event(Synthesize("Hello there.", voice=SynthesizeVoice(name="echo")).event())
            return await answer(c)

    events = run(scenario())
    start = AudioStart.from_event(events[0])
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)
    assert AudioStop.is_type(events[-1].type)
    chunks = [AudioChunk.from_event(e) for e in events[1:-1]]
    assert all((c.rate, c.width, c.channels) == (24000, 2, 1) for c in chunks)
    # one audio-chunk per streamed chunk of frames (2, 3, 5 frames for 10), not one at the end
    assert [len(c.audio) // (1920 * 2) for c in chunks] == [2, 3, 5] == list(STREAM_CHUNKS[:3])
    audio = audio_of(events)
    assert len(audio) == SAMPLES and np.abs(audio).max() > 0


class Bank:
    default = "neutral_female"
    aliases = {"echo": "casual_male", "shimmer": "fr_female"}

    def resolve_name(self, name):
        if name in ("echo", "casual_male"):
            return "casual_male"
        raise voxtral_tts.VoxtralError(name)


class Model:
    """What describe and choose_voice read of a TTS: voices like the release's."""
    voice_bank = Bank()
    voices = ["casual_male", "de_male", "fr_female", "fr_male", "neutral_female"]


def test_every_voice_is_described_with_its_language():
    voices = {v.name: v for v in describe(Model(), "voxtral-4b-tts-2603").tts[0].voices}
    assert list(voices) == Model.voices
    assert voices["fr_female"].languages == ["fr"] and voices["de_male"].languages == ["de"]
    assert voices["fr_female"].description == "fr_female — French, female; also shimmer"
    assert voices["de_male"].description == "de_male — German, male"


def test_voice_by_language_and_by_name():
    model = Model()
    assert choose_voice(model, None) == ("neutral_female", None)
    assert choose_voice(model, {"name": "echo"}) == ("casual_male", None)
    assert choose_voice(model, {"language": "fr_FR"}) == ("fr_female", "fr")
    assert choose_voice(model, {"language": "en"}) == ("neutral_female", "en")  # the default speaks it
    assert choose_voice(model, {"name": "casual_male", "language": "de"}) == ("casual_male", "de")
    for voice, code in [({"name": "nobody"}, "unknown_voice"), ({"language": "xx"}, "unknown_language"),
                        ({"language": "hi"}, "unknown_language"), ("alloy", "invalid_event")]:
        with pytest.raises(Refusal) as refusal:
            choose_voice(model, voice)
        assert refusal.value.code == code


# --- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("event, code", [
    (Synthesize("Hi.", voice=SynthesizeVoice(name="nobody")).event(), "unknown_voice"),
    (Synthesize("Hi.", voice=SynthesizeVoice(language="xx")).event(), "unknown_language"),
    (Synthesize(" \n\t").event(), "empty_text"),
    (Synthesize("word " * 1000).event(), "text_too_long"),
    (Synthesize("<speak>Hi.</speak>", text_format="ssml").event(), "unsupported_text_format"),
    (Event("synthesize", {"text": 7}), "invalid_event"),
    (SynthesizeChunk("Hi.").event(), "no_stream"),
    (SelectProgram("piper").event(), "unknown_program"),
])
def test_errors_are_events_and_the_connection_goes_on(live, event, code):
    async def scenario():
        async with client(live.port) as c:
            await c.write_event(event)
            refused = await answer(c)
            await c.write_event(Synthesize("Hello.").event())  # the same connection still serves
            return refused, await answer(c)

    refused, after = run(scenario())
    assert len(refused) == 1 and error_of(refused).code == code and error_of(refused).text
    assert len(audio_of(after)) == SAMPLES and AudioStop.is_type(after[-1].type)


def test_every_error_code_is_documented():
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "home-assistant.md").read_text()
    assert [code for code in CODES if f"`{code}`" not in page] == []


# --- streaming synthesis ----------------------------------------------------------------------------

def test_streaming_synthesis_speaks_before_the_stream_ends(live):
    """Text sent over time: the first sentence is spoken while the client is still writing (its first
    audio before synthesize-stop is sent); one audio-start … audio-stop, then synthesize-stopped; the
    copy of the text in a synthesize event inside the stream is not spoken again."""
    async def scenario():
        async with client(live.port) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="casual_male")).event())
            await c.write_event(SynthesizeChunk("Hello there. ").event())
            await c.write_event(SynthesizeChunk("How are").event())
            first = await answer(c, until=(AudioChunk, Error))  # before the rest of the text is sent
            await asyncio.sleep(0.2)
            await c.write_event(SynthesizeChunk(" you today?").event())
            await c.write_event(Synthesize("Hello there. How are you today?").event())
            await c.write_event(SynthesizeStop().event())
            rest = await answer(c, until=(SynthesizeStopped, Error))
            await c.write_event(SynthesizeChunk("x").event())  # answered in order: nothing else was queued
            return first, rest, await c.read_event()

    first, rest, after = run(scenario())
    events = first + rest
    assert [e.type for e in first] == ["audio-start", "audio-chunk"]
    assert SynthesizeStopped.is_type(events[-1].type) and AudioStop.is_type(events[-2].type)
    assert sum(AudioStart.is_type(e.type) for e in events) == 1
    assert len(audio_of(events)) == 2 * SAMPLES  # two sentences: two parts of one request
    assert Error.from_event(after).code == "no_stream"  # the synthesize inside the stream was not spoken


def test_a_stream_over_the_text_limit_stops_speaking(live):
    async def scenario():
        async with client(live.port) as c:
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeChunk("Hello there. How").event())
            await answer(c, until=(AudioChunk,))  # the first sentence is being spoken
            await c.write_event(SynthesizeChunk(" are you" * 600).event())  # 4,800 characters more
            await c.write_event(SynthesizeStop().event())
            return await answer(c, until=(SynthesizeStopped,))

    events = run(scenario())
    types = [e.type for e in events]
    assert Error.from_event(events[types.index("error")]).code == "text_too_long"
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]
    wait_until(lambda: live.synth._pending == 0)  # its request left the scheduler


def test_a_stream_with_an_error_still_ends_with_synthesize_stopped(live):
    async def scenario():
        async with client(live.port) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="nobody")).event())
            await c.write_event(SynthesizeChunk("Hello there. How are you?").event())
            await c.write_event(SynthesizeStop().event())
            return await answer(c, until=(SynthesizeStopped,))

    events = run(scenario())
    assert [e.type for e in events] == ["error", "synthesize-stopped"]
    assert Error.from_event(events[0]).code == "unknown_voice"


# --- the same worker as HTTP -------------------------------------------------------------------------

def test_wyoming_and_http_requests_share_one_decode_batch(tiny_engine_dir):
    """A Wyoming synthesize and an HTTP request at the same time: decoded in the same backbone steps
    (one scheduler), both complete; HTTP answers meanwhile."""
    widths = []

    class Recording(Forwarding):
        def _step(self, embeds, positions, slots):
            if not widths:  # the first step waits until both requests are in: they overlap
                wait_until(lambda: server.synth._pending == 2)
            widths.append(len(slots))
            return self.inner.step(embeds, positions, slots)

    server = LiveBoth(lambda: wrapped(voxtral_tts.load(tiny_engine_dir, max_batch=2), Recording),
                      ServerOptions(max_frames=FRAMES))
    try:
        results = {}

        def post():
            results["http"] = httpx.post(server.url + "/v1/audio/speech", timeout=60, json={
                "model": "m", "input": "Hello there.", "voice": "alloy", "response_format": "pcm"})

        async def scenario():
            async with client(server.port) as c:
                await c.write_event(Synthesize("Another voice.", voice=SynthesizeVoice(name="echo")).event())
                thread = threading.Thread(target=post)
                thread.start()
                events = await answer(c)
                assert httpx.get(server.url + "/v1/audio/voices").status_code == 200
                await asyncio.to_thread(thread.join, 60)
                return events

        events = run(scenario())
        assert len(audio_of(events)) == SAMPLES
        assert results["http"].status_code == 200 and len(results["http"].content) == SAMPLES * 2
        assert max(widths) == 2, widths
    finally:
        server.close()


@pytest.fixture
def held(tiny_engine_dir, request):
    """A server on a held backend (:class:`HeldBackend`), one decoding slot, 40 frames, a queue of
    ``request.param`` (default 0)."""
    holder = {}

    def load():
        tts = wrapped(voxtral_tts.load(tiny_engine_dir), HeldBackend)
        holder["model"] = tts.backend
        return tts

    server = LiveBoth(load, ServerOptions(max_frames=40, max_queue=getattr(request, "param", 0)))
    yield server, holder["model"]
    holder["model"].released.set()
    server.close()


def test_a_client_that_goes_away_cancels_its_work_and_a_full_server_says_so(held):
    server, model = held

    async def scenario():
        c = client(server.port)
        await c.connect()
        await c.write_event(Synthesize("Hi.").event())
        assert AudioChunk.is_type((await answer(c, until=(AudioChunk,)))[-1].type)
        assert await asyncio.to_thread(model.holding.wait, 30)  # generating, held at frame HOLD_AT
        async with client(server.port) as other:  # the only slot is taken and nothing may wait
            await other.write_event(Synthesize("Me too.").event())
            full = error_of(await answer(other))
        await c.disconnect()  # mid-synthesis
        return full

    full = run(scenario())
    assert full.code == "overloaded"
    wait_until(lambda: any(request.cancelled for request in list(server.synth._jobs)))
    model.released.set()
    wait_until(lambda: server.synth._pending == 0)  # it left the scheduler at the next step
    assert model.frames == HeldBackend.HOLD_AT + 1 and server.synth.tts.scheduler.idle


@pytest.mark.parametrize("held", [1], indirect=True)
def test_a_client_that_goes_away_cancels_a_stream_not_yet_played(held):
    """A stream opened behind a synthesize on the same connection (its request submitted, its audio
    not yet being written): the client leaves, and both requests leave the scheduler."""
    server, model = held

    async def scenario():
        c = client(server.port)
        await c.connect()
        await c.write_event(Synthesize("Hi.").event())
        await answer(c, until=(AudioChunk,))
        assert await asyncio.to_thread(model.holding.wait, 30)  # the synthesize is generating, held
        await c.write_event(SynthesizeStart().event())
        await c.write_event(SynthesizeChunk("Hello there. How").event())
        await asyncio.to_thread(wait_until, lambda: server.synth._pending == 2)  # the stream's request is in
        await c.disconnect()

    run(scenario())
    def cancelled():  # the requests in the scheduler and those still queued for it (WAKEs aside)
        queued = [item.request for item in list(server.synth._submitted.queue) if isinstance(item, Job)]
        return sum(request.cancelled for request in list(server.synth._jobs) + queued)

    wait_until(lambda: cancelled() == 2)  # both
    model.released.set()
    wait_until(lambda: server.synth._pending == 0)  # both left the scheduler at its next step
    assert server.synth.tts.scheduler.idle


# --- alone, idle connections, the command ------------------------------------------------------------

def test_wyoming_alone_closes_idle_connections(tiny_engine_dir):
    synth = Synthesizer(lambda: voxtral_tts.load(tiny_engine_dir), ServerOptions(max_frames=FRAMES))
    port = free_port()

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(serve(synth, f"tcp://127.0.0.1:{port}", idle_timeout=0.5, stop=stop))
        while not synth.ready:
            await asyncio.sleep(0.05)
        try:
            async with client(port) as c:
                await c.write_event(Synthesize("Hi.").event())
                spoken = await answer(c)  # generating is not idle, however long it takes
                told = await c.read_event()  # then, half a second without a request
                after = await c.read_event()

            async with client(port) as c:  # a stream waiting for text is idle
                await c.write_event(SynthesizeStart().event())
                await c.write_event(SynthesizeChunk("Hello there. How").event())
                streamed = await answer(c, until=(Error,))
                closed = await c.read_event()
            while synth._pending:  # the stream's open request left the scheduler
                await asyncio.sleep(0.05)
            return spoken, told, after, streamed, closed
        finally:
            stop.set()
            await task

    spoken, told, after, streamed, closed = run(scenario())
    assert len(audio_of(spoken)) == SAMPLES
    assert Error.from_event(told).code == "idle_timeout" and after is None  # told, then closed
    assert len(audio_of(streamed)) == SAMPLES and error_of(streamed).code == "idle_timeout" and closed is None
    wait_until(lambda: not synth.alive)  # stopped with the server


@pytest.mark.parametrize("http", [True, False], ids=["with-http", "no-http"])
def test_voxtral_serve_wyoming_command(tiny_engine_dir, http):
    """``voxtral-serve --wyoming …`` (and ``--no-http``): starts, describes, speaks (HTTP too, unless
    ``--no-http``), stops on SIGTERM."""
    port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "voxtral_tts.server.cli", str(tiny_engine_dir), "--wyoming",
           f"tcp://127.0.0.1:{port}", "--port", str(http_port), "--max-frames", "3", "--log-level", "warning"]
    proc = subprocess.Popen(cmd + ([] if http else ["--no-http"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

    async def scenario():
        deadline = time.time() + 60
        while True:
            try:
                async with client(port) as c:
                    await c.write_event(Describe().event())
                    described = await c.read_event()
                    if described is not None and Info.is_type(described.type):
                        await c.write_event(Synthesize("Hi.", voice=SynthesizeVoice(name="echo")).event())
                        return await answer(c)
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, "the server did not start"
            await asyncio.sleep(0.2)

    try:
        events = run(scenario())
        assert len(audio_of(events)) == 3 * 1920
        url = f"http://127.0.0.1:{http_port}"
        if http:
            response = httpx.post(url + "/v1/audio/speech", timeout=60, json={
                "model": "m", "input": "Hi.", "voice": "echo", "response_format": "pcm"})
            assert response.status_code == 200 and len(response.content) == 3 * 1920 * 2
        else:
            with pytest.raises(httpx.TransportError):
                httpx.get(url + "/health")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    # stopped by the signal: uvicorn ends its serving and re-raises it (with HTTP); Wyoming alone exits 0
    assert code in ((0, -signal.SIGTERM) if http else (0,)), proc.stderr.read()


@pytest.mark.parametrize("argv, fragment", [
    (["--no-http"], "--no-http needs --wyoming"),
    (["--wyoming", "tcp://127.0.0.1"], "port must be specified"),
    (["--wyoming", "stdio://"], "stdio:// is not supported"),
    (["--wyoming", "tcp://127.0.0.1:1", "--wyoming-idle-timeout", "-1"], "at least 0"),
    (["--wyoming", "tcp://127.0.0.1:1", "--replicas", "1"], "not available with --replicas"),
])
def test_bad_wyoming_arguments_exit_2(tiny_engine_dir, capsys, argv, fragment):
    assert serve_main([str(tiny_engine_dir), *argv]) == 2
    assert fragment in capsys.readouterr().err


def test_voices_made_from_recordings_are_listed_and_spoken(tiny_engine_dir, tmp_path):
    """A voice made over HTTP (its record and rows in --voices-dir) is in describe once ready and is
    spoken by its id; one still being made is a voice_not_ready error."""
    from voxtral_tts.server.voice_store import READY, ROWS, VoiceStore
    from voxtral_tts.voice_create import write_voice

    store = VoiceStore(tmp_path)
    ready = store.add({"name": "Grandpa", "languages": ["en"]}, b"RIFF", "sample.wav")
    queued = store.add({"name": "Later", "languages": ["en"]}, b"RIFF", "sample.wav")
    tts = voxtral_tts.load(tiny_engine_dir)
    rows = tts.voice_bank.get(tts.voice_bank.default).embedding  # a preset's rows: what a made voice holds
    write_voice(store.path(ready["id"], ROWS), rows)
    store.update(ready["id"], status=READY, progress=1.0)
    server = LiveBoth(lambda: tts, ServerOptions(max_frames=FRAMES, voices_dir=str(tmp_path)))

    async def talk():
        async with client(server.port) as c:
            await c.write_event(Describe().event())
            info = Info.from_event(await c.read_event())
            await c.write_event(Synthesize(text="Hello there.", voice=SynthesizeVoice(name=ready["id"])).event())
            spoken = await answer(c)
            await c.write_event(Synthesize(text="Hello there.", voice=SynthesizeVoice(name=queued["id"])).event())
            refused = await answer(c)
            return info, spoken, refused

    try:
        info, spoken, refused = run(talk())
    finally:
        server.close()
    listed = {v.name: v for v in info.tts[0].voices}
    assert ready["id"] in listed and queued["id"] not in listed
    assert "Grandpa" in listed[ready["id"]].description and listed[ready["id"]].languages == ["en"]
    assert len(audio_of(spoken)) == SAMPLES
    assert error_of(refused).code == "voice_not_ready"
