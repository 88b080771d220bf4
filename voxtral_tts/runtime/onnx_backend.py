"""The ONNX Runtime backend: runs an engine directory's graphs with numpy and onnxruntime only.

State lives in buffers allocated once and bound with IO binding, never reallocated per step:

- the KV cache: ``k``/``v`` [n_layers, capacity, slots, Hkv, hd] float32 on the host, one slot
  per sequence decoded together (``max_batch``). A step binds each layer's prefix ``[:P]`` up to
  the longest sequence (contiguous in this position-major layout) as that layer's ``past_*``
  input, zero-copy by pointer, with each sequence's own length in ``past_lengths``, and writes
  the returned rows at each sequence's position;
- the step's ``embeds`` / ``positions`` inputs and its ``hidden`` / ``present_*`` outputs;
- the flow frame's ``hidden`` / ``noise`` inputs and ``codes`` output.

Embedding lookups (text table, codebook sum) run on the host from the engine's ``.npy`` tables,
memory-mapped. Execution providers: CPU always; CUDA or TensorRT when installed and asked for.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..engine import Engine
from ..errors import VoxtralError
from .decoding import Inference
from .host_embeddings import HostEmbeddings

log = logging.getLogger(__name__)

DEVICES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def physical_cores() -> int:
    """Physical cores (not hyper-threads) available to this process: ORT's intra-op default here."""
    try:
        cores = set()
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    cores.add((phys, core))
        usable = len(os.sched_getaffinity(0))
        return max(1, min(len(cores) or usable, usable))
    except (OSError, AttributeError):
        return os.cpu_count() or 1


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    if device not in DEVICES:
        raise VoxtralError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    wanted = DEVICES[device]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise VoxtralError(
            f"device '{device}' needs onnxruntime's {wanted[0]}, which this onnxruntime build lacks "
            f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT"
        )
    return wanted


class OnnxInference(Inference):
    def __init__(self, engine: Engine, capacity: int | None = None, device: str = "cpu", threads: int | None = None,
                 max_batch: int = 1):
        import onnxruntime as ort

        self.engine = engine
        self.config = engine.config
        self._capacity = int(capacity or engine.capacity)
        self.providers = providers_for(device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions = {}
        for name in ("backbone", "flow_frame", "codec"):
            log.info("loading %s", engine.graph_path(name).name)
            self._sessions[name] = ort.InferenceSession(str(engine.graph_path(name)), options, providers=self.providers)

        b, a = self.config.backbone, self.config.audio
        if not 1 <= max_batch <= 64:
            raise VoxtralError(f"max_batch must be between 1 and 64, got {max_batch}")
        self._slots = int(max_batch)
        self._n_layers, self._kv = b.n_layers, (b.n_kv_heads, b.head_dim)
        shape = (b.n_layers, self._capacity, self._slots, *self._kv)
        self.k_cache = np.zeros(shape, np.float32)
        self.v_cache = np.zeros(shape, np.float32)
        slots = self._slots
        self._step_embeds = np.zeros((slots, 1, b.dim), np.float32)
        self._step_positions = np.zeros((slots, 1), np.int64)
        self._step_lengths = np.zeros(slots, np.int64)
        self._step_hidden = np.zeros((slots, 1, b.dim), np.float32)
        self._step_k = np.zeros((b.n_layers, 1, slots, *self._kv), np.float32)
        self._step_v = np.zeros((b.n_layers, 1, slots, *self._kv), np.float32)
        self._flow_hidden = np.zeros((1, b.dim), np.float32)
        self._flow_noise = np.zeros((1, a.n_acoustic_codebook), np.float32)
        self._flow_codes = np.zeros((1, a.num_codebooks), np.int64)
        self._step_binding = self._sessions["backbone"].io_binding()
        self._bind(self._step_binding, "input", "embeds", self._step_embeds)
        self._bind(self._step_binding, "input", "positions", self._step_positions)
        self._bind(self._step_binding, "input", "past_lengths", self._step_lengths)
        self._bind(self._step_binding, "output", "hidden", self._step_hidden)
        self._bind(self._step_binding, "output", "present_k", self._step_k)
        self._bind(self._step_binding, "output", "present_v", self._step_v)
        self._flow_binding = self._sessions["flow_frame"].io_binding()
        self._bind(self._flow_binding, "input", "hidden", self._flow_hidden)
        self._bind(self._flow_binding, "input", "noise", self._flow_noise)
        self._bind(self._flow_binding, "output", "codes", self._flow_codes)

        self._embeddings = HostEmbeddings(engine)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_batch(self) -> int:
        return self._slots

    @staticmethod
    def _bind(binding, kind: str, name: str, array: np.ndarray) -> None:
        """Bind a host array by pointer (no copy); ``array`` must stay alive and contiguous."""
        assert array.flags.c_contiguous
        method = binding.bind_input if kind == "input" else binding.bind_output
        method(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    # --- embeddings (host) -------------------------------------------------------------------------
    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        return self._embeddings.tokens(ids)

    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        return self._embeddings.codes(codes)

    # --- backbone ----------------------------------------------------------------------------------
    def _bind_past(self, binding, cache_k: np.ndarray, cache_v: np.ndarray) -> None:
        for i in range(self._n_layers):
            self._bind(binding, "input", f"past_k.{i}", cache_k[i])
            self._bind(binding, "input", f"past_v.{i}", cache_v[i])

    def prefill(self, embeds: np.ndarray, slot: int = 0) -> np.ndarray:
        length = embeds.shape[0]
        if length > self._capacity:
            raise VoxtralError(f"prompt of {length} tokens exceeds the KV cache ({self._capacity} positions)")
        session = self._sessions["backbone"]
        binding = session.io_binding()
        inputs = np.ascontiguousarray(embeds, dtype=np.float32)[None]
        positions = np.arange(length, dtype=np.int64)[None]
        self._bind(binding, "input", "embeds", inputs)
        self._bind(binding, "input", "positions", positions)
        self._bind(binding, "input", "past_lengths", np.zeros(1, np.int64))
        empty = np.zeros((self._n_layers, 0, 1, *self._kv), np.float32)
        self._bind_past(binding, empty, empty)
        hidden = np.empty((1, length, self.config.backbone.dim), np.float32)
        new_k = np.empty((self._n_layers, length, 1, *self._kv), np.float32)
        new_v = np.empty_like(new_k)
        self._bind(binding, "output", "hidden", hidden)
        self._bind(binding, "output", "present_k", new_k)
        self._bind(binding, "output", "present_v", new_v)
        session.run_with_iobinding(binding)
        self.k_cache[:, :length, slot] = new_k[:, :, 0]
        self.v_cache[:, :length, slot] = new_v[:, :, 0]
        return hidden[0, -1].copy()

    def decode_step(self, embed: np.ndarray, position: int) -> np.ndarray:
        return self.decode_steps(np.asarray(embed)[None], np.array([position]), np.array([0]))[0]

    def decode_steps(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """One backbone call for every slot; the slots not named decode a dummy token whose rows
        are never stored."""
        positions, slots = np.asarray(positions, np.int64), np.asarray(slots, np.int64)
        if positions.max() >= self._capacity:
            raise VoxtralError(f"position {positions.max()} is beyond the KV cache ({self._capacity} positions)")
        self._step_embeds.fill(0.0)
        self._step_positions.fill(0)
        self._step_lengths.fill(0)
        self._step_embeds[slots, 0] = embeds
        self._step_positions[slots, 0] = positions
        self._step_lengths[slots] = positions  # the sequence's filled positions before this one
        longest = int(positions.max())
        # the filled prefix grows by one each step
        self._bind_past(self._step_binding, self.k_cache[:, :longest], self.v_cache[:, :longest])
        self._sessions["backbone"].run_with_iobinding(self._step_binding)
        self.k_cache[:, positions, slots] = self._step_k[:, 0, slots]
        self.v_cache[:, positions, slots] = self._step_v[:, 0, slots]
        return self._step_hidden[slots, 0].copy()

    # --- flow and codec ----------------------------------------------------------------------------
    def flow_frame(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        self._flow_hidden[0] = hidden
        self._flow_noise[0] = noise
        self._sessions["flow_frame"].run_with_iobinding(self._flow_binding)
        return self._flow_codes[0].copy()

    def flow_frames(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if len(hidden) == 1:
            return self.flow_frame(hidden[0], noise[0])[None]
        feeds = {"hidden": np.ascontiguousarray(hidden, np.float32), "noise": np.ascontiguousarray(noise, np.float32)}
        return self._sessions["flow_frame"].run(None, feeds)[0]

    def decode_audio(self, codes: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(codes, dtype=np.int64)[None]
        return self._sessions["codec"].run(None, {"codes": codes})[0][0]
