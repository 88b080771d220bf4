"""Mistral's realtime speech, live: the official ``mistralai`` SDK's own realtime client
(``client.audio.realtime_speech``) against the server on the tiny engine — text sent in pieces over
time (audio before the last piece), flush then more text in one session, bad input answered with
an ``error`` event in a session that goes on, the limits (too much text, idle, a full server), and a
client that goes away cancelling its generation."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("av")
pytest.importorskip("onnxruntime")
mistralai_client = pytest.importorskip("mistralai.client")
pytest.importorskip("websockets")

import websockets  # noqa: E402
from mistralai.extra.exceptions import RealtimeSpeechException  # noqa: E402

import voxtral_tts  # noqa: E402
from voxtral_tts.server.app import create_app  # noqa: E402
from voxtral_tts.server.schemas import ServerOptions  # noqa: E402

import test_mistral_api  # noqa: E402
from test_server import FRAMES, HeldBackend, Live, decode, slow_server, wait_until  # noqa: E402

models = mistralai_client.models
MODEL = "voxtral-4b-tts-2603"
SPF = 1920  # samples per frame


server = test_mistral_api.server  # the SDK suite's server fixture: the tiny engine, the frame cap


def connect(url: str, **kwargs):
    client = mistralai_client.Mistral(api_key="unused", server_url=url)
    return client.audio.realtime_speech.connect(MODEL, timeout_ms=30_000, **kwargs)


async def until_done(events) -> tuple[list, models.SpeechStreamDone]:
    """The events up to the generation's speech.audio.done: (audio deltas, done). ``events``: the
    session's one event iterator (the SDK closes the connection when an iterator of its is left)."""
    deltas = []
    async for event in events:
        if isinstance(event, (models.RealtimeSpeechSessionCreated, models.RealtimeSpeechSessionUpdated)):
            continue
        if isinstance(event, models.SpeechStreamAudioDelta):
            deltas.append(event)
        elif isinstance(event, models.SpeechStreamDone):
            return deltas, event
        else:
            raise AssertionError(f"unexpected event {event!r}")
    raise AssertionError("the session ended before speech.audio.done")


def pcm(deltas) -> np.ndarray:
    return np.frombuffer(b"".join(base64.b64decode(d.audio_data) for d in deltas), "<f4")


def assert_parts(samples: int, done, parts: int) -> None:
    """``parts`` parts were spoken: each makes FRAMES frames (the frame cap), or fewer in the rare
    case the random model says END_AUDIO early (sessions have no seed), so more than
    ``parts - 1`` parts' worth; the audio is the frames' and the usage counts them."""
    frames = done.usage.completion_tokens
    assert (parts - 1) * FRAMES < frames <= parts * FRAMES and samples == frames * SPF
    assert done.usage.total_tokens == done.usage.prompt_tokens + frames and done.usage.prompt_tokens > 0


def test_text_in_pieces_is_spoken_before_the_last_piece(server):
    async def run():
        async with await connect(server.url, voice_id="alloy") as connection:
            assert connection.session.voice == "neutral_female" and connection.session.response_format == "pcm"
            assert connection.session.streaming_mode == "responsive"
            events = connection.events()
            for piece in ["Hello", " there.", " How", " are"]:
                await connection.send_text(piece)
                await asyncio.sleep(0.05)
            kinds = [type(await anext(events)) for _ in range(2)]  # session.created, then the voice's update
            assert kinds == [models.RealtimeSpeechSessionCreated, models.RealtimeSpeechSessionUpdated]
            first = await asyncio.wait_for(anext(events), 30)  # the first sentence, while the second is unfinished
            assert isinstance(first, models.SpeechStreamAudioDelta)
            first_audio = time.monotonic()
            await connection.send_text(" you?")
            last_sent = time.monotonic()
            await connection.flush()
            deltas, done = await until_done(events)
            return [first, *deltas], done, first_audio < last_sent

    deltas, done, early = asyncio.run(run())
    assert early
    audio = pcm(deltas)
    assert_parts(len(audio), done, 2)  # two segments
    assert np.abs(audio).max() <= 1.0 and audio.dtype == np.float32  # float32 pcm


def test_flush_then_continue_in_one_session_and_end(server):
    async def run():
        async with await connect(server.url, response_format="wav") as connection:
            events = connection.events()
            await connection.send_text("One. Two")
            await connection.flush()
            first = await until_done(events)
            await connection.flush("Three.")  # a flush may carry the last text
            second = await until_done(events)
            await connection.flush()  # nothing buffered: an empty generation's done
            empty = await until_done(events)
            await connection.update_session(streaming_mode="long_form", response_format="pcm")
            await connection.send_text("Four.")
            await connection.end()
            rest = [event async for event in events]  # up to the server's close
            return first, second, empty, rest

    first, second, empty, rest = asyncio.run(run())
    for (deltas, done), parts in ((first, 2), (second, 1)):
        audio, rate = decode(b"".join(base64.b64decode(d.audio_data) for d in deltas), "wav")
        assert rate == 24000
        assert_parts(len(audio), done, parts)
    assert empty == ([], empty[1]) and empty[1].usage.total_tokens == 0
    updated, *deltas, done = rest  # then end: the last text spoken, done, and the session closed
    assert isinstance(updated, models.RealtimeSpeechSessionUpdated) and updated.session.streaming_mode == "long_form"
    assert isinstance(done, models.SpeechStreamDone)
    assert_parts(len(pcm(deltas)), done, 1)


def raw_session(url: str):
    return websockets.connect(url.replace("http", "ws") + "/v1/audio/speech/realtime?model=" + MODEL)


async def receive(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 30))


def test_bad_input_is_an_error_event_and_the_session_goes_on(server):
    async def run():
        errors = []
        async with raw_session(server.url) as ws:
            assert (await receive(ws))["type"] == "session.created"
            for message in ["not json", json.dumps({"type": "speak"}), json.dumps({"type": "input_text.append"}),
                            json.dumps({"type": "session.update", "session": {"voice": "darth"}}),
                            json.dumps({"type": "session.update", "session": {"streaming_mode": "fast"}}),
                            json.dumps({"type": "session.update", "session": {"expressiveness": 0.5}}),
                            json.dumps({"type": "session.update", "session": {"ref_audio": "aGVsbG8="}}),
                            b"binary"]:
                await ws.send(message)
                errors.append(await receive(ws))
            await ws.send(json.dumps({"type": "session.update", "session": {"voice": "echo", "expressiveness": 1.2}}))
            updated = await receive(ws)
            await ws.send(json.dumps({"type": "input_text.flush", "text": "Still here."}))
            events = [await receive(ws)]
            while events[-1]["type"] != "speech.audio.done":
                events.append(await receive(ws))
        return errors, updated, events

    errors, updated, events = asyncio.run(run())
    assert all(e["type"] == "error" and e["error"]["code"] == 400 for e in errors)
    messages = [e["error"]["message"] for e in errors]
    for message, fragment in zip(messages, ["not valid JSON", "unknown message type 'speak'", "text must be a string",
                                            "unknown voice 'darth'", "streaming_mode must be responsive or long_form",
                                            "expressiveness", "ref_audio is not taken in a realtime session",
                                            "JSON text messages"]):
        assert fragment in message, message
    echo = next(v["id"] for v in httpx.get(server.url + "/v1/audio/voices").json()["voices"] if "echo" in v["aliases"])
    assert updated["type"] == "session.updated" and updated["session"]["voice"] == echo  # the alias's preset
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)


def test_the_sdk_reads_the_error_event():
    error = models.RealtimeSpeechError.model_validate({"type": "error", "error": {"message": "x", "code": 400}})
    assert error.error.message == "x"


def test_too_much_text_ends_the_session_with_1009(tiny_engine_dir):
    live = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir), ServerOptions(max_frames=FRAMES,
                                                                                    max_input_chars=100)))
    live.wait_ready()

    async def run():
        async with await connect(live.url) as connection:
            await connection.send_text("word " * 30)  # 150 characters, no segment end yet
            return [event async for event in connection]

    try:
        with pytest.raises(RealtimeSpeechException) as caught:
            asyncio.run(run())
        assert caught.value.code == 1009 and "100 characters" in str(caught.value)
    finally:
        live.close()


def test_an_idle_session_is_closed_with_1008(tiny_engine_dir):
    """…and while its generation waits for text, the worker waits too (it does not spin on the open
    request: a handful of scheduler steps, not thousands)."""
    live = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir), ServerOptions(max_frames=FRAMES,
                                                                                    realtime_idle_s=0.5)))
    live.wait_ready()
    scheduler = live.app.state.synthesizer.tts.scheduler
    steps = []
    step = scheduler.step
    scheduler.step = lambda: steps.append(1) or step()

    async def run():
        async with raw_session(live.url) as ws:
            created = await receive(ws)
            await ws.send(json.dumps({"type": "input_text.append", "text": "Then nothing"}))
            await asyncio.sleep(0.3)
            waiting_steps = len(steps)
            error = await receive(ws)
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await ws.recv()
            return created, error, closed.value.rcvd.code, waiting_steps

    try:
        created, error, code, waiting_steps = asyncio.run(run())
        assert created["type"] == "session.created" and error["type"] == "error"
        assert "0.5 s" in error["error"]["message"]
        assert code == 1008 and waiting_steps < 10
        wait_until(lambda: live.app.state.synthesizer._pending == 0)  # its open generation left the worker
    finally:
        live.close()


def test_a_full_server_answers_an_error_event_and_a_gone_client_cancels(tiny_engine_dir):
    """One decoding slot and no queue (the REST limits): a second session's generation is refused with
    an error event (code 503) while the first holds the slot; the first client going away mid-audio
    cancels its generation, and the slot is free again."""
    slow, holder = slow_server(tiny_engine_dir, max_queue=0)
    synthesizer = holder["synthesizer"]

    async def run():
        first = await raw_session(slow.url)
        await receive(first)
        await first.send(json.dumps({"type": "input_text.flush", "text": "A long sentence to speak."}))
        assert (await receive(first))["type"] == "speech.audio.delta"
        assert await asyncio.to_thread(holder["model"].holding.wait, 30)  # held at frame HOLD_AT
        async with raw_session(slow.url) as second:
            await receive(second)
            await second.send(json.dumps({"type": "input_text.append", "text": "Me too."}))
            refused = await receive(second)
        await first.close()  # the client goes away mid-generation
        return refused

    try:
        refused = asyncio.run(run())
        assert refused["type"] == "error" and refused["error"]["code"] == 503 and "busy" in refused["error"]["message"]
        wait_until(lambda: any(r.cancelled for r in list(synthesizer._jobs)))
        holder["model"].released.set()
        wait_until(lambda: synthesizer._pending == 0)
        assert holder["model"].frames == HeldBackend.HOLD_AT + 1 and synthesizer.tts.scheduler.idle
    finally:
        holder["model"].released.set()
        slow.close()
