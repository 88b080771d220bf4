"""The speech server on Ray Serve: one local single-node Ray cluster and one deployment of two
replicas for the whole module (tiny engine), driven through Ray's HTTP proxy with the official
``openai`` client and httpx. The replicas' backend is gated by a file the tests create and remove:
while ``closed`` exists, a replica holds its decode loop from the fourth step after the gate closed
(its first streamed chunk, two frames, is out by then). The command-line checks at the end need
no cluster (nor Ray)."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.runtime.constants import STREAM_CHUNKS  # noqa: E402
from voxtral_tts.server.schemas import ServerOptions  # noqa: E402
from voxtral_tts.testing import Forwarding, free_port  # noqa: E402

REPLICA_HEADER = "X-Voxtral-Replica"
# the frame cap: every request here makes exactly 10 frames — with this text and voice the tiny
# model draws END_AUDIO before it for about 1 seed in 400 (seed 43), never for seeds 0-7
FRAMES = 10
BODY = {"model": "m", "input": "Hello there.", "voice": "alloy", "seed": 1}
PCM_BYTES = FRAMES * 1920 * 2
# each replica admits MAX_BATCH + MAX_QUEUE = 6 requests
MAX_BATCH, MAX_QUEUE = 2, 4
ADMITTED = 2 * (MAX_BATCH + MAX_QUEUE)
HOLD_AT = STREAM_CHUNKS[0] + 1  # steps a replica takes after the gate closes before it holds (first chunk out)


class Gated(Forwarding):
    """A backend that holds its decode loop while ``gate/closed`` exists, from the ``HOLD_AT + 1``-th
    step after the gate closed on (it writes ``gate/held-<pid>`` then; never longer than 60 s), and
    counts its steps in ``gate/steps-<pid>``."""

    def __init__(self, inner, gate: str):
        super().__init__(inner)
        self.gate = Path(gate)
        self.steps = 0
        self.steps_closed = 0  # steps since the gate was found closed

    def flow(self, hidden, noise, semantic=None, expressiveness=None):
        if (self.gate / "closed").exists():
            self.steps_closed += 1
            if self.steps_closed > HOLD_AT:
                (self.gate / f"held-{os.getpid()}").touch()
                deadline = time.time() + 60
                while (self.gate / "closed").exists() and time.time() < deadline:
                    time.sleep(0.01)
                self.steps_closed = 0
        else:
            self.steps_closed = 0
        self.steps += 1
        (self.gate / f"steps-{os.getpid()}").write_text(str(self.steps))
        return self.inner.flow(hidden, noise, semantic, expressiveness)


def gated_load(engine_dir: str, gate: str):
    tts = voxtral_tts.load(engine_dir, "onnxruntime", max_batch=MAX_BATCH, threads=1)
    return voxtral_tts.TTS(Gated(tts.backend, gate), tts.tokenizer, tts.voice_bank)


def descendants(pid: int) -> dict[int, str]:
    """Every live process under ``pid``: {pid: start time} (the start time tells a reused pid apart)."""
    children: dict[int, list[int]] = {}
    starts = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            starts[int(entry.name)] = fields[19]
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def alive(processes: dict[int, str]) -> list[int]:
    """The processes of ``processes`` still running (zombies count as gone)."""
    left = []
    for pid, start in processes.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[19] == start and fields[0] != "Z":
            left.append(pid)
    return left


@pytest.fixture(scope="session")  # session: set up (or skipped) before the session's engine is built
def ray_serve():
    """voxtral_tts.server.ray_serve, or a skip (with its reason) where Ray Serve is not installed."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install -e '.[ray]'): the Ray "
                                             "Serve tests skip")
    from voxtral_tts.server import ray_serve

    assert ray_serve.REPLICA_HEADER == REPLICA_HEADER
    return ray_serve


class Cluster:
    """The module's Ray cluster and deployment; ``shutdown`` (idempotent) takes both down and
    returns the processes Ray had started that are still running."""

    def __init__(self, gate: Path):
        self.gate = gate
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[int, str] = {}
        self.running = False

    def start(self, ray_serve, engine_dir: Path, temp_dir: Path) -> None:
        import ray
        from ray import serve

        self.ray_serve = ray_serve
        self.running = True
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=str(temp_dir),
                 logging_level="WARNING", log_to_driver=False, configure_logging=False)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replicas cannot import tests/
        serve.start(http_options={"host": "127.0.0.1", "port": self.port}, logging_config={"log_level": "WARNING"})
        app = ray_serve.application(functools.partial(gated_load, str(engine_dir), str(self.gate)),
                                    ServerOptions(max_frames=FRAMES, max_queue=MAX_QUEUE), max_batch=MAX_BATCH,
                                    replicas=2, ray_actor_options={"num_cpus": 1})
        serve.run(app, name="voxtral-tts-test", route_prefix="/", logging_config={"log_level": "WARNING"})

    def snapshot(self) -> None:
        self.processes.update(descendants(os.getpid()))

    def shutdown(self) -> list[int]:
        if self.running:
            self.snapshot()
            self.running = False
            self.ray_serve.take_down(timeout=30)
        deadline = time.time() + 20
        while alive(self.processes) and time.time() < deadline:
            time.sleep(0.1)
        return alive(self.processes)

    def close_gate(self):
        (self.gate / "closed").touch()

    def open_gate(self):
        (self.gate / "closed").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def cluster(ray_serve, tiny_engine_dir, tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("gate"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_TQDM_PATCH_PRINT", "0")  # Ray would replace builtins.print in this (the tests') process
        mp.setenv(ray_serve.PROXY_CALLBACK_ENV, ray_serve.PROXY_CALLBACK)  # as voxtral-serve sets it
        mp.delenv("RAY_ADDRESS", raising=False)
        try:
            cluster.start(ray_serve, tiny_engine_dir, tmp_path_factory.mktemp("ray"))
            yield cluster
        finally:
            cluster.open_gate()
            left = cluster.shutdown()
            for pid in left:  # a failed shutdown must not leave Ray's processes on the machine
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def gate(cluster):
    cluster.open_gate()
    for held in cluster.gate.glob("held-*"):
        held.unlink()
    yield cluster
    cluster.open_gate()


def speech(url: str, timeout: float = 60, **body) -> httpx.Response:
    return httpx.post(url + "/v1/audio/speech", json={**BODY, "response_format": "pcm", **body}, timeout=timeout)


def wait_held(cluster, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not list(cluster.gate.glob("held-*")):
        assert time.time() < deadline, f"no replica held a request; steps {steps(cluster)}, gate files " \
                                       f"{sorted(p.name for p in cluster.gate.iterdir())}"
        time.sleep(0.01)


def replica_of(response) -> str:
    return response.headers[REPLICA_HEADER].split(";")[0]


def test_two_replicas_share_concurrent_openai_requests(gate):
    client = openai.OpenAI(base_url=gate.url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def one(seed: int):
        response = client.audio.speech.with_raw_response.create(
            model="voxtral-4b-tts-2603", voice="alloy", input="Hello there.", response_format="wav",
            extra_body={"seed": seed})
        return response.headers[REPLICA_HEADER], response.http_response.content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for _, wav in results:
        assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) == 44 + PCM_BYTES
    assert len({header.split(";")[0] for header, _ in results}) == 2, [header for header, _ in results]
    assert all("pid=" in header and "node=" in header for header, _ in results)
    health = httpx.get(gate.url + "/health")
    ready = httpx.get(gate.url + "/ready")
    assert health.status_code == 200 and ready.status_code == 200 and ready.json()["status"] == "ready"
    assert REPLICA_HEADER in health.headers


def test_first_streamed_chunk_arrives_before_the_request_finishes(gate):
    gate.close_gate()
    body = {**BODY, "response_format": "pcm", "stream_format": "audio"}
    with httpx.stream("POST", gate.url + "/v1/audio/speech", json=body, timeout=60) as response:
        assert response.status_code == 200 and response.headers.get("transfer-encoding") == "chunked"
        chunks = response.iter_bytes()
        received = len(next(chunks))  # the replica holds the request until the gate opens
        assert 0 < received < PCM_BYTES
        wait_held(gate)  # the request is held, not finished
        gate.open_gate()
        received += sum(len(chunk) for chunk in chunks)
    assert received == PCM_BYTES
    # server-sent events pass through too, each event as it comes
    with httpx.stream("POST", gate.url + "/v1/audio/speech", json={**body, "stream_format": "sse"},
                      timeout=60) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert '"speech.audio.done"' in events[-1] and len(events) > 2


def test_overload_is_503_with_retry_after(gate):
    """Each replica admits max_batch + max_queue requests and Ray's queue as many as all replicas;
    with the replicas held, one request more is refused at once — 503, Retry-After: 1, OpenAI's
    shape with code "overloaded", as the single server answers — and the others complete when
    released."""
    gate.close_gate()
    with concurrent.futures.ThreadPoolExecutor(2 * ADMITTED + 1) as pool:
        futures = []
        for _ in range(2 * ADMITTED):  # one by one: each placed (or queued) before the next is sent
            futures.append(pool.submit(speech, gate.url, 60))
            time.sleep(0.05)
        assert not any(f.done() for f in futures), [f.result().text for f in futures if f.done()]
        refused = speech(gate.url, 10)
        gate.open_gate()
        responses = [f.result() for f in futures]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
    assert refused.json()["error"]["code"] == "overloaded" and refused.json()["error"]["type"] == "server_error"
    assert [r.status_code for r in responses] == [200] * 2 * ADMITTED
    assert all(len(r.content) == PCM_BYTES for r in responses)


def test_every_replicas_metrics_appear_with_its_label(gate):
    """/metrics through Ray's proxy answers every replica's metrics, each sample labelled with
    its replica (the name its responses carry in X-Voxtral-Replica)."""
    from prometheus_client.parser import text_string_to_metric_families

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        served = {replica_of(r) for r in pool.map(lambda seed: speech(gate.url, seed=seed), range(8))}
    assert len(served) == 2
    deadline = time.time() + 30
    while True:  # each replica pushes its metrics every second
        response = httpx.get(gate.url + "/metrics", timeout=30)
        assert response.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        slots = {s.labels["replica"]: s.value for s in families["voxtral_decode_slots"].samples}
        requests = {s.labels["replica"] for s in families["voxtral_requests"].samples
                    if s.name == "voxtral_requests_total" and s.labels["endpoint"] == "/v1/audio/speech"}
        if set(slots) == served and requests == served or time.time() > deadline:
            break
        time.sleep(0.5)
    assert set(slots) == served and all(value == MAX_BATCH for value in slots.values()), slots
    assert requests == served


def steps(gate) -> int:
    """Decode steps taken by all replicas so far."""
    return sum(int(path.read_text() or 0) for path in gate.gate.glob("steps-*"))


def test_a_realtime_session_passes_through_rays_proxy(gate):
    """Mistral's realtime WebSocket, through Ray's proxy to a replica, with the SDK's own client."""
    import asyncio
    import base64

    mistral = pytest.importorskip("mistralai.client")
    pytest.importorskip("websockets")

    async def run():
        client = mistral.Mistral(api_key="unused", server_url=gate.url)
        async with await client.audio.realtime_speech.connect("voxtral-4b-tts-2603", timeout_ms=60_000) as session:
            await session.send_text("Hello there. How")
            await session.flush(" are you?")
            audio = b""
            async for event in session:
                if isinstance(event, mistral.models.SpeechStreamAudioDelta):
                    audio += base64.b64decode(event.audio_data)
                elif isinstance(event, mistral.models.SpeechStreamDone):
                    return audio, event.usage.completion_tokens
        raise AssertionError("the session ended before speech.audio.done")

    audio, frames = asyncio.run(run())
    assert FRAMES < frames <= 2 * FRAMES and len(audio) == frames * 1920 * 4  # two parts, float32 pcm


def test_client_disconnect_cancels_generation_on_the_replica(gate):
    """A client that leaves a held stream: its request leaves the replica's scheduler at the next
    step instead of making its 10 frames."""
    before = steps(gate)
    gate.close_gate()
    body = {**BODY, "response_format": "pcm", "stream_format": "audio"}
    with httpx.stream("POST", gate.url + "/v1/audio/speech", json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        chunks = response.iter_bytes()  # held: a discarded iterator would close the connection now
        next(chunks)
        wait_held(gate)
    time.sleep(1.5)  # the client has gone: Ray cancels the request's handler on the replica
    gate.open_gate()
    time.sleep(1)
    assert HOLD_AT + 1 <= steps(gate) - before <= HOLD_AT + 2 < FRAMES
    after = speech(gate.url)
    assert after.status_code == 200 and len(after.content) == PCM_BYTES


def definite(response: httpx.Response) -> str:
    """What a request sent to a killed replica got: its audio, or an error in OpenAI's shape."""
    if response.status_code != 200:
        error = response.json()["error"]
        assert response.status_code >= 500 and error["type"] == "server_error" and error["code"], error
        return f"{response.status_code} {error['code']}"
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1]["type"] in ("speech.audio.done", "error"), events[-1]
        return f"sse {events[-1]['type']}"
    assert len(response.content) == PCM_BYTES
    return "audio"


def test_a_killed_replica_is_replaced_and_no_request_hangs(gate):
    """SIGKILL to a replica holding requests: each request sent gets a definite answer — its audio,
    an error in OpenAI's shape (a server-sent event stream: an error event), or a chunked audio
    stream cut short, never a hang; requests after it are answered; Ray starts a replica in its
    place."""
    replicas = set()
    deadline = time.time() + 30
    while len(replicas) < 2:
        assert time.time() < deadline, "requests never reached both replicas"
        replicas.add(replica_of(speech(gate.url)))
    gate.close_gate()
    kinds = [{}, {"stream_format": "sse"}, {"stream_format": "audio"}] * 2
    with concurrent.futures.ThreadPoolExecutor(len(kinds)) as pool:
        futures = [pool.submit(speech, gate.url, 60, **kind) for kind in kinds]
        wait_held(gate)
        victim = int(next(gate.gate.glob("held-*")).name.split("-")[1])
        gate.snapshot()
        os.kill(victim, signal.SIGKILL)
        gate.open_gate()
        _, pending = concurrent.futures.wait(futures, timeout=60)
    assert not pending, "a request hung after its replica was killed"
    outcomes = []
    for kind, future in zip(kinds, futures):
        try:
            outcomes.append(definite(future.result()))
        except httpx.RemoteProtocolError:  # incomplete chunked read: the transfer visibly cut
            assert kind.get("stream_format") == "audio"
            outcomes.append("audio stream cut")
    assert any(outcome != "audio" and outcome != "sse speech.audio.done" for outcome in outcomes), outcomes
    # requests after the kill are answered; Ray starts a replica in place of the dead one
    deadline = time.time() + 60
    while True:
        response = speech(gate.url)
        assert response.status_code == 200 and len(response.content) == PCM_BYTES
        assert f"pid={victim}" not in response.headers[REPLICA_HEADER]
        if replica_of(response) not in replicas:
            break
        assert time.time() < deadline, "no replica replaced the one killed"
        time.sleep(0.2)


def test_shutdown_leaves_no_ray_process(cluster):
    cluster.snapshot()
    assert len(cluster.processes) >= 5  # gcs, raylet, controller, proxy, 2 replicas
    assert cluster.shutdown() == []


# --- without a cluster: the proxy's error answers, the entry point, the command line -------------------

def run_asgi(middleware, inner) -> tuple[list[dict], bool]:
    """``middleware(inner)`` on one GET; the messages it sent."""
    import asyncio

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(inner)({"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send))
    return sent


def answer(sent: list[dict]) -> tuple[int, dict, bytes]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_rays_own_errors_are_answered_in_openai_shape(ray_serve):
    async def dead_replica(scope, receive, send):  # Ray's proxy lost the replica: no answer at all
        return

    async def backpressure(scope, receive, send):  # Ray's own 503 (plain text, Retry-After)
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": b"Request dropped due to backpressure"})

    async def app_error(scope, receive, send):  # the app's own errors pass unchanged
        await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": {"code": "x"}}'})

    async def cut_sse(scope, receive, send):  # a stream whose replica died after its first event
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})

    status, headers, body = answer(run_asgi(ray_serve.RayErrors, dead_replica))
    assert status == 500 and json.loads(body)["error"]["code"] == "replica_failed"
    assert headers[b"content-length"] == str(len(body)).encode()
    status, headers, body = answer(run_asgi(ray_serve.RayErrors, backpressure))
    assert status == 503 and headers[b"retry-after"] == b"1" and headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"] == {"message": "Request dropped due to backpressure", "type": "server_error",
                                         "param": None, "code": "overloaded"}
    assert answer(run_asgi(ray_serve.RayErrors, app_error)) == (400, {b"content-type": b"application/json"},
                                                                 b'{"error": {"code": "x"}}')
    sent = run_asgi(ray_serve.RayErrors, cut_sse)
    assert sent[-1]["more_body"] is False
    event = json.loads(sent[-1]["body"].decode()[6:])
    assert event["type"] == "error" and event["error"]["code"] == "replica_failed"


def test_the_serve_entry_point_builds_the_application_from_voxtral_serve_options(ray_serve, tiny_engine_dir):
    app = ray_serve.build_app({"model": str(tiny_engine_dir), "replicas": "3", "max_batch": 2, "max-queue": "5",
                               "threads": 2, "max_frames": 7, "prefix_cache": "false"})
    deployment = app._bound_deployment
    assert deployment.num_replicas == 3
    assert deployment.max_ongoing_requests == 2 + 5  # the replica's own admission
    assert deployment.max_queued_requests == 3 * (2 + 5)
    assert deployment.ray_actor_options["num_cpus"] == 2 and "num_gpus" not in deployment.ray_actor_options
    load, options, _ = deployment.init_args
    assert options.max_queue == 5 and options.max_frames == 7
    model, plan = load.args
    assert model == str(tiny_engine_dir) and plan.backend == "onnxruntime"
    assert plan.options.max_batch == 2 and plan.options.threads == 2 and not plan.tts.prefix_cache
    scaled = ray_serve.build_app({"model": str(tiny_engine_dir), "replicas": 1, "max_replicas": 4,
                                  "backend": "onnxruntime", "device": "cuda"})._bound_deployment
    autoscaling = scaled._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas, autoscaling.target_ongoing_requests) == (1, 4, 4)
    assert scaled.ray_actor_options["num_gpus"] == 1
    with pytest.raises(ValueError, match="http_options"):
        ray_serve.build_app({"model": str(tiny_engine_dir), "port": 9000})


def run_serve(*args: str, block_ray: bool = False):
    """``voxtral-serve ARGS`` in a fresh interpreter (optionally one where Ray cannot be imported)."""
    import subprocess

    code = ("import sys\n" + ("sys.modules['ray'] = None\n" if block_ray else "") +
            "from voxtral_tts.server.cli import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_replicas_without_ray_is_one_line_saying_what_to_install(tmp_path):
    result = run_serve(str(tmp_path), "--replicas", "2", block_ray=True)  # before the model is looked at
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "voxtral-serve: error: --replicas needs Ray Serve, which is not installed: pip install 'voxtral-tts[ray]'"]


@pytest.mark.parametrize("args, message", [
    (["--replicas", "0"], "--replicas must be at least 1, got 0"),
    (["--replicas", "2", "--max-replicas", "1"], "--max-replicas (1) must be at least --replicas (2)"),
    (["--max-replicas", "3"], "--max-replicas applies with --replicas"),
    (["--ray-address", "auto"], "--ray-address applies with --replicas"),
])
def test_bad_scale_out_options_are_one_line(tmp_path, capsys, args, message):
    from voxtral_tts.server.cli import main

    assert main([str(tmp_path), *args]) == 2  # before the model is looked at
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_plain_voxtral_serve_does_not_import_ray():
    import subprocess

    code = ("import sys\nimport voxtral_tts.server.cli, voxtral_tts.server.app\n"
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
