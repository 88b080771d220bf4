"""Operating the server (docs/operations.md): /metrics after known traffic, one log line per
request with its id, API keys, Retry-After from the queue, text that normalises to nothing, and a
real ``voxtral-serve`` drained by SIGTERM within its graceful timeout."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("prometheus_client")
pytest.importorskip("onnxruntime")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import voxtral_tts  # noqa: E402
from voxtral_tts.errors import VoxtralError  # noqa: E402
from voxtral_tts.server.access_log import ACCESS_LOGGER, JsonFormatter, RequestIdFilter  # noqa: E402
from voxtral_tts.server.app import create_app  # noqa: E402
from voxtral_tts.server.auth import APIKeys, RequireKey, keys_from  # noqa: E402
from voxtral_tts.server.config import parser, serve_config  # noqa: E402
from voxtral_tts.server.schemas import ServerOptions  # noqa: E402
from voxtral_tts.testing import free_port  # noqa: E402

from test_server import FRAMES, SECONDS, Live, slow_server, wait_until  # noqa: E402
from test_web import browser  # noqa: E402, F401  (the fixture: a real browser, or a skip)

SPEECH = "/v1/audio/speech"
BODY = {"model": "m", "input": "Hello there.", "voice": "alloy", "response_format": "pcm"}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def access_lines(caplog):
    """The access log's records (with the request id filter on, as ``voxtral-serve`` sets it)."""
    caplog.set_level(logging.DEBUG, logger=ACCESS_LOGGER)
    caplog.set_level(logging.INFO)
    id_filter = RequestIdFilter()
    caplog.handler.addFilter(id_filter)
    yield caplog
    caplog.handler.removeFilter(id_filter)


def access(caplog) -> list[dict]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER]


@pytest.fixture(scope="module")
def server(tiny_engine_dir):
    live = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir, max_batch=2),
                           ServerOptions(max_frames=FRAMES)))
    live.wait_ready()
    yield live
    live.close()


# --- metrics ------------------------------------------------------------------------------------------

def test_metrics_count_known_traffic(tiny_engine_dir):
    live = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir, max_batch=2), ServerOptions(max_frames=FRAMES)))
    try:
        live.wait_ready()
        for seed in (1, 2):
            assert httpx.post(live.url + SPEECH, json={**BODY, "seed": seed}, timeout=60).status_code == 200
        with httpx.stream("POST", live.url + SPEECH, json={**BODY, "stream_format": "sse"}, timeout=60) as stream:
            assert '"speech.audio.done"' in list(stream.iter_lines())[-2]
        assert httpx.post(live.url + SPEECH, json={**BODY, "voice": "darth"}, timeout=60).status_code == 400
        assert httpx.get(live.url + "/no/such/path").status_code == 404
        ready = httpx.get(live.url + "/ready").json()
        assert ready["in_flight"] == 0 and ready["queued"] == 0
        response = httpx.get(live.url + "/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
    finally:
        live.close()
    requests = "voxtral_requests_total"
    assert value(found, requests, endpoint=SPEECH, status="200", code="") == 3
    assert value(found, requests, endpoint=SPEECH, status="400", code="unknown_voice") == 1
    assert value(found, requests, endpoint="unmatched", status="404", code="") == 1
    assert value(found, requests, endpoint="/ready", status="200", code="") == 2  # wait_ready's and ours
    assert value(found, "voxtral_request_duration_seconds_count", endpoint=SPEECH) == 4
    # the tiny random model never says END_AUDIO: each request stops at its 10-frame budget
    assert value(found, "voxtral_speech_finished_total", reason="length") == 3
    assert value(found, "voxtral_speech_finished_total", reason="end") == 0
    assert value(found, "voxtral_speech_finished_total", reason="cancelled") == 0
    assert value(found, "voxtral_frames_total") == 3 * FRAMES
    assert value(found, "voxtral_audio_seconds_total") == pytest.approx(3 * SECONDS)
    assert value(found, "voxtral_time_to_first_audio_seconds_count") == 3
    assert value(found, "voxtral_real_time_factor_count") == 3
    assert value(found, "voxtral_decode_batch_rows_count") >= FRAMES  # one observation per step
    assert value(found, "voxtral_decode_batch_rows_bucket", le="2.0") == value(found,
                                                                              "voxtral_decode_batch_rows_count")
    assert value(found, "voxtral_decode_slots") == 2 and value(found, "voxtral_decode_slots_free") == 2
    assert value(found, "voxtral_requests_in_flight") == 0 and value(found, "voxtral_requests_queued") == 0
    assert value(found, "voxtral_prefix_cache_misses_total") == 1  # one voice: computed once, then found
    assert value(found, "voxtral_prefix_cache_hits_total") == 2
    assert value(found, "voxtral_prefix_cache_bytes") > 0
    assert value(found, "voxtral_model_load_seconds") > 0
    info = [labels for (name, labels) in found if name == "voxtral_model_info"]
    assert info and dict(info[0])["backend"] == "onnxruntime" and dict(info[0])["slots"] == "2"


def test_ready_and_metrics_report_queued_and_in_flight(tiny_engine_dir):
    live, holder = slow_server(tiny_engine_dir, max_queue=2)
    try:
        body = {**BODY, "stream_format": "audio"}
        with httpx.stream("POST", live.url + SPEECH, json=body, timeout=60) as first:
            chunks = first.iter_bytes()
            next(chunks)  # generating, held at frame HOLD_AT
            waiting = threading.Thread(target=httpx.post, args=(live.url + SPEECH,),
                                       kwargs={"json": BODY, "timeout": 60})
            waiting.start()
            wait_until(lambda: httpx.get(live.url + "/ready").json()["queued"] == 1)
            ready = httpx.get(live.url + "/ready").json()
            found = samples(httpx.get(live.url + "/metrics").text)
            holder["model"].released.set()
            b"".join(chunks)
        waiting.join(60)
    finally:
        holder["model"].released.set()
        live.close()
    assert ready["in_flight"] == 1 and ready["queued"] == 1
    assert value(found, "voxtral_requests_in_flight") == 1 and value(found, "voxtral_requests_queued") == 1
    assert value(found, "voxtral_decode_slots_free") == 0


# --- one line per request, with its id ------------------------------------------------------------------

def test_a_request_id_goes_through_the_log(server, access_lines):
    """The client's X-Request-Id comes back and is on the request's line and on every line logged
    on its behalf — the cut-part warning of the runtime included, once."""
    response = httpx.post(server.url + SPEECH, json=BODY, headers={"X-Request-Id": "op-test-42"}, timeout=60)
    assert response.status_code == 200 and response.headers["x-request-id"] == "op-test-42"
    wait_until(lambda: any(line.get("request_id") == "op-test-42" for line in access(access_lines)))
    line = next(line for line in access(access_lines) if line.get("request_id") == "op-test-42")
    assert line["method"] == "POST" and line["path"] == SPEECH and line["status"] == 200
    assert line["voice"] == server.app.state.synthesizer.tts.voice_bank.resolve_name("alloy")  # the preset's name
    assert line["format"] == "pcm" and line["text_chars"] == len("Hello there.") and line["frames"] == FRAMES
    assert line["finish_reason"] == "length" and line["client_gone"] is False
    assert line["latency_s"] >= line["ttfa_s"] > 0
    cut = [r for r in access_lines.records if "stopped at its frame budget" in r.getMessage()]
    assert len(cut) == 1 and cut[0].request_id == "op-test-42"
    entry = json.loads(JsonFormatter().format(next(r for r in access_lines.records if r.name == ACCESS_LOGGER)))
    assert {"ts", "level", "logger", "request_id", "message", "status", "latency_s"} <= set(entry)
    # no id sent, or one that is not an id: a new one
    generated = httpx.get(server.url + "/v1/models", headers={"X-Request-Id": "not an id"}).headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0


def test_an_abandoned_request_is_logged_as_such(tiny_engine_dir, access_lines):
    """A stream whose client leaves, and a whole file whose client times out, each get their line:
    the client went away, the request was cancelled."""
    live, holder = slow_server(tiny_engine_dir, max_queue=2)
    try:
        with httpx.stream("POST", live.url + SPEECH, json={**BODY, "stream_format": "audio"}, timeout=60,
                          headers={"X-Request-Id": "left-stream"}) as response:
            chunks = response.iter_bytes()  # held: a discarded iterator would close the connection now
            next(chunks)
            assert holder["model"].holding.wait(30)
        with pytest.raises(httpx.ReadTimeout):  # a whole file waits behind it: the client gives up
            httpx.post(live.url + SPEECH, json=BODY, timeout=1.5, headers={"X-Request-Id": "left-file"})
        wait_until(lambda: {"left-stream", "left-file"} <= {line["request_id"] for line in access(access_lines)})
        holder["model"].released.set()
    finally:
        holder["model"].released.set()
        live.close()
    lines = {line["request_id"]: line for line in access(access_lines)}
    assert lines["left-stream"]["status"] == 200 and lines["left-stream"]["client_gone"] is True
    assert lines["left-stream"]["finish_reason"] == "cancelled"
    assert lines["left-file"]["client_gone"] is True and lines["left-file"]["finish_reason"] == "cancelled"
    # the worker thread's line about the cancelled generation carries the request's id too
    stopped = [r for r in access_lines.records if r.getMessage().startswith("request cancelled after")]
    assert [r.request_id for r in stopped] == ["left-stream"]


# --- API keys -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(tiny_engine_dir):
    live = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir),
                           ServerOptions(max_frames=FRAMES, api_keys=("key-one", "key-two"))))
    live.wait_ready()
    yield live
    live.close()


def test_the_api_needs_a_key(keyed):
    no_key = httpx.post(keyed.url + SPEECH, json=BODY, timeout=60)
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert no_key.json()["error"]["code"] == "invalid_api_key" and set(no_key.json()["error"]) == {
        "message", "type", "param", "code"}
    wrong = httpx.post(keyed.url + SPEECH, json=BODY, headers={"Authorization": "Bearer key-three"}, timeout=60)
    assert wrong.status_code == 401
    ok = httpx.post(keyed.url + SPEECH, json=BODY, headers={"Authorization": "Bearer key-two"}, timeout=60)
    assert ok.status_code == 200 and len(ok.content) == FRAMES * 1920 * 2
    assert httpx.get(keyed.url + "/v1/audio/voices").status_code == 401
    assert httpx.get(keyed.url + "/v2/audio/voices").status_code == 401  # the SDK's voice search
    # Mistral's request gets Mistral's error shape
    mistral = httpx.post(keyed.url + SPEECH, json={"input": "Hi.", "voice_id": "alloy"}, timeout=60)
    assert mistral.status_code == 401 and mistral.json()["object"] == "error"
    assert mistral.json()["code"] == "invalid_api_key"
    # probes, metrics and the page stay open; the page is told to ask for the key
    for path in ("/health", "/ready", "/metrics", "/"):
        assert httpx.get(keyed.url + path).status_code == 200, path
    assert httpx.get(keyed.url + "/web/config").json()["api_key_required"] is True
    # the OpenAI SDK sends its api_key as the Bearer key
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key="key-one", max_retries=0)
    speech = client.audio.speech.create(model="m", voice="alloy", input="Hi.", response_format="wav")
    assert speech.content[:4] == b"RIFF"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_the_page_asks_for_the_key(keyed, browser):  # noqa: F811 (the fixture imported above)
    """With keys, the page at / shows a key field, says it needs the key, and once given one loads
    the voices and speaks with it."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))

    def wait(expression: str, timeout: float = 20):  # polled: the page's CSP forbids Playwright's eval
        deadline = time.time() + timeout
        while not tab.evaluate(expression):
            assert time.time() < deadline, (expression, tab.inner_text("#status"), tab.inner_text("#error"))
            time.sleep(0.02)

    try:
        tab.goto(keyed.url + "/")
        wait("voxtralPage.state === 'key'")
        assert tab.is_visible("#api-key") and "API key" in tab.inner_text("#status")
        tab.fill("#api-key", "key-one")
        tab.dispatch_event("#api-key", "change")
        wait("voxtralPage.state === 'idle'")
        tab.fill("#text", "Hello there.")
        tab.click("#speak")
        wait("voxtralPage.state === 'done'", 60)
        assert tab.evaluate("voxtralPage.lastStatus") == 200 and errors == []
    finally:
        tab.close()


def test_a_websocket_handshake_needs_a_key():
    """On a WebSocket under /v1/: 401 without a key, accepted with the header or OpenAI's
    subprotocol form; elsewhere open."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    async def echo(websocket: WebSocket):
        await websocket.accept(subprotocol=(websocket.scope.get("subprotocols") or [None])[0])
        await websocket.send_text("hello")
        await websocket.close()

    app = RequireKey(Starlette(routes=[WebSocketRoute("/v1/realtime", echo), WebSocketRoute("/open", echo)]),
                     APIKeys(["s3cret"]))
    client = TestClient(app)
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect("/v1/realtime"):
            pass
    assert refused.value.status_code == 401 and refused.value.json()["error"]["code"] == "invalid_api_key"
    with client.websocket_connect("/v1/realtime", headers={"Authorization": "Bearer s3cret"}) as ws:
        assert ws.receive_text() == "hello"
    with client.websocket_connect("/v1/realtime", subprotocols=["openai-insecure-api-key.s3cret"]) as ws:
        assert ws.receive_text() == "hello"
    with client.websocket_connect("/open") as ws:
        assert ws.receive_text() == "hello"


def test_the_realtime_route_needs_a_key_and_takes_it_as_a_subprotocol(keyed):
    """The live realtime WebSocket behind --api-key: refused without the key; with it as the page
    sends it (a browser cannot set headers), accepted, answering with the plain subprotocol."""
    import asyncio

    import websockets

    url = keyed.url.replace("http://", "ws://") + "/v1/audio/speech/realtime"

    async def run():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 401
        protocols = ["voxtral-realtime", "openai-insecure-api-key.key-two"]
        async with websockets.connect(url, subprotocols=protocols) as ws:
            assert ws.subprotocol == "voxtral-realtime"
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session.created"

    failures = []  # on a thread of its own: the browser fixture's event loop may be running on this one
    thread = threading.Thread(target=lambda: failures.extend(_raised(lambda: asyncio.run(run()))))
    thread.start()
    thread.join(120)
    assert not thread.is_alive() and not failures, failures


def _raised(call) -> list:
    try:
        call()
    except BaseException as exc:  # noqa: B036 (handed to the test's thread, which fails with it)
        return [exc]
    return []


def test_keys_come_from_flags_and_the_environment(tiny_engine_dir, monkeypatch):
    assert keys_from(["a"], {"VOXTRAL_API_KEYS": "b, c\nd"}) == ("a", "b", "c", "d")
    assert keys_from(None, {}) == ()
    keys = APIKeys(["a", "bb"])
    assert keys.check("bb") and not keys.check("b") and not keys.check(None) and "bb" not in repr(keys)
    assert keys.authorize({"Authorization": "bearer a"}) and not keys.authorize({"Authorization": "Basic a"})
    assert APIKeys().authorize({})  # no keys: open
    monkeypatch.setenv("VOXTRAL_API_KEYS", "from-env")
    options = serve_config(parser().parse_args([str(tiny_engine_dir), "--api-key", "from-flag"])).server
    assert options.api_keys == ("from-flag", "from-env") and "from-" not in repr(options)


@pytest.mark.parametrize("args, message", [
    (["--ssl-certfile", "c.pem"], "--ssl-certfile and --ssl-keyfile go together"),
    (["--ssl-certfile", "missing.pem", "--ssl-keyfile", "missing.pem"], "--ssl-certfile: no such file"),
    (["--metrics-need-key"], "--metrics-need-key needs API keys"),
    (["--graceful-timeout", "-1"], "--graceful-timeout must be at least 0"),
])
def test_bad_operation_options_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("VOXTRAL_API_KEYS", raising=False)
    with pytest.raises(VoxtralError, match=message):
        serve_config(parser().parse_args([str(tmp_path), *args]))


# --- admission ---------------------------------------------------------------------------------------------

def test_refused_clients_are_told_to_come_back_one_after_another(tiny_engine_dir):
    """Beyond the queue: 503 with a Retry-After from the queue's state, later for each client
    refused after another (no completion yet: 1 s apart), so that they return in order."""
    live, holder = slow_server(tiny_engine_dir, max_queue=0)
    try:
        with httpx.stream("POST", live.url + SPEECH, json={**BODY, "stream_format": "audio"}, timeout=60) as first:
            chunks = first.iter_bytes()
            next(chunks)
            refused = [httpx.post(live.url + SPEECH, json=BODY, timeout=60) for _ in range(3)]
            holder["model"].released.set()
            b"".join(chunks)
    finally:
        holder["model"].released.set()
        live.close()
    assert [r.status_code for r in refused] == [503] * 3
    assert all(r.json()["error"]["code"] == "overloaded" for r in refused)
    assert [r.headers["retry-after"] for r in refused] == ["1", "2", "3"]
    waits = [int(r.headers["retry-after-ms"]) for r in refused]
    assert waits == sorted(waits) and waits[0] <= 1000 < waits[1] <= 2000 < waits[2]


# --- schema and server agree ---------------------------------------------------------------------------------

def test_text_that_normalises_to_nothing_is_spoken_as_given(server):
    """Schema-valid input that the normaliser empties (an emoji, a private-use character) is spoken
    as given, as /openapi.json says: no 400 contradicting the schema (schemathesis ST202)."""
    for text in ("\U0001f600 \U000f8f4c", "\U000f8f4c"):
        response = httpx.post(server.url + SPEECH, json={**BODY, "input": text}, timeout=60)
        assert response.status_code == 200 and len(response.content) == FRAMES * 1920 * 2
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "spoken as given" in spec["components"]["schemas"]["SpeechRequest"]["properties"]["normalize"]["description"]


# --- a real voxtral-serve: TLS, keys, JSON log, SIGTERM -------------------------------------------------------

def self_signed(tmp_path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


class Serve:
    """``voxtral-serve`` as a subprocess over HTTPS with a key, its log as JSON lines."""

    KEY = "sub-process-key"

    def __init__(self, engine_dir, tmp_path, *args: str):
        cert, keyfile = self_signed(tmp_path)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        exe = shutil.which("voxtral-serve")
        cmd = ([exe] if exe else [sys.executable, "-m", "voxtral_tts.server.cli"]) + [
            str(engine_dir), "--port", str(self.port), "--log-format", "json", "--ssl-certfile", cert,
            "--ssl-keyfile", keyfile, "--max-batch", "1", *args]
        self.log_path = tmp_path / "serve.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "VOXTRAL_API_KEYS": self.KEY})
        self.client = httpx.Client(base_url=self.url, verify=False, timeout=60,
                                   headers={"Authorization": f"Bearer {self.KEY}"})
        deadline = time.time() + 90
        while True:
            try:
                if self.client.get("/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, self.log()
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def close(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log_file.close()


LONG_TEXT = " ".join(["This sentence is one of many that make a long request for the drain to cut."] * 40)


def start_long_stream(serve: Serve, request_id: str) -> tuple[threading.Thread, list[dict], threading.Event]:
    """A long SSE request on its own thread: its events, and an event set at its first audio."""
    events: list[dict] = []
    started = threading.Event()

    def run():
        body = {**BODY, "input": LONG_TEXT, "stream_format": "sse"}
        try:
            with serve.client.stream("POST", SPEECH, json=body, headers={"X-Request-Id": request_id}) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        started.set()
        except httpx.HTTPError as exc:
            events.append({"type": "transport", "error": repr(exc)})
        started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, events, started


def test_sigterm_drains_then_ends_what_is_left_within_the_graceful_timeout(tiny_engine_dir, tmp_path):
    serve = Serve(tiny_engine_dir, tmp_path, "--graceful-timeout", "1.5", "--max-frames", "2048")
    try:
        assert serve.client.post(SPEECH, json=BODY, headers={"Authorization": ""}).status_code == 401
        thread, events, started = start_long_stream(serve, "long-one")
        assert started.wait(60) and events[0]["type"] == "speech.audio.delta", events
        signalled = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = serve.client.get("/ready")  # still listening while it drains, taken out of the pool
        refused = serve.client.post(SPEECH, json=BODY)
        serve.proc.wait(30)
        took = time.monotonic() - signalled
        thread.join(30)
        lines = serve.lines()
    finally:
        serve.close()
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "shutting_down"
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert serve.proc.returncode == 0 and took < 1.5 + 5, took
    # the client sees the end: the stream's error event, no done event
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "shutting_down", events[-3:]
    assert not any(event["type"] == "speech.audio.done" for event in events)
    line = next(line for line in lines if line.get("request_id") == "long-one" and "status" in line)
    assert line["status"] == 200 and line["finish_reason"] == "failed" and line["error"] == "shutting_down"
    assert any("graceful timeout" in line["message"] and line["level"] == "WARNING" for line in lines)
    assert Serve.KEY not in serve.log()


def test_a_second_sigterm_exits_at_once(tiny_engine_dir, tmp_path):
    serve = Serve(tiny_engine_dir, tmp_path, "--graceful-timeout", "60", "--max-frames", "2048")
    try:
        thread, events, started = start_long_stream(serve, "long-two")
        assert started.wait(60)
        serve.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert serve.proc.poll() is None  # draining: the long request goes on
        signalled = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        serve.proc.wait(30)
        took = time.monotonic() - signalled
        thread.join(30)
    finally:
        serve.close()
    assert took < 4, took
    assert not any(event["type"] == "speech.audio.done" for event in events)  # the client saw a cut
