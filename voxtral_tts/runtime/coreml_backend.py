"""The Core ML backend: runs a ``--target coreml`` engine's packages with coremltools (macOS 15+).

- ``backbone.mlpackage`` is stateful: one ``make_state()`` per sequence holds every layer's KV
  cache (float16, the engine's capacity); a prefill is one call with L = prompt length, a decode
  step one call with L = 1, both writing the state in place.
- ``flow_frame.mlpackage``: one frame per call (codes come back int32, returned as int64).
- ``codec.mlpackage`` takes a fixed 75-frame chunk: shorter chunks are padded at the end with
  their last frame and the audio of the padding dropped (the codec is causal).

Embedding lookups run on the host (:class:`HostEmbeddings`). Several sequences may be in flight
(``max_batch``), each with its own state, stepped one call each. Torch-free: numpy and coremltools.
"""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path

import numpy as np

from ..engine import Engine, is_engine_dir, open_engine
from ..errors import CapacityError, VoxtralError
from .decoding import Inference, decode_codes, pad_codec_chunk
from .host_embeddings import HostEmbeddings

log = logging.getLogger(__name__)

#: ``device`` → Core ML compute units
DEVICES = {"all": "ALL", "cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE"}
GRAPHS = ("backbone", "flow_frame", "codec")


def coreml_unavailable() -> str | None:
    """Why Core ML prediction cannot run here, or None on macOS 15+ with coremltools."""
    if sys.platform != "darwin":
        return f"the coreml backend runs on macOS 15+ (this is {platform.system() or sys.platform})"
    release = platform.mac_ver()[0]
    if release and int(release.split(".")[0]) < 15:
        return f"the coreml backend needs macOS 15+ for Core ML states (this is macOS {release})"
    try:
        import coremltools  # noqa: F401
    except ImportError:
        return "the coreml backend needs coremltools (pip install 'voxtral-tts[coreml]')"
    return None


class CoreMLInference(Inference):
    """``models``: the three packages already loaded (anything with MLModel's ``predict`` and, for
    the backbone, ``make_state``); loaded from the engine with ``device``'s compute units if None.
    ``max_batch`` sequences may be in flight, each with its own state; a decode step for several
    runs one backbone call per sequence (the package's batch is 1)."""

    def __init__(self, engine: Engine, models: dict | None = None, capacity: int | None = None, device: str = "all",
                 max_batch: int = 1):
        if engine.target != "coreml":
            raise VoxtralError(f"{engine.path}: is a {engine.target} engine; the coreml backend runs engines "
                               "exported with voxtral-export --target coreml")
        self.engine = engine
        self.config = engine.config
        if capacity is not None and not 2 <= capacity <= engine.capacity:
            raise VoxtralError(f"{engine.path}: capacity {capacity} is not available: this Core ML engine's KV cache "
                               f"holds {engine.capacity} positions (re-export with --capacity to change it)")
        if not 1 <= max_batch <= 64:
            raise VoxtralError(f"max_batch must be between 1 and 64, got {max_batch}")
        self._capacity = int(capacity or engine.capacity)
        self._codec_frames = int(engine.manifest["codec_frames"])
        if models is None:
            models = self._load(engine, device)
        self._models = models
        self._states: list = [None] * int(max_batch)  # one Core ML state (KV cache) per slot
        self._embeddings = HostEmbeddings(engine)

    @classmethod
    def from_path(cls, path: str | Path, capacity: int | None = None, progress: bool = True, device: str | None = None,
                  threads: int | None = None, max_batch: int = 1) -> "CoreMLInference":
        """An engine directory exported with ``--target coreml``. ``device``: all (default: CPU, GPU
        and Neural Engine), cpu, gpu or ane (CPU and Neural Engine). ``progress`` is unused."""
        path = Path(path)
        if not is_engine_dir(path):
            raise VoxtralError(f"{path}: the coreml backend needs an engine directory "
                               "(voxtral-export MODEL_DIR -o ENGINE_DIR --target coreml)")
        engine = open_engine(path)
        if threads:
            raise VoxtralError("--threads applies to the onnxruntime backend; Core ML schedules its own threads")
        return cls(engine, capacity=capacity, device=device or "all", max_batch=max_batch)

    @staticmethod
    def _load(engine: Engine, device: str) -> dict:
        if device not in DEVICES:
            raise VoxtralError(f"unknown Core ML device '{device}'; choose one of {', '.join(DEVICES)}")
        reason = coreml_unavailable()
        if reason:
            raise VoxtralError(f"{reason}; elsewhere export an ONNX engine and use --backend onnxruntime")
        import coremltools as ct

        units = getattr(ct.ComputeUnit, DEVICES[device])
        models = {}
        for name in GRAPHS:
            log.info("loading %s (compiling on first use)", engine.graph_path(name).name)
            models[name] = ct.models.MLModel(str(engine.graph_path(name)), compute_units=units)
        return models

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_batch(self) -> int:
        return len(self._states)

    # --- embeddings (host) -------------------------------------------------------------------------
    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        return self._embeddings.tokens(ids)

    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        return self._embeddings.codes(codes)

    # --- backbone ----------------------------------------------------------------------------------
    def _backbone(self, embeds: np.ndarray, positions: np.ndarray, state) -> np.ndarray:
        feeds = {"embeds": np.ascontiguousarray(embeds, dtype=np.float32)[None],
                 "positions": np.ascontiguousarray(positions, dtype=np.int32)}
        return np.asarray(self._models["backbone"].predict(feeds, state=state)["hidden"], dtype=np.float32)[0]

    def prefill(self, embeds: np.ndarray, slot: int = 0) -> np.ndarray:
        if not 0 <= slot < len(self._states):
            raise VoxtralError(f"slot {slot} does not exist (max_batch {len(self._states)})")
        length = embeds.shape[0]
        if length > self._capacity:
            raise CapacityError(f"prompt of {length} tokens exceeds the KV cache ({self._capacity} positions)")
        state = self._models["backbone"].make_state()  # a fresh cache for this sequence
        hidden = self._backbone(embeds, np.arange(length), state)[-1].copy()
        self._states[slot] = state
        return hidden

    def decode_step(self, embed: np.ndarray, position: int) -> np.ndarray:
        return self.decode_steps(np.asarray(embed)[None], np.array([position]), np.array([0]))[0]

    def decode_steps(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        out = []
        for embed, position, slot in zip(embeds, positions, slots):
            state = self._states[int(slot)]
            if state is None:
                raise VoxtralError(f"decode step in slot {slot} before its prefill")
            if position >= self._capacity:
                raise CapacityError(f"position {position} is beyond the KV cache ({self._capacity} positions)")
            out.append(self._backbone(np.asarray(embed)[None], np.array([position]), state)[0])
        return np.stack(out)

    # --- flow and codec ----------------------------------------------------------------------------
    def flow_frame(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        feeds = {"hidden": np.ascontiguousarray(hidden, dtype=np.float32)[None],
                 "noise": np.ascontiguousarray(noise, dtype=np.float32)[None]}
        return np.asarray(self._models["flow_frame"].predict(feeds)["codes"], dtype=np.int64)[0]

    def decode_audio(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.shape[0] == 0:
            return np.zeros(0, np.float32)
        if codes.shape[0] > self._codec_frames:  # chunks with left context: equal to one call
            return decode_codes(self.decode_audio, codes, self.config.samples_per_frame)
        audio = self._models["codec"].predict({"codes": pad_codec_chunk(codes, self._codec_frames, np.int32)})["audio"]
        return np.asarray(audio, dtype=np.float32)[0, : codes.shape[0] * self.config.samples_per_frame].copy()
