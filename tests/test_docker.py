"""The container image (Dockerfile): built on a Debian base made here, run on the tiny fixture, stopped.

No registry of base images is needed: the base is Debian bookworm from Debian's own packages
(``debootstrap --variant=minbase`` with python3 and its venv module, the machine's CA bundle copied in),
made once and cached as a tar under ``$VOXTRAL_TTS_DOCKER_CACHE`` (default ``~/.cache/voxtral-tts-docker``)
and imported as ``voxtral-tts-test-base:bookworm``. The image is then built on it with
``--build-arg BASE=…`` (docker reuses its layers from one run to the next), run with ``--network host``
on the fixture's model mounted read-only, asked for a WAV, and stopped with ``docker stop``.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import pytest

from voxtral_tts.testing import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("VOXTRAL_TTS_DOCKER_CACHE", Path.home() / ".cache" / "voxtral-tts-docker"))
BASE_IMAGE = "voxtral-tts-test-base:bookworm"
IMAGE = "voxtral-tts:test"
# Debian's python3 in bookworm is 3.11, the Python of the CPU torch wheel built on it
BASE_PACKAGES = ("python3", "python3-venv")
BASE_TAR = CACHE / f"bookworm-minbase-{'-'.join(BASE_PACKAGES)}.tar"
# The torch index's port: fixed, because the URL is a build argument of the torch layer, whose cache
# holds only while the argument is the same (another port, when this one is taken, rebuilds that layer)
INDEX_PORT = 47231
GRACE_S = 10  # docker stop's default: SIGTERM, then SIGKILL this many seconds later


def run(*args: str, timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args[:3])} … exited {result.returncode}:\n{(result.stdout + result.stderr)[-4000:]}")
    return result


def docker_available() -> str | None:
    """Why docker cannot be used here, or None."""
    if shutil.which("docker") is None:
        return "docker is not installed (.ci/run installs Debian's docker.io)"
    if subprocess.run(["docker", "info"], check=False, capture_output=True, timeout=30).returncode != 0:
        return "the docker daemon is not running or not reachable (.ci/run starts it)"
    return None


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources), else Debian's own."""
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            if uris and re.search(r"^Suites:.*\bbookworm\b(?!-)", stanza, re.MULTILINE):
                return uris.group(1)
        line = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.MULTILINE)
        if line:
            return line.group(1)
    return "http://deb.debian.org/debian"


def build_base_tar() -> None:
    """debootstrap a minimal bookworm with python3 into a tar in the cache (about a minute and a half)."""
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (.ci/run installs it): it makes the image's Debian base")
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root to make the image's Debian base")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "root"
        run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(root),
            debian_mirror(), timeout=900)
        # pip inside the build trusts what this machine trusts (Debian's pip reads the system bundle)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = BASE_TAR.with_suffix(".partial")
        run("tar", "-C", str(root), "-cf", str(partial), ".", timeout=300)
        partial.replace(BASE_TAR)


def ensure_base_image() -> None:
    if run("docker", "image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    if not BASE_TAR.exists():
        build_base_tar()
    with BASE_TAR.open("rb") as tar:
        run("docker", "import", "-", BASE_IMAGE, stdin=tar, timeout=300)


def dockerfile_torch() -> str:
    """The Dockerfile's torch requirement (ARG TORCH=…), e.g. torch==2.13.0+cpu."""
    match = re.search(r"^ARG TORCH=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no ARG TORCH=…"
    return match.group(1)


def local_torch_index() -> Path | None:
    """A package index holding the Dockerfile's torch wheel when this machine's pip has it without
    network (a machine that cannot reach PyTorch's CPU index), else None: the build uses that index."""
    index = CACHE / "torch-index"
    wheels = index / "torch"
    if not any(wheels.glob("*.whl")):
        wheels.mkdir(parents=True, exist_ok=True)
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-index", "--no-deps",
                              "--only-binary=:all:", "--python-version", "3.11",
                              "--platform", f"manylinux_2_28_{platform.machine()}", "--dest", str(wheels),
                              dockerfile_torch()], check=False, capture_output=True, timeout=300)
        if got.returncode != 0:
            return None
    return index


@functools.cache
def serve_directory(directory: Path) -> str:
    """``directory`` over HTTP on 127.0.0.1 (reached by ``docker build --network host``) → its URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def image() -> str:
    reason = docker_available()
    if reason:
        pytest.skip(reason)
    ensure_base_image()
    args = ["docker", "build", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}", "-t", IMAGE]
    index = local_torch_index()
    if index is not None:
        args += ["--build-arg", f"TORCH_INDEX={serve_directory(index)}"]
    run(*args, str(ROOT), timeout=1200)
    return IMAGE


def get(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def container(image, reference_model_dir):
    """The image serving the fixture's model (mounted read-only) on a free port of this machine."""
    name = f"voxtral-tts-test-{os.getpid()}"
    port = free_port()
    run("docker", "rm", "-f", "-v", name, check=False)
    run("docker", "run", "-d", "--name", name, "--network", "host",
        "-v", f"{reference_model_dir}:/model:ro", image, "/model", "--port", str(port))
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        run("docker", "rm", "-f", "-v", name, check=False)


def state(name: str) -> dict:
    return json.loads(run("docker", "inspect", "--format", "{{json .State}}", name).stdout)


def wait_ready(name: str, url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not state(name)["Running"]:
            pytest.fail(f"the container exited:\n{run('docker', 'logs', name).stderr[-4000:]}")
        try:
            if get(f"{url}/ready", timeout=5)[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)
    pytest.fail(f"not ready after {timeout_s:.0f} s:\n{run('docker', 'logs', name).stderr[-4000:]}")


def test_image_serves_speech_and_stops_on_sigterm(container):
    name, url = container
    wait_ready(name, url)

    status, body = get(f"{url}/v1/audio/speech", {"model": "voxtral-4b-tts-2603", "input": "Hello from a container.",
                                                   "voice": "alloy", "response_format": "wav"}, timeout=120)
    assert status == 200, body[:500]
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (1, 24000, 2)
        assert wav.getnframes() > 0

    # the image's own health check, on the port given after the image name; as the non-root user
    check = json.loads(run("docker", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", name).stdout)
    assert check[0] == "CMD"
    run("docker", "exec", name, *check[1:])
    assert run("docker", "exec", name, "id", "-u").stdout.strip() != "0"
    # voices made from recordings are kept on the /cache volume, writable by that user
    where = ("from voxtral_tts.server.voice_store import default_voices_dir as d; import os; "
             "p = d(); p.mkdir(parents=True, exist_ok=True); print(p, os.access(p, os.W_OK))")
    voices_dir = run("docker", "exec", name, "python", "-c", where).stdout.split()
    assert voices_dir == ["/cache/data/voxtral-tts/voices", "True"]

    # SIGTERM reaches the server (process 1, exec form), which shuts down before docker's SIGKILL
    start = time.monotonic()
    run("docker", "stop", "--time", str(GRACE_S), name, timeout=GRACE_S + 30)
    elapsed = time.monotonic() - start
    final = state(name)
    assert final["ExitCode"] == 0 and not final["OOMKilled"], final
    assert elapsed < GRACE_S, f"docker stop took {elapsed:.1f} s: the server ignored SIGTERM and was killed"
    assert "Application shutdown complete" in run("docker", "logs", name).stderr
