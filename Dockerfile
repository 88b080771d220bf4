# voxtral-serve, the OpenAI-compatible speech server, as a container image (docs/docker.md).
#
#   docker build -t voxtral-tts .
#   docker run -p 8080:8080 -v voxtral-cache:/cache voxtral-tts [MODEL] [voxtral-serve options]
#
# MODEL: a hub id (default mistralai/Voxtral-4B-TTS-2603, downloaded into the /cache volume once)
# or a model or engine directory mounted into the container.

# Any Debian-based image with python3 (3.11 or newer: tomllib) and its venv module.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS deps
# CPU torch, pinned as the README pins it. PyPI's torch for Linux is the multi-GB CUDA build, so torch
# comes from PyTorch's CPU index; the GPU variant passes TORCH=torch==2.13.0 (docs/docker.md).
ARG TORCH=torch==2.13.0+cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# the extras a server needs: server (FastAPI, uvicorn, PyAV, ONNX Runtime) and export (torch and ONNX: a
# model directory runs on torch in bf16 where the CPU has it, else is exported once to ONNX Runtime)
ARG EXTRAS=server,export
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# torch/test holds PyTorch's own C++ test programs (83 MB), which nothing runs.
RUN python3 -m venv /opt/voxtral \
    && /opt/voxtral/bin/pip install --extra-index-url "$TORCH_INDEX" "$TORCH" \
    && rm -rf /opt/voxtral/lib/python3*/site-packages/torch/test
# The dependencies alone, read from pyproject.toml: this layer is rebuilt only when they change,
# not when the code does.
COPY pyproject.toml /src/
RUN /opt/voxtral/bin/python -c 'import sys, tomllib; \
project = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
extras = [project["optional-dependencies"][name] for name in sys.argv[1].split(",") if name]; \
print("\n".join(project["dependencies"] + sum(extras, [])))' "$EXTRAS" > /tmp/requirements.txt \
    && /opt/voxtral/bin/pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The package's wheel, built apart: setuptools and the source stay out of the image.
FROM deps AS wheel
RUN /opt/voxtral/bin/pip install "setuptools>=68"
COPY pyproject.toml README.md /src/
COPY voxtral_tts /src/voxtral_tts
RUN /opt/voxtral/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist /src

FROM deps
COPY --from=wheel /dist /tmp/dist
RUN /opt/voxtral/bin/pip install --no-deps /tmp/dist/*.whl \
    && rm -r /tmp/dist \
    && useradd --uid 10001 --user-group --create-home --home-dir /home/voxtral voxtral \
    && mkdir -p /cache/huggingface /cache/voxtral-tts /cache/data \
    && chown -R voxtral:voxtral /cache
# The hub cache (HF_HOME: the model's files, downloaded once) and the engine cache (a model exported to
# ONNX on first use) on one volume, so that neither is downloaded or exported again by a new container;
# voices made from recordings (POST /v1/audio/voices: --voices-dir's default under XDG_DATA_HOME) there too.
# HF_TOKEN, for a gated or private repository, is read from the environment: docker run -e HF_TOKEN.
ENV PATH=/opt/voxtral/bin:$PATH \
    HF_HOME=/cache/huggingface \
    VOXTRAL_TTS_CACHE=/cache/voxtral-tts \
    XDG_DATA_HOME=/cache/data \
    PYTHONUNBUFFERED=1
VOLUME ["/cache"]
USER voxtral
WORKDIR /home/voxtral
EXPOSE 8080
# Liveness: /health answers 200 while the model loads and serves, 503 once it failed to load. The port
# is the server's own, read from its command line (--port after the image name, e.g. with --network host).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import argparse, urllib.request; p = argparse.ArgumentParser(add_help=False); p.add_argument('--port', default='8080'); port = p.parse_known_args(open('/proc/1/cmdline').read().split('\\0'))[0].port; urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4)"]
# Exec form: voxtral-serve is process 1 and receives docker stop's SIGTERM itself (uvicorn then finishes
# the requests in flight and exits 0). Arguments after the image name follow these.
ENTRYPOINT ["voxtral-serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["mistralai/Voxtral-4B-TTS-2603"]
