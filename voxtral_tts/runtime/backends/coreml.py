"""The Core ML backend: runs a ``--target coreml`` engine's packages with coremltools (macOS 15+).

- ``backbone.mlpackage`` is stateful: one ``make_state()`` per sequence holds every layer's KV
  cache (float16, the engine's capacity); a prefill is one call with L = prompt length, a decode
  step one call with L = 1, both writing the state in place. A voice prefix's keys/values are
  read out of a state with ``MLState.read_state`` and written into the next sequence's fresh state
  with ``write_state`` (whole: the API writes a state's full shape), then only the rest of the
  prompt is prefilled.
- ``flow_frame.mlpackage``: one frame per call (codes come back int32, returned as int64), with
  the frame's guidance weights (a format-3 package has its scale built in and no such input).
- ``codec.mlpackage`` takes a fixed 75-frame chunk: shorter chunks are padded at the end with
  their last frame and the audio of the padding dropped (the codec is causal).

Embedding lookups run on the host (:class:`HostEmbeddings`). Several sequences may be in flight
(``max_batch``), each with its own state, stepped one call each. Torch-free: numpy and coremltools.
"""

from __future__ import annotations

import logging
import platform
import sys

import numpy as np

from ...engine import Engine
from ...errors import VoxtralError
from ..codec import pad_codec_chunk
from ..guidance import guidance_weights
from ..load_options import CoreMLOptions
from .engine_backend import EngineBackend

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


class CoreMLBackend(EngineBackend):
    """An engine directory exported with ``--target coreml``. ``options.device``: all (default:
    CPU, GPU and Neural Engine), cpu, gpu or ane (CPU and Neural Engine). ``models``: the three
    packages already loaded (anything with MLModel's ``predict`` and, for the backbone,
    ``make_state``); loaded from the engine with the device's compute units if None.
    ``max_batch`` sequences may be in flight, each with its own state; a step for several runs one
    backbone call per sequence (the package's batch is 1)."""

    name = "coreml"
    options_type = CoreMLOptions
    export_flags = " --target coreml"

    def __init__(self, engine: Engine, options: CoreMLOptions | None = None, models: dict | None = None):
        options = options or CoreMLOptions()
        super().__init__(engine, options)
        if self.capacity > engine.capacity:
            raise VoxtralError(f"{engine.path}: capacity {options.capacity} is not available: this Core ML engine's "
                               f"KV cache holds {engine.capacity} positions (re-export with --capacity to change it)")
        self.device = options.device or "all"
        self._codec_frames = int(engine.manifest["codec_frames"])
        if models is None:
            models = self._load(engine, self.device)
        self._models = models
        self._states: list = [None] * self.max_batch  # one Core ML state (KV cache) per slot
        # the state's names, where this coremltools can read and write a state from Python (9+)
        try:
            from coremltools.models.model import MLState
        except ImportError:
            MLState = None
        self._state_names: list[str] = []
        if hasattr(MLState, "read_state") and hasattr(MLState, "write_state"):
            self._state_names = [state.name for state in models["backbone"].get_spec().description.state]

    @classmethod
    def check_engine(cls, engine: Engine) -> None:
        if engine.target != "coreml":
            raise VoxtralError(f"{engine.path}: is a {engine.target} engine; the coreml backend runs engines "
                               "exported with voxtral-export --target coreml")

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

    # --- backbone ----------------------------------------------------------------------------------
    def _backbone(self, embeds: np.ndarray, positions: np.ndarray, state) -> np.ndarray:
        feeds = {"embeds": np.ascontiguousarray(embeds, dtype=np.float32)[None],
                 "positions": np.ascontiguousarray(positions, dtype=np.int32)}
        return np.asarray(self._models["backbone"].predict(feeds, state=state)["hidden"], dtype=np.float32)[0]

    # --- the voice prefix: read out of a state, written into a fresh one -------------------------------
    @property
    def prefix_identity(self) -> tuple | None:
        return self._identity(self.engine.precision, self.device) if self._state_names else None

    def _prefix(self, embeds: np.ndarray) -> tuple[int, int, dict[str, np.ndarray]]:
        """Each cache state's first L positions (``MLState.read_state``, coremltools 9+): the
        prefix alone in a fresh state, then read out; the state's position axis is −2."""
        length = embeds.shape[0]
        state = self._models["backbone"].make_state()
        self._backbone(embeds, np.arange(length), state)
        data = {name: np.array(state.read_state(name)[..., :length, :]) for name in self._state_names}
        return length, sum(a.nbytes for a in data.values()), data

    def _prefill(self, items) -> list[np.ndarray]:
        """One prompt into a fresh state for its slot (after its prefix's rows, when given)."""
        ((embeds, slot, prefix),) = items
        state = self._models["backbone"].make_state()  # a fresh cache for this sequence
        start = 0
        if prefix is not None:  # written whole: MLState.write_state takes the state's full shape
            start = prefix.length
            for name, rows in prefix.data.items():  # [1, Hkv, the engine's capacity, hd]
                full = np.zeros((*rows.shape[:-2], self.engine.capacity, rows.shape[-1]), rows.dtype)
                full[..., :start, :] = rows
                state.write_state(name, full)
        hidden = self._backbone(embeds, np.arange(start, start + embeds.shape[0]), state)[-1].copy()
        self._states[slot] = state
        return [hidden]

    def _step(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        out = []
        for embed, position, slot in zip(embeds, positions, slots):
            state = self._states[int(slot)]
            if state is None:
                raise VoxtralError(f"a step in slot {slot} before its prefill")
            out.append(self._backbone(embed[None], np.array([position]), state)[0])
        return np.stack(out)

    # --- flow and codec ----------------------------------------------------------------------------
    def _flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None,
              expressiveness: np.ndarray) -> np.ndarray:
        if semantic is None:
            semantic = np.zeros((len(hidden), self.config.audio.semantic_head_rows), np.float32)
        flow, guidance = self._models["flow_frame"], guidance_weights(expressiveness)
        codes = []
        for h, x, s, g in zip(hidden, noise, semantic, guidance):
            feeds = {"hidden": h[None], "noise": x[None], "semantic_noise": s[None]}
            if self.engine.flow_guidance:
                feeds["guidance"] = g[None]
            codes.append(np.asarray(flow.predict(feeds)["codes"], dtype=np.int64)[0])
        return np.stack(codes)

    def _codec(self, codes: np.ndarray) -> np.ndarray:
        """One fixed chunk of the engine's ``codec_frames``, padded at the end (the codec is causal)."""
        audio = self._models["codec"].predict({"codes": pad_codec_chunk(codes, self._codec_frames, np.int32)})["audio"]
        return np.asarray(audio, dtype=np.float32)[0, : codes.shape[0] * self.config.samples_per_frame].copy()
