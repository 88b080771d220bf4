"""The OpenAI-compatible server, live: uvicorn on 127.0.0.1 and the official ``openai`` client."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import numpy as np
import pytest

av = pytest.importorskip("av")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.audio import to_pcm16  # noqa: E402
from voxtral_tts.runtime.backend import Backend  # noqa: E402
from voxtral_tts.runtime.constants import STREAM_CHUNKS  # noqa: E402
from voxtral_tts.server.app import create_app  # noqa: E402
from voxtral_tts.server.schemas import ServerOptions  # noqa: E402
from voxtral_tts.testing import Forwarding, free_port  # noqa: E402

FRAMES = 10  # the tiny random model never says END_AUDIO: every request makes exactly 10 frames
SECONDS = FRAMES * 1920 / 24000


class Live:
    def __init__(self, app):
        self.app = app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60):
        deadline = time.time() + timeout
        while httpx.get(self.url + "/ready").status_code != 200:
            assert time.time() < deadline, "model did not load"
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


class HeldBackend(Forwarding):
    """A backend that counts frames and, from frame ``hold_at`` on (default ``HOLD_AT``; None: not
    until a test sets it), waits for the test to ``release`` it: the test decides what happens
    while a request is in flight (queueing, cancellation)."""

    HOLD_AT = STREAM_CHUNKS[0] + 1  # the first streamed chunk is out by then

    def __init__(self, inner: Backend, hold_at: int | None = HOLD_AT):
        super().__init__(inner)
        self.frames = 0
        self.hold_at = hold_at
        self.released = threading.Event()
        self.holding = threading.Event()  # set once a request waits at frame hold_at

    def flow(self, hidden, noise, semantic=None, expressiveness=None):
        if self.hold_at is not None and self.frames >= self.hold_at:
            self.holding.set()
            assert self.released.wait(30), "the test never released the backend"
        self.frames += len(hidden)
        return self.inner.flow(hidden, noise, semantic, expressiveness)


def wrapped(tts, wrapper):
    """The same model behind a wrapping backend."""
    return voxtral_tts.TTS(wrapper(tts.backend), tts.tokenizer, tts.voice_bank)


def wait_until(condition, timeout: float = 30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference_tts(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir)


@pytest.fixture(scope="module")
def live(tiny_engine_dir):
    server = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir),
                             ServerOptions(max_frames=FRAMES, max_body_bytes=64 * 1024)))
    server.wait_ready()
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


def expected_audio(tts, text="Hello there.", voice="neutral_female", seed=1):
    return tts.synthesize(text, voice=voice, seed=seed, max_frames=FRAMES).audio


def assert_pcm_equal(actual, expected_float):
    """16-bit samples equal the model's output: to 1 LSB, since the server decodes in streaming
    chunks and the reference in 50-frame chunks (equal to ~1e-7, which can move a rounding)."""
    actual = np.asarray(actual).astype(np.int32)
    expected = to_pcm16(expected_float).astype(np.int32)
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767, 24000
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        audio = np.concatenate(chunks)
        scale = 32767.0 if audio.dtype == np.int16 else 1.0  # s16 decoders (wav, flac) give integers
        return audio.astype(np.float32) / scale, stream.rate


# --- formats ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_format(client, reference_tts, fmt):
    response = client.audio.speech.create(model="voxtral-4b-tts-2603", voice="alloy", input="Hello there.",
                                          response_format=fmt, extra_body={"seed": 1})
    assert response.response.headers["content-type"].startswith(
        {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
         "pcm": "audio/pcm"}[fmt])
    audio, rate = decode(response.content, fmt)
    duration = len(audio) / rate
    assert abs(duration - SECONDS) < 0.1, (fmt, duration)
    reference = expected_audio(reference_tts)
    if fmt in ("pcm", "wav", "flac"):  # lossless: the model's samples, as 16-bit
        assert_pcm_equal(np.round(audio * 32767), reference)
    else:
        rms, ref_rms = float(np.sqrt(np.mean(audio**2))), float(np.sqrt(np.mean(np.clip(reference, -1, 1) ** 2)))
        assert 0.5 * ref_rms < rms < 2 * ref_rms


def test_ogg_is_ogg_opus(live):
    """"ogg" (the Rust server's name) is accepted as Ogg/Opus."""
    body = {"model": "m", "input": "Hello there.", "voice": "alloy", "seed": 1}
    ogg = httpx.post(live.url + "/v1/audio/speech", json={**body, "response_format": "ogg"}, timeout=60)
    assert ogg.status_code == 200 and ogg.headers["content-type"].startswith("audio/ogg")
    audio, rate = decode(ogg.content, "opus")
    assert rate == 48000 and abs(len(audio) / rate - SECONDS) < 0.1


def test_normalize_is_a_request_field(live):
    """On by default (the prompt reads "three"), off with "normalize": false (it reads "3"): the
    text tokens in the usage differ, and a non-boolean is a 400."""
    body = {"model": "m", "input": "I have 3 apples.", "voice": "alloy", "seed": 1, "stream_format": "sse",
            "response_format": "pcm"}
    tokens = {}
    for normalize in (True, False):
        with httpx.stream("POST", live.url + "/v1/audio/speech", json={**body, "normalize": normalize},
                          timeout=60) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        tokens[normalize] = events[-1]["usage"]["input_tokens"]
    assert tokens[True] > tokens[False]  # "three" is longer than "3" in this byte-level vocabulary
    bad = httpx.post(live.url + "/v1/audio/speech", json={**body, "normalize": "no"}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "normalize"


def test_streamed_audio_is_chunked_and_decodes(client, reference_tts):
    for fmt in ("wav", "mp3"):
        with client.audio.speech.with_streaming_response.create(
                model="voxtral-4b-tts-2603", voice="alloy", input="Hello there.", response_format=fmt,
                stream_format="audio", extra_body={"seed": 1}) as response:
            assert response.headers.get("transfer-encoding") == "chunked"
            data = b"".join(response.iter_bytes())
        audio, rate = decode(data, fmt)
        assert abs(len(audio) / rate - SECONDS) < 0.1
    # the streamed WAV carries the model's samples (the header says "length unknown")
    assert_pcm_equal(np.round(audio_wav(client) * 32767), expected_audio(reference_tts))


def audio_wav(client) -> np.ndarray:
    with client.audio.speech.with_streaming_response.create(
            model="voxtral-4b-tts-2603", voice="alloy", input="Hello there.", response_format="wav",
            stream_format="audio", extra_body={"seed": 1}) as response:
        data = b"".join(response.iter_bytes())
    return np.frombuffer(data[44:], "<i2").astype(np.float32) / 32767


@pytest.mark.parametrize("body_extra", [{"stream_format": "sse"}, {"stream": True}])
def test_sse_events(live, reference_tts, body_extra):
    body = {"model": "voxtral-4b-tts-2603", "input": "Hello there.", "voice": "alloy", "response_format": "pcm",
            "seed": 1, **body_extra}
    with httpx.stream("POST", live.url + "/v1/audio/speech", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert_pcm_equal(np.frombuffer(pcm, "<i2"), expected_audio(reference_tts))
    usage = events[-1]["usage"]
    assert usage["output_tokens"] == FRAMES and usage["input_tokens"] == len("Hello there.".encode())
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_speed_changes_duration(client):
    response = client.audio.speech.create(model="m", voice="alloy", input="Hello there.", response_format="wav",
                                          speed=2.0, extra_body={"seed": 1})
    audio, rate = decode(response.content, "wav")
    assert abs(len(audio) / rate - SECONDS / 2) < 0.02


def test_temperature_is_a_request_field(client, reference_tts):
    """Sampling at a temperature: the library's audio for the same seed, reproducible, and not
    the argmax's."""
    def speak(**extra):
        return client.audio.speech.create(model="m", voice="alloy", input="Hello there.", response_format="pcm",
                                          extra_body=extra).content

    hot = speak(seed=1, temperature=1.2)
    assert hot == speak(seed=1, temperature=1.2) != speak(seed=1)
    expected = reference_tts.synthesize("Hello there.", voice="neutral_female", seed=1, max_frames=FRAMES,
                                        temperature=1.2).audio
    assert_pcm_equal(np.frombuffer(hot, "<i2"), expected)


def test_voices_aliases_and_voice_objects(client, live, reference_tts):
    listing = httpx.get(live.url + "/v1/audio/voices").json()
    by_id = {v["id"]: v for v in listing["voices"]}
    assert set(by_id) == {"casual_male", "neutral_female"} and by_id["casual_male"]["aliases"] == ["echo"]
    assert by_id["neutral_female"]["language"] == "en" and by_id["neutral_female"]["gender"] == "female"
    by_name = client.audio.speech.create(model="m", voice="casual_male", input="Hi.", response_format="pcm",
                                         extra_body={"seed": 3}).content
    by_alias = client.audio.speech.create(model="m", voice="echo", input="Hi.", response_format="pcm",
                                          extra_body={"seed": 3}).content
    by_object = httpx.post(live.url + "/v1/audio/speech", timeout=60, json={
        "model": "m", "input": "Hi.", "voice": {"id": "casual_male"}, "response_format": "pcm", "seed": 3}).content
    assert by_name == by_alias == by_object
    assert_pcm_equal(np.frombuffer(by_name, "<i2"), expected_audio(reference_tts, "Hi.", "casual_male", 3))


def test_models_health_ready(client, live):
    assert [m.id for m in client.models.list().data] == ["voxtral-4b-tts-2603"]
    assert httpx.get(live.url + "/health").json() == {"status": "ok"}
    assert httpx.get(live.url + "/ready").status_code == 200


def test_long_input_is_split_and_streamed_in_parts(live):
    from voxtral_tts.text import split_text

    text = " ".join(f"Sentence number {i} is here." for i in range(30))  # > 400 characters
    parts = len(split_text(text))
    body = {"model": "m", "input": text, "voice": "alloy", "response_format": "pcm", "seed": 1, "stream_format": "sse"}
    with httpx.stream("POST", live.url + "/v1/audio/speech", json=body, timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert parts == 3 and events[-1]["usage"]["output_tokens"] == parts * FRAMES
    # progress: each delta names the part being spoken (from 0) and the number of parts
    spoken = [(e["part"], e["parts"]) for e in events if e["type"] == "speech.audio.delta"]
    assert [part for part, _ in spoken] == sorted(part for part, _ in spoken)
    assert {part for part, _ in spoken} == set(range(parts)) and {total for _, total in spoken} == {parts}
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["parts"] == parts


# --- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "body, param, fragment",
    [
        ({"input": ""}, "input", "text is empty"),
        ({"input": "x" * 4097}, "input", "4097 characters long; the limit is 4096"),
        ({"voice": "darth"}, "voice", "unknown voice 'darth'"),
        ({"response_format": "m4a"}, "response_format", "response_format"),
        ({"speed": 5.0}, "speed", "between 0.25 and 4.0"),
        ({"temperature": 2.5}, "temperature", "from 0 (greedy) to 2, got 2.5"),
        ({"temperature": -1}, "temperature", "from 0 (greedy) to 2"),
        ({"temperature": "1"}, "temperature", "temperature"),
        ({"ref_audio": "aGVsbG8="}, "ref_audio", "needs the model directory"),  # an engine: no codec weights
    ],
)
def test_bad_input_is_400_in_openai_shape(live, body, param, fragment):
    response = httpx.post(live.url + "/v1/audio/speech", timeout=60,
                          json={"model": "m", "input": "Hi.", "voice": "alloy", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and fragment in error["message"]


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="unknown voice"):
        client.audio.speech.create(model="m", voice="nobody", input="Hi.")


def test_oversized_body_is_413(live):
    response = httpx.post(live.url + "/v1/audio/speech", timeout=60,
                          content=json.dumps({"model": "m", "input": "x" * 100_000, "voice": "alloy"}),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_two_concurrent_clients(client, reference_tts):
    results = {}

    def request(seed):
        results[seed] = client.audio.speech.create(model="m", voice="alloy", input="Hello there.",
                                                   response_format="pcm", extra_body={"seed": seed}).content

    threads = [threading.Thread(target=request, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert_pcm_equal(np.frombuffer(results[1], "<i2"), expected_audio(reference_tts, seed=1))
    assert_pcm_equal(np.frombuffer(results[2], "<i2"), expected_audio(reference_tts, seed=2))


# --- loading, overload, disconnects, internal errors --------------------------------------------------

def loading_server(tiny_engine_dir) -> tuple[Live, threading.Event]:
    """A server whose model loads only once the returned event is set."""
    gate = threading.Event()

    def load():
        gate.wait(30)
        return voxtral_tts.load(tiny_engine_dir)

    return Live(create_app(load, ServerOptions(max_frames=FRAMES))), gate


def test_ready_is_503_until_loaded(tiny_engine_dir):
    server, gate = loading_server(tiny_engine_dir)
    try:
        assert httpx.get(server.url + "/health").status_code == 200
        response = httpx.get(server.url + "/ready")
        assert response.status_code == 503 and response.json()["error"]["code"] == "loading"
        speech = httpx.post(server.url + "/v1/audio/speech", json={"model": "m", "input": "Hi.", "voice": "alloy"})
        assert speech.status_code == 503
        gate.set()
        server.wait_ready()
    finally:
        gate.set()
        server.close()


def slow_server(tiny_engine_dir, max_queue: int):
    """A server on a held backend, one decoding slot, 40 frames per request."""
    holder = {}

    def load():
        tts = wrapped(voxtral_tts.load(tiny_engine_dir), HeldBackend)
        holder["model"] = tts.backend
        return tts

    app = create_app(load, ServerOptions(max_frames=40, max_queue=max_queue))
    holder["synthesizer"] = app.state.synthesizer
    server = Live(app)
    server.wait_ready()
    return server, holder


@pytest.fixture
def slow(tiny_engine_dir):
    server, holder = slow_server(tiny_engine_dir, max_queue=0)
    yield server, holder
    server.close()


def test_overloaded_is_503(slow):
    server, holder = slow
    body = {"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}
    with httpx.stream("POST", server.url + "/v1/audio/speech", json={**body, "stream_format": "audio"},
                      timeout=60) as first:
        chunks = first.iter_bytes()
        received = len(next(chunks))  # the first request is generating (held at frame HOLD_AT)
        second = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=60)
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert second.json()["error"]["code"] == "overloaded"
        holder["model"].released.set()
        received += len(b"".join(chunks))
    assert received == 40 * 1920 * 2  # and the first completes


def test_client_disconnect_stops_generation(slow):
    server, holder = slow
    body = {"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "pcm", "stream_format": "audio"}
    with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=60) as response:
        chunks = response.iter_bytes()  # held: a discarded iterator would close the connection now
        next(chunks)
        assert holder["model"].holding.wait(30)  # then the client goes away, the request held at frame HOLD_AT
    synthesizer = holder["synthesizer"]
    wait_until(lambda: any(request.cancelled for request in list(synthesizer._jobs)))  # the handler saw it
    holder["model"].released.set()
    wait_until(lambda: synthesizer._pending == 0)  # the request left the scheduler at the next step
    assert holder["model"].frames == HeldBackend.HOLD_AT + 1 and synthesizer.tts.scheduler.idle
    after = httpx.post(server.url + "/v1/audio/speech", json={**body, "stream_format": None}, timeout=60)
    assert after.status_code == 200  # the worker is free again


def test_internal_errors_do_not_leak(tiny_engine_dir):
    class BrokenCodec(Forwarding):
        def _codec(self, codes):
            raise RuntimeError("secret internal detail")

    def load():
        return wrapped(voxtral_tts.load(tiny_engine_dir), BrokenCodec)

    server = Live(create_app(load, ServerOptions(max_frames=FRAMES)))
    try:
        server.wait_ready()
        response = httpx.post(server.url + "/v1/audio/speech", json={"model": "m", "input": "Hi.", "voice": "alloy"})
        assert response.status_code == 500
        assert response.json()["error"] == {"message": "internal server error", "type": "server_error",
                                            "param": None, "code": None}
        assert "secret" not in response.text and "Traceback" not in response.text
    finally:
        server.close()


def test_voxtral_serve_command(tiny_engine_dir):
    """The console script: starts, loads, answers, and stops on SIGTERM."""
    import shutil
    import signal
    import subprocess
    import sys

    port = free_port()
    exe = shutil.which("voxtral-serve")
    cmd = ([exe] if exe else [sys.executable, "-m", "voxtral_tts.server.cli"]) + [
        str(tiny_engine_dir), "--port", str(port), "--max-frames", "3", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, (
                proc.stderr.read() if proc.poll() is not None else "timeout")
            time.sleep(0.1)
        response = httpx.post(url + "/v1/audio/speech", json={"model": "m", "input": "Hi.", "voice": "echo",
                                                              "response_format": "wav", "seed": 0}, timeout=60)
        assert response.status_code == 200 and len(response.content) == 44 + 3 * 1920 * 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_concurrent_requests_are_decoded_together(tiny_engine_dir, reference_tts):
    """With decoding slots, requests in flight share each backbone step; every request still gets
    exactly the audio it would get alone (its own seed, its own positions)."""
    widths = []

    class Recording(Forwarding):
        def _step(self, embeds, positions, slots):
            if not widths:  # the first request's first step waits until all three are submitted: they overlap
                wait_until(lambda: app.state.synthesizer._pending == 3)
            widths.append(len(slots))
            return self.inner.step(embeds, positions, slots)

    def load():
        return wrapped(voxtral_tts.load(tiny_engine_dir, max_batch=3), Recording)

    app = create_app(load, ServerOptions(max_frames=FRAMES))
    server = Live(app)
    try:
        server.wait_ready()
        long_text = " ".join(f"Sentence number {i} is here." for i in range(20))  # two parts
        requests = [("Hello there.", 1), ("Another voice, another seed.", 2), (long_text, 3)]
        results = {}

        def post(text, seed):
            response = httpx.post(server.url + "/v1/audio/speech", timeout=120, json={
                "model": "m", "input": text, "voice": "alloy", "response_format": "pcm", "seed": seed})
            results[seed] = response

        threads = [threading.Thread(target=post, args=r) for r in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for text, seed in requests:
            assert results[seed].status_code == 200
            assert_pcm_equal(np.frombuffer(results[seed].content, "<i2"),
                             expected_audio(reference_tts, text, seed=seed))
        assert max(widths) >= 2, widths
    finally:
        server.close()


def test_a_failed_step_fails_the_requests_in_flight_and_the_server_goes_on(tiny_engine_dir):
    """The backend raising inside a backbone step: the request in flight gets a 500 (no detail),
    the failure is logged, and the next request is served normally."""
    failures = {"left": 1}

    class FailingStep(Forwarding):
        def _step(self, embeds, positions, slots):
            if failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("device lost: secret detail")
            return self.inner.step(embeds, positions, slots)

    app = create_app(lambda: wrapped(voxtral_tts.load(tiny_engine_dir), FailingStep), ServerOptions(max_frames=FRAMES))
    server = Live(app)
    try:
        server.wait_ready()
        body = {"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}
        failed = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=60)
        assert failed.status_code == 500 and "secret" not in failed.text
        assert failed.json()["error"]["type"] == "server_error"
        ok = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=60)
        assert ok.status_code == 200 and len(ok.content) == FRAMES * 1920 * 2
        assert app.state.synthesizer._pending == 0  # counted out before its response could be sent
    finally:
        server.close()


def test_a_request_cancelled_while_queued_never_generates(tiny_engine_dir):
    """A client that goes away while its request waits behind another: the request leaves the
    queue without a frame generated for it, and the one in flight completes."""
    server, holder = slow_server(tiny_engine_dir, max_queue=1)  # room for one waiting request
    synthesizer = holder["synthesizer"]
    body = {"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "pcm", "stream_format": "audio"}
    try:
        with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=60) as first:
            chunks = first.iter_bytes()
            received = len(next(chunks))  # the first request is generating in the only slot (held at frame HOLD_AT)
            with pytest.raises(httpx.ReadTimeout):  # the second waits (no free slot) until its client gives up
                httpx.post(server.url + "/v1/audio/speech", json=body, timeout=0.3)
            wait_until(lambda: any(job and job.request.cancelled for job in list(synthesizer._submitted.queue)))
            holder["model"].released.set()
            wait_until(lambda: synthesizer._pending == 1)  # its cancellation took it out of the queue
            received += len(b"".join(chunks))
        assert received == 40 * 1920 * 2  # the first one completes, undisturbed
        wait_until(lambda: synthesizer._pending == 0)
        assert holder["model"].frames == 40  # not one frame for the cancelled request
    finally:
        server.close()


def test_oversized_streamed_body_is_413(live):
    """A chunked body (no Content-Length) is counted as it arrives and refused past the limit."""
    def body():
        yield b'{"model": "m", "voice": "alloy", "input": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = httpx.post(live.url + "/v1/audio/speech", content=body(), timeout=60,
                          headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_finish_reason_is_reported(live):
    """The tiny model never says END_AUDIO, so every part stops at the server's frame cap: whole
    files say so in a header, SSE in its done event."""
    body = {"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}
    response = httpx.post(live.url + "/v1/audio/speech", json=body, timeout=60)
    assert response.status_code == 200 and response.headers["x-finish-reason"] == "length"
    with httpx.stream("POST", live.url + "/v1/audio/speech", json={**body, "stream_format": "sse"},
                      timeout=60) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["finish_reason"] == "length"


def test_a_part_that_cannot_fit_is_a_400_before_any_audio(tiny_engine_dir):
    """Every part is checked against the KV cache up front: a later part too long for a small
    cache is a 400 for whole files and streams alike, not a stream cut short."""
    app = create_app(lambda: voxtral_tts.load(tiny_engine_dir, capacity=600), ServerOptions(max_frames=FRAMES))
    server = Live(app)
    try:
        server.wait_ready()
        text = "Hello there, friend. " * 19 + "😀" * 400  # the emoji part (kept: not normalised) needs far more
        # tokens than 600 positions
        for extra in ({}, {"stream_format": "sse"}, {"stream_format": "audio"}):
            response = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                                  json={"model": "m", "input": text, "voice": "alloy", "normalize": False, **extra})
            assert response.status_code == 400, extra
            assert "part 2 of 2" in response.json()["error"]["message"] and "KV cache holds 600" in response.text
    finally:
        server.close()


def test_a_failure_after_streaming_began_is_visible(tiny_engine_dir):
    """The backend fails after the first chunk went out: SSE ends with an error event in OpenAI's
    shape and no done event; a chunked audio stream is cut off, so the client sees an incomplete
    transfer rather than a clean end."""
    class FailsAtStep8(Forwarding):
        steps = 0

        def _step(self, embeds, positions, slots):
            FailsAtStep8.steps += 1
            if FailsAtStep8.steps % 8 == 0:
                raise RuntimeError("device lost: secret detail")
            return self.inner.step(embeds, positions, slots)

    app = create_app(lambda: wrapped(voxtral_tts.load(tiny_engine_dir), FailsAtStep8), ServerOptions(max_frames=20))
    server = Live(app)
    try:
        server.wait_ready()
        body = {"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}
        with httpx.stream("POST", server.url + "/v1/audio/speech", json={**body, "stream_format": "sse"},
                          timeout=60) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        assert events[0]["type"] == "speech.audio.delta"
        assert events[-1] == {"type": "error", "error": {"message": "internal server error", "type": "server_error",
                                                          "param": None, "code": None}}
        assert not any(e["type"] == "speech.audio.done" for e in events)
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", server.url + "/v1/audio/speech", json={**body, "stream_format": "audio"},
                              timeout=60) as response:
                for _ in response.iter_bytes():
                    pass
    finally:
        server.close()


@pytest.mark.parametrize("content, headers, fragment, param", [
    ('{"model": "m", "input": "hi", "voice": "\\ud800"}', {}, "unknown voice '\\ud800'", "voice"),
    (json.dumps({"model": "m", "input": "hi", "voice": "v" * 5000}), {}, "…'; GET /v1/audio/voices", "voice"),
    (json.dumps({"model": "m", "input": "hi", "speed": True}), {}, "speed: Input should be a valid number", "speed"),
    (json.dumps({"model": "m", "input": "hi", "seed": "1"}), {}, "seed: Input should be a valid integer", "seed"),
    (json.dumps({"model": "m", "input": "hi", "seed": True}), {}, "seed: Input should be a valid integer", "seed"),
    (json.dumps({"model": "m", "input": "hi", "stream": "yes"}), {}, "stream: Input should be a valid boolean",
     "stream"),
    ('{"model": "m", "input": ', {}, "the request body is not valid JSON", None),
    (json.dumps({"model": "m", "input": "hi"}), {"content-type": "text/plain"}, "must be a JSON object", None),
])
def test_bad_bodies_are_400_in_words(live, content, headers, fragment, param):
    """Unencodable or oversized fields, lax types, malformed JSON, a missing content type: 400 with
    a message a curl user understands, echoing at most a short, safe prefix of the input."""
    response = httpx.post(live.url + "/v1/audio/speech", content=content, timeout=60,
                          headers={"content-type": "application/json", **headers})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["param"] == param and len(error["message"]) < 300


def test_405_says_what_is_allowed(live):
    response = httpx.get(live.url + "/v1/audio/speech")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_model_that_fails_to_load_fails_liveness_without_leaking(tmp_path, caplog):
    """/health and /ready both 503 (an orchestrator restarts the process); the body says where to
    look, the log has the detail (paths, library text)."""
    import logging

    def load():
        raise RuntimeError(f"{tmp_path}/secret/backbone.onnx: onnxruntime says no")

    server = Live(create_app(load))
    try:
        with caplog.at_level(logging.ERROR, logger="voxtral_tts.server"):
            wait_until(lambda: httpx.get(server.url + "/ready").json()["error"]["code"] == "model_unavailable")
        for path in ("/health", "/ready"):
            response = httpx.get(server.url + path)
            assert response.status_code == 503 and str(tmp_path) not in response.text
            assert response.json()["error"]["message"] == "the model failed to load; see the server log"
        assert f"{tmp_path}/secret/backbone.onnx" in caplog.text
    finally:
        server.close()


def test_an_unreadable_voice_file_is_a_server_error(tiny_engine_dir, tmp_path, caplog):
    """A truncated preset file is the operator's fault: logged at ERROR when the model loads and
    answered with a 500 that names the voice, not a 400 blaming the client."""
    import logging
    import shutil

    engine = shutil.copytree(tiny_engine_dir, tmp_path / "engine")
    voice_file = engine / "voice_embedding" / "neutral_female.safetensors"
    voice_file.write_bytes(voice_file.read_bytes()[:50])
    with caplog.at_level(logging.ERROR, logger="voxtral_tts.server"):
        server = Live(create_app(lambda: voxtral_tts.load(engine), ServerOptions(max_frames=FRAMES)))
        try:
            server.wait_ready()
            response = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                                  json={"model": "m", "input": "Hi.", "voice": "alloy"})
            assert response.status_code == 500 and response.json()["error"]["code"] == "voice_unavailable"
            assert str(engine) not in response.text
            ok = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                            json={"model": "m", "input": "Hi.", "voice": "echo", "response_format": "pcm"})
            assert ok.status_code == 200
        finally:
            server.close()
    assert "voice neutral_female cannot be read" in caplog.text


def test_openapi_describes_the_real_responses(live):
    """/openapi.json names the audio content types, the error statuses with OpenAI's error shape,
    and the input constraints (not FastAPI's default 200/422)."""
    spec = httpx.get(live.url + "/openapi.json").json()
    speech = spec["paths"]["/v1/audio/speech"]["post"]
    responses = speech["responses"]
    # no FastAPI 422 for OpenAI's request (its validation errors are 400); 422 is Mistral's, for its request's
    # invalid fields (test_mistral_api.py)
    assert set(responses) == {"200", "400", "413", "422", "500", "503"}
    assert responses["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MistralValidationError"}
    assert {"audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/pcm",
            "text/event-stream"} <= set(responses["200"]["content"])
    for status in ("400", "413", "500", "503"):  # OpenAI's error shape, or Mistral's for Mistral's request
        assert responses[status]["content"]["application/json"]["schema"] == {"anyOf": [
            {"$ref": "#/components/schemas/ErrorResponse"}, {"$ref": "#/components/schemas/MistralError"}]}
    assert speech["requestBody"]["content"]["application/json"]["schema"] == {"anyOf": [
        {"$ref": "#/components/schemas/SpeechRequest"}, {"$ref": "#/components/schemas/MistralSpeechRequest"}]}
    fields = spec["components"]["schemas"]["SpeechRequest"]["properties"]
    assert fields["input"]["maxLength"] == 4096 and fields["input"]["minLength"] == 1
    assert (fields["speed"]["minimum"], fields["speed"]["maximum"]) == (0.25, 4.0)
    assert fields["seed"]["anyOf"][0]["minimum"] == 0
    assert "refused" in fields["ref_audio"]["description"]


def test_schema_driven_fuzzing_finds_no_5xx_and_no_conformance_failure(live, tmp_path):
    """schemathesis, every check, against /openapi.json (which lists the loaded voices): no 5xx,
    every answer as the schema says, every schema-valid request accepted (text that normalises to
    nothing is spoken as given: test_operations.py). Bounded: 40 examples per operation, a fixed
    seed (a failure names its case and reproduces)."""
    pytest.importorskip("schemathesis")
    import shutil
    import subprocess
    import sys

    exe = shutil.which("schemathesis") or shutil.which("st")
    cmd = [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]
    proc = subprocess.run(cmd + ["run", live.url + "/openapi.json", "--checks", "all", "--max-examples", "40",
                                 "--seed", "1", "--request-timeout", "30", "--no-color"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache: not in the repo
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout


def test_a_whole_file_is_encoded_as_its_audio_arrives(live, monkeypatch):
    """Bounded memory per request: a whole-file response's float audio is handed to the encoder
    chunk by chunk as it is generated (≤ 25 frames at a time) and released, never gathered into
    one array of the request's total length; only the encoded file is held."""
    from voxtral_tts.server import app as server_app
    from voxtral_tts.text import split_text

    fed = []

    class Recording(server_app.StreamEncoder):
        def encode(self, audio):
            fed.append(len(audio))
            return super().encode(audio)

    monkeypatch.setattr(server_app, "StreamEncoder", Recording)
    text = " ".join(f"Sentence number {i} is here." for i in range(30))  # three parts
    response = httpx.post(live.url + "/v1/audio/speech", timeout=60,
                          json={"model": "m", "input": text, "voice": "alloy", "response_format": "mp3"})
    assert response.status_code == 200
    parts = len(split_text(text))
    assert parts == 3 and sum(fed) == parts * FRAMES * 1920
    assert len(fed) >= 2 * parts and max(fed) <= 25 * 1920
