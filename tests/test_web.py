"""The page to try the voices (``GET /``): its files, the routes that serve them, ``--no-web``, and
the page itself in a real headless browser (Debian's chromium driven by Playwright) against a live
server on the tiny model."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from importlib import resources

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")

import voxtral_tts  # noqa: E402
from voxtral_tts.runtime.constants import STREAM_CHUNKS  # noqa: E402
from voxtral_tts.server.app import create_app  # noqa: E402
from voxtral_tts.server.schemas import ServerOptions  # noqa: E402
from voxtral_tts.text import split_text  # noqa: E402

from test_server import FRAMES, HeldBackend, Live, loading_server, wait_until, wrapped  # noqa: E402

PAGE_FILES = ("index.html", "app.js", "typing.js", "style.css")
MAX_CHARS = 1000  # the server's --max-input-chars here: the page must show and keep this one
LONG_TEXT = " ".join(f"Sentence number {i} is here." for i in range(30))  # three parts
CHROMIUM = os.environ.get("VOXTRAL_TTS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"  # Debian's
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def live(tiny_engine_dir):
    holder = {}

    def load():
        # held only once a test arms it (hold_at): a request is then surely in flight when Stop is pressed
        tts = wrapped(voxtral_tts.load(tiny_engine_dir), lambda inner: HeldBackend(inner, hold_at=None))
        holder["gate"] = tts.backend
        return tts

    app = create_app(load, ServerOptions(max_frames=FRAMES, max_input_chars=MAX_CHARS))
    server = Live(app)
    server.wait_ready()
    server.gate = holder["gate"]
    yield server
    server.gate.released.set()
    server.close()


# --- the files and the routes (plain HTTP) ------------------------------------------------------------

def test_the_page_files_are_package_data():
    """The page's files are in the package, and pyproject.toml's package data carries every one of
    them into a wheel (a non-editable install)."""
    static = resources.files("voxtral_tts.server").joinpath("static")
    assert sorted(p.name for p in static.iterdir()) == sorted(PAGE_FILES)
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    from fnmatch import fnmatch
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["voxtral_tts.server"]
    for name in PAGE_FILES:
        assert any(fnmatch(f"static/{name}", pattern) for pattern in patterns), name


def test_the_page_and_its_files_are_served(live):
    page = httpx.get(live.url + "/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/static/app.js" defer></script>' in page.text and "<label for=\"text\">" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]  # nothing from elsewhere
    for name, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{live.url}/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media)
        assert response.text == resources.files("voxtral_tts.server").joinpath("static", name).read_text()
    config = httpx.get(live.url + "/web/config").json()
    assert config == {"model": "voxtral-4b-tts-2603", "max_input_chars": MAX_CHARS,
                      "formats": ["mp3", "opus", "aac", "flac", "wav", "pcm"],
                      "speed": {"min": 0.25, "max": 4.0, "default": 1.0},
                      "temperature": {"min": 0.0, "max": 2.0, "default": 0.0},
                      "expressiveness": {"min": 1.0, "max": 100.0, "default": None}, "sample_rate": 24000}
    assert not {"/", "/web/config"} & set(httpx.get(live.url + "/openapi.json").json()["paths"])  # not the API


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target exactly as given (HTTP clients normalise ``..`` away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("target", [
    "/static/../web.py", "/static/../../server/web.py", "/static/..%2fweb.py", "/static/%2e%2e/web.py",
    "/static/%2e%2e%2fweb.py", "/static/..%5cweb.py", "/static/..\\web.py", "/static/%252e%252e/web.py",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/../../../../../../etc/passwd",
    "/static/./../app.py", "/static/", "/static/%00",
])
def test_static_files_cannot_escape_their_folder(live, target):
    """web.py sits right beside the page's folder: none of these reaches it (or /etc/passwd); the
    answer is an OpenAI-shaped 404 (400 for a malformed path) without server paths."""
    assert raw_get(live.url, "/static/./%61pp.js")[0] == 200  # the raw target reaches the files unnormalised
    status, body = raw_get(live.url, target)
    assert status in (400, 404), (target, status)
    assert b"add_web" not in body and b"root:" not in body and b"def " not in body
    if status == 404:
        assert body.startswith(b'{"error":') and b"/voxtral_tts" not in body


def test_no_web_leaves_the_api_alone(tiny_engine_dir):
    server = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir), ServerOptions(max_frames=FRAMES, web=False)))
    try:
        for path in ("/", "/static/app.js", "/web/config"):
            response = httpx.get(server.url + path)
            assert response.status_code == 404, path
            assert response.json() == {"error": {"message": "Not Found", "type": "invalid_request_error",
                                                 "param": None, "code": None}}
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        server.close()


def test_voxtral_serve_has_no_web_flag(monkeypatch):
    """``--no-web`` reaches the app's options (what the app then serves is the test above)."""
    from voxtral_tts.runtime.load_options import load_plan
    from voxtral_tts.server import cli, config, shutdown

    made = []
    monkeypatch.setattr(cli, "create_app", lambda load, options: made.append(options) or "app")
    monkeypatch.setattr(config, "model_path", lambda path: path)
    monkeypatch.setattr(config, "options_from_args", lambda args, **kwargs: load_plan("onnxruntime"))
    monkeypatch.setattr(shutdown, "run", lambda app, **kwargs: None)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)  # the test process's logging stays as is
    assert cli.main(["engine"]) == 0 and cli.main(["engine", "--no-web"]) == 0
    assert [options.web for options in made] == [True, False]


# --- the page in a real browser -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no browser: {CHROMIUM} not found (apt-get install chromium, or set VOXTRAL_TTS_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


class Page:
    """The page in a browser tab, with what its console said."""

    def __init__(self, browser, url):
        self.tab = browser.new_page(accept_downloads=True)
        self.console: list[str] = []
        self.tab.on("console", lambda m: m.type in ("error", "warning") and self.console.append(f"{m.type}: {m.text}"))
        self.tab.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.tab.goto(url + "/")
        self.wait("voxtralPage.state === 'idle'")

    def js(self, expression: str):
        return self.tab.evaluate(expression)

    def wait(self, expression: str, timeout: float = 20):
        """Polls from here: the page's Content-Security-Policy forbids the eval Playwright's own
        waiting would need (and the tests keep that policy on)."""
        deadline = time.time() + timeout
        while not self.js(expression):
            assert time.time() < deadline, (f"timed out waiting for {expression}; status: {self.text('#status')} "
                                             f"{self.text('#error')}")
            time.sleep(0.02)

    def text(self, selector: str) -> str:
        return self.tab.inner_text(selector)

    def speak(self, text: str) -> None:
        self.tab.fill("#text", text)
        self.tab.click("#speak")


@pytest.fixture(scope="module")
def page(browser, live):
    page = Page(browser, live.url)
    yield page
    page.tab.close()


def test_the_page_loads_with_the_voices_and_the_limit(page, live):
    assert page.console == []
    listing = httpx.get(live.url + "/v1/audio/voices").json()
    groups = page.js("""[...document.querySelectorAll('#voice optgroup')].map(g =>
        [g.label, [...g.querySelectorAll('option')].map(o => [o.value, o.textContent])])""")
    assert groups == [["English", [[v["id"], v["name"] + (f" ({', '.join(v['aliases'])})" if v["aliases"] else "")]
                                   for v in listing["voices"]]]]
    assert page.js("document.querySelector('#voice').value") == listing["default"]
    assert page.js("[...document.querySelectorAll('#format option')].map(o => o.value)") == [
        "mp3", "opus", "aac", "flac", "wav", "pcm"]
    # the server's limit, shown and kept: typing past it stops at the limit
    assert page.js("document.querySelector('#text').maxLength") == MAX_CHARS
    page.tab.fill("#text", "")
    page.tab.focus("#text")
    page.tab.keyboard.insert_text("a" * (MAX_CHARS - 2))
    page.tab.keyboard.type("bcdef")
    assert len(page.tab.input_value("#text")) == MAX_CHARS
    assert page.text("#text-count") == f"{MAX_CHARS} / {MAX_CHARS} characters"
    # every control has a label
    unlabelled = page.js("""[...document.querySelectorAll('input, select, textarea, progress')]
        .filter(e => !e.labels || e.labels.length === 0).map(e => e.id)""")
    assert unlabelled == []


def test_speak_plays_the_audio_as_it_streams(page):
    page.speak("Hello there.")
    page.wait("voxtralPage.state === 'done'")
    stats = page.js("voxtralPage")
    assert stats["lastStatus"] == 200 and stats["samplesScheduled"] == FRAMES * 1920
    assert (stats["partsDone"], stats["parts"]) == (1, 1)
    assert re.fullmatch(r"\d+ ms", page.text("#ttfa")) and re.fullmatch(r"\d+\.\d\d", page.text("#rtf"))
    assert page.text("#duration") == f"{FRAMES * 1920 / 24000:.2f} s"
    # Web Audio really plays it: the context runs and its clock advances
    assert page.js("player.context.state") == "running"
    start = page.js("player.context.currentTime")
    page.wait(f"player.context.currentTime > {start + 0.1}", timeout=5)
    assert page.console == []


def test_speak_as_i_type(page):
    """The realtime mode: each sentence is spoken over the WebSocket while the text is still being
    typed; Ctrl+Enter speaks the rest."""
    page.tab.fill("#text", "")
    page.tab.check("#typing")
    page.wait("voxtralTyping.state === 'on'")
    page.tab.focus("#text")
    page.tab.keyboard.type("Hello there. How")
    page.wait("voxtralTyping.samples > 0")  # the first sentence, before the text is done
    assert page.js("voxtralTyping.done") == 0 and page.js("voxtralPage.state") != "busy"
    page.tab.keyboard.type(" are you?")
    page.tab.keyboard.press("Control+Enter")  # the rest, in this mode over the socket
    page.wait("voxtralTyping.done === 1")
    # two parts of FRAMES frames (or, rarely, fewer: a session has no seed and may draw END_AUDIO early)
    assert FRAMES * 1920 < page.js("voxtralTyping.samples") <= 2 * FRAMES * 1920
    assert page.js("voxtralTyping.error") is None
    page.tab.uncheck("#typing")
    page.wait("voxtralTyping.state === 'off'")
    assert page.console == []


def test_progress_of_a_long_text(page):
    parts = len(split_text(LONG_TEXT))
    assert parts == 3
    page.tab.fill("#text", LONG_TEXT)
    page.tab.focus("#text")
    page.tab.keyboard.press("Control+Enter")  # keyboard: speaks from the text box
    page.wait("voxtralPage.state === 'done'")
    stats = page.js("voxtralPage")
    assert (stats["partsDone"], stats["parts"], stats["samplesScheduled"]) == (parts, parts, parts * FRAMES * 1920)
    assert page.text("#parts") == f"{parts} of {parts} done"
    assert page.js("[document.querySelector('#progress').value, document.querySelector('#progress').max]") == [3, 3]


def test_the_servers_error_is_shown(page):
    page.speak("")
    page.wait("voxtralPage.state === 'error'")
    assert page.js("voxtralPage.lastStatus") == 400
    assert page.text("#error") == "input: text is empty"  # the server's own message
    assert page.js("document.querySelector('#error').hidden") is False
    # the browser reports the failed request itself; nothing else went wrong
    assert all("status of 400" in line for line in page.console), page.console
    page.console.clear()


def test_download_saves_the_chosen_format(page, live, tmp_path):
    page.tab.fill("#text", "Hello there.")
    page.tab.select_option("#format", "wav")
    page.tab.fill("#seed", "1")
    page.tab.fill("#temperature", "0.8")
    page.tab.fill("#expressiveness", "2")
    with page.tab.expect_download() as info:
        page.tab.click("#download")
    download = info.value
    assert download.suggested_filename == "speech.wav"
    path = tmp_path / "speech.wav"
    download.save_as(path)
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and len(data) == 44 + FRAMES * 1920 * 2
    page.wait("voxtralPage.state === 'done'")
    assert page.js("voxtralPage.lastStatus") == 200 and page.console == []
    # the page's seed, temperature and expressiveness were sent: the API's file for them, not the defaults'
    body = {"model": "m", "input": "Hello there.", "voice": page.tab.input_value("#voice"), "response_format": "wav",
            "seed": 1}
    sent = {**body, "temperature": 0.8, "expressiveness": 2.0}
    assert data == httpx.post(live.url + "/v1/audio/speech", json=sent, timeout=60).content
    assert data != httpx.post(live.url + "/v1/audio/speech", json={**body, "temperature": 0.8}, timeout=60).content
    assert data != httpx.post(live.url + "/v1/audio/speech", json=body, timeout=60).content
    page.tab.fill("#temperature", "0")
    page.tab.fill("#expressiveness", "")


def test_stop_cancels_the_request(page, live):
    """Stop aborts the fetch; the server sees the client go away and the request leaves the
    scheduler at the next frame: not one of its other frames is generated."""
    gate, synthesizer = live.gate, live.app.state.synthesizer
    wait_until(lambda: synthesizer._pending == 0)
    gate.hold_at = gate.frames + STREAM_CHUNKS[0] + 1  # after its first chunk has been played
    page.speak(LONG_TEXT)
    page.wait("voxtralPage.samplesScheduled > 0")
    assert gate.holding.wait(30)
    page.tab.click("#stop")
    page.wait("voxtralPage.state === 'stopped'")
    assert page.text("#status") == "Stopped."
    wait_until(lambda: any(request.cancelled for request in list(synthesizer._jobs)))  # the server saw it
    gate.released.set()
    wait_until(lambda: synthesizer._pending == 0)
    assert gate.frames == gate.hold_at + 1  # the held frame, then nothing: 30 frames were asked for
    assert page.js("document.querySelector('#speak').disabled") is False  # ready for the next one
    assert page.console == []


def test_the_page_waits_for_the_model(browser, tiny_engine_dir):
    """Opened while the model loads: the page says so (the server's words) and fills in the voices
    once it is ready."""
    server, gate = loading_server(tiny_engine_dir)
    try:
        tab = browser.new_page()
        tab.goto(server.url + "/")
        deadline = time.time() + 20
        while tab.inner_text("#status") != "the model is still loading; retry shortly":
            assert time.time() < deadline, tab.inner_text("#status")
            time.sleep(0.02)
        assert tab.evaluate("document.querySelector('#speak').disabled") is True
        gate.set()
        while tab.evaluate("voxtralPage.state") != "idle":
            assert time.time() < deadline + 10, tab.inner_text("#status")
            time.sleep(0.05)
        assert tab.inner_text("#status") == "Ready: 2 voices." and not tab.evaluate(
            "document.querySelector('#speak').disabled"
        )
        tab.close()
    finally:
        gate.set()
        server.close()
