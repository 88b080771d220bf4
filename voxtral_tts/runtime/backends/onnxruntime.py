"""The ONNX Runtime backend: runs an engine directory's graphs with numpy and onnxruntime only.

State lives in buffers allocated once and bound with IO binding, never reallocated per step:

- the KV cache: ``k``/``v`` [n_layers, capacity, slots, Hkv, hd] float32 (:mod:`.kv_layout`), one
  slot per sequence decoded together (``max_batch``), laid out as wide as the sequences in flight
  (n ≤ slots; :mod:`.kv_slots` keeps them in rows 0..n−1 and re-lays the cache out when n
  changes). A step runs exactly those n rows: it binds each layer's prefix ``[:P]`` up to the
  longest sequence (contiguous in this position-major layout) as that layer's ``past_*`` input,
  zero-copy by pointer, with each sequence's own length in ``past_lengths``, and copies the
  returned rows to each sequence's position. On the CPU the cache is a numpy array; with
  ``--device cuda`` (or ``tensorrt``) it is resident on the GPU (:class:`DeviceKV`): the prefix is
  bound by device pointer, ``present_*`` are device buffers, the new rows are copied device to
  device, and only embeddings, positions, hidden states, codes and audio cross to the host;
- the step's ``embeds`` / ``positions`` inputs and its ``hidden`` / ``present_*`` outputs, and
  the flow frame's ``hidden`` / ``noise`` / ``semantic_noise`` / ``guidance`` inputs (no
  ``guidance`` in a format-3 engine: its scale is built in) and ``codes`` output, sized
  for every slot; the IO binding of n rows (made once per n) binds their first n rows.

Embedding lookups (text table, codebook sum) run on the host from the engine's ``.npy`` tables,
memory-mapped. Execution providers: CPU always; CUDA or TensorRT when installed and asked for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import struct
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ...engine import Engine
from ...errors import EngineError, VoxtralError
from ..backend import PrefillItem
from ..load_options import OnnxOptions
from .engine_backend import EngineBackend
from .kv_layout import KVLayout
from .kv_slots import CACHE, TO_SCRATCH, SlotPlacement

log = logging.getLogger(__name__)

DEVICES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
#: where the KV cache lives by default for each device: numpy on the host, or OrtValues on the GPU
KV_PLACEMENT = {"cpu": "host", "cuda": "device", "tensorrt": "device"}


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


# --- DLPack views: an OrtValue over any region of a buffer ----------------------------------------
# ``OrtValue.from_dlpack`` (documented: "A raw DLPack PyCapsule ... No data is copied; the new
# OrtValue shares memory with the source") wraps a DLManagedTensor (dlpack.h ABI) that points into
# the cache. The struct and its shape are one malloc'd block whose deleter is libc's ``free``, so
# it lives exactly as long as ORT holds it. ORT accepts only contiguous tensors: every view is a
# 1-D run of float32.
#: DLManagedTensor = DLTensor {void* data; DLDevice {int32 type, int32 id}; int32 ndim;
#: DLDataType {uint8 code, uint8 bits, uint16 lanes}; int64* shape; int64* strides; uint64 byte_offset}
#: + void* manager_ctx + deleter, followed here by the one int64 of the shape.
_DL_VIEW = struct.Struct("=QiiiBBHQQQQQq")
_DL_SHAPE_AT = _DL_VIEW.size - 8
_DL_DEVICE = {"cpu": 1, "cuda": 2}  # kDLCPU, kDLCUDA
_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_libc = ctypes.CDLL(ctypes.util.find_library("c") or ("msvcrt" if os.name == "nt" else None))
_libc.malloc.restype, _libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
_FREE = ctypes.cast(_libc.free, ctypes.c_void_p).value


def dlpack_view(ptr: int, count: int, device: str, device_id: int = 0):
    """An OrtValue over ``count`` float32 values at address ``ptr`` on ``device`` (no copy); the
    caller keeps that memory alive while the OrtValue is used."""
    import onnxruntime as ort

    block = _libc.malloc(_DL_VIEW.size)
    if not block:
        raise MemoryError("malloc failed for a DLPack view")
    # data, device, ndim 1, kDLFloat 32-bit ×1, shape → the trailing int64, no strides (compact),
    # byte_offset 0, no manager_ctx, deleter free(), shape [count]
    fields = (ptr, _DL_DEVICE[device], device_id, 1, 2, 32, 1, block + _DL_SHAPE_AT, 0, 0, 0, _FREE, count)
    ctypes.memmove(block, _DL_VIEW.pack(*fields), _DL_VIEW.size)
    return ort.OrtValue.from_dlpack(_capsule_new(block, b"dltensor", None))


class _KVStore(ABC):
    """The two caches (``k``, ``v``) with the step's ``present_*`` outputs, on some device, and the
    copies between them and other buffers of that device (prefill outputs, prompt prefixes)."""

    device: str
    device_id: int
    layout: KVLayout

    @abstractmethod
    def new(self, shape, zero: bool = True) -> Any:
        """A float32 buffer of ``shape`` on this device, zeroed unless it is an output the graph
        fills (masked rows of a past must still be finite)."""

    @abstractmethod
    def address(self, buffer) -> int:
        """Address of a buffer's first element."""

    @abstractmethod
    def bind_output(self, binding, name: str, buffer) -> None:
        """Bind ``buffer`` as the graph output ``name``."""

    @abstractmethod
    def copy(self, copies, dst, src) -> None:
        """Execute a copy plan (:class:`.kv_layout.Copy2D`, offsets from the buffers' starts)."""

    def synchronize(self, binding) -> None:
        """Order the copies made so far before the next run of ``binding``'s session."""

    def bind_present(self, binding, present: dict, shape=None) -> None:
        """Bind ``present`` as the outputs; with ``shape``, the first ``prod(shape)`` values of each."""
        for kind in ("k", "v"):
            if shape is None:
                self.bind_output(binding, f"present_{kind}", present[kind])
            else:
                binding.bind_output(f"present_{kind}", self.device, self.device_id, np.float32, list(shape),
                                    self.address(present[kind]))

    def move(self, moves, scratch) -> None:
        """Execute a :class:`.kv_slots.SlotPlacement` plan on both caches (through ``scratch``)."""
        if not moves:
            return
        for cache in (self.k, self.v):
            for m in moves:
                dst, src = {CACHE: (cache, cache), TO_SCRATCH: (scratch, cache)}.get(m.kind, (cache, scratch))
                self.copy([m.copy], dst, src)

    def outputs(self, length: int, batch: int = 1) -> dict:
        """Buffers for a prefill's ``present_*`` outputs: ``length`` positions of ``batch`` sequences."""
        return {kind: self.new(self.layout.present_shape(length, batch), zero=False) for kind in ("k", "v")}

    def store(self, copies, present: dict, binding) -> None:
        """Rows of ``present`` into both caches, complete before the next run."""
        for kind, cache in (("k", self.k), ("v", self.v)):
            self.copy(copies, cache, present[kind])
        self.synchronize(binding)

    def bind_past(self, binding, length: int, buffers: dict | None = None, layout: KVLayout | None = None) -> None:
        """Bind each layer's first ``length`` positions of ``buffers`` (laid out as ``layout``;
        default: the caches) as its ``past_k.i`` / ``past_v.i`` input."""
        buffers, layout = buffers or {"k": self.k, "v": self.v}, layout or self.layout
        for kind in ("k", "v"):
            for layer in range(layout.n_layers):
                offset, shape = layout.prefix(layer, length)
                binding.bind_input(f"past_{kind}.{layer}", self.device, self.device_id, np.float32, list(shape),
                                   self.address(buffers[kind]) + offset)


class HostKV(_KVStore):
    """The KV cache as numpy arrays on the host (the CPU provider reads them in place)."""

    device, device_id = "cpu", 0

    def __init__(self, layout: KVLayout):
        self.layout = layout
        self.k = np.zeros(layout.shape, np.float32)
        self.v = np.zeros(layout.shape, np.float32)
        self.present = {kind: np.zeros(layout.present_shape(1, layout.slots), np.float32) for kind in ("k", "v")}

    def new(self, shape, zero: bool = True) -> np.ndarray:
        return np.zeros(shape, np.float32) if zero else np.empty(shape, np.float32)

    def address(self, array: np.ndarray) -> int:
        return array.ctypes.data

    def bind_output(self, binding, name: str, buffer) -> None:
        OnnxBackend._bind(binding, "output", name, buffer)

    def copy(self, copies, dst, src) -> None:
        for c in copies:
            c.apply(dst, src)


class DeviceKV(_KVStore):
    """The KV cache as OrtValues on ``device`` (``cuda``, or ``cpu`` for tests of this path), with
    the step's ``present_*`` outputs. New rows are copied device to device with
    ``OrtValue.update_inplace(OrtValue)`` (documented: "data can be copied between devices (e.g.,
    GPU to GPU) without going through the CPU"), one contiguous run at a time through DLPack views;
    ``onnxruntime.copy_tensors`` is not used because it needs a data transfer registered by a
    plugin execution provider (it fails even CPU to CPU in a stock build). After the copies,
    ``IOBinding.synchronize_inputs()`` (the execution provider's ``Sync``) orders them before the
    next run, whichever stream they ran on."""

    def __init__(self, layout: KVLayout, device: str, device_id: int = 0):
        self.layout, self.device, self.device_id = layout, device, device_id
        self.k, self.v = self.new(layout.shape), self.new(layout.shape)
        self.present = {kind: self.new(layout.present_shape(1, layout.slots)) for kind in ("k", "v")}
        self._rows: dict[tuple[int, int], object] = {}

    def new(self, shape, zero: bool = True):
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, self.device, self.device_id)
        if not zero:
            return value
        block = 1 << 22  # zeroed through a host block of ≤ 16 MB at a time
        total = int(np.prod(shape, dtype=np.int64))
        zeros = np.zeros(min(total, block), np.float32)
        for start in range(0, total, block):
            count = min(block, total - start)
            self._view(value.data_ptr() + 4 * start, 4 * count).update_inplace(zeros[:count])
        return value

    def _view(self, ptr: int, nbytes: int):
        return dlpack_view(ptr, nbytes // 4, self.device, self.device_id)

    def address(self, value) -> int:
        return value.data_ptr()

    def bind_output(self, binding, name: str, buffer) -> None:
        binding.bind_ortvalue_output(name, buffer)

    def copy(self, copies, dst, src) -> None:
        keep = src is self.present["k"] or src is self.present["v"]  # the step's outputs never move
        dst_base, src_base = dst.data_ptr(), src.data_ptr()
        for c in copies:
            for to, frm, nbytes in c.runs():
                source = self._row(src_base + frm, nbytes) if keep else self._view(src_base + frm, nbytes)
                self._view(dst_base + to, nbytes).update_inplace(source)

    def synchronize(self, binding) -> None:
        binding.synchronize_inputs()

    def _row(self, ptr: int, nbytes: int):
        if (ptr, nbytes) not in self._rows:
            self._rows[ptr, nbytes] = self._view(ptr, nbytes)
        return self._rows[ptr, nbytes]


class OnnxBackend(EngineBackend):
    """An engine directory's graphs in ONNX Runtime (a model directory is exported first by
    :func:`voxtral_tts.load`). ``options.device``: cpu (default), cuda or tensorrt (execution
    providers); ``options.kv_placement``: ``host`` (numpy) or ``device`` (OrtValues on the
    provider's device), by default host for the CPU and device for CUDA / TensorRT (``device`` on
    the CPU runs the GPU path's binding and copy logic on host memory, for tests)."""

    name = "onnxruntime"
    options_type = OnnxOptions
    #: by default one prompt after another, as fast or faster on the CPU and the GPU
    #: (docs/performance.md)
    can_batch_prefill = True

    def __init__(self, engine: Engine, options: OnnxOptions | None = None):
        import onnxruntime as ort

        options = options or OnnxOptions()
        super().__init__(engine, options)
        device = options.device or "cpu"
        self.providers = providers_for(device)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.threads or physical_cores()
        session_options.inter_op_num_threads = 1
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions = {}
        for name in ("backbone", "flow_frame", "codec"):
            log.info("loading %s", engine.graph_path(name).name)
            try:
                session = ort.InferenceSession(str(engine.graph_path(name)), session_options,
                                               providers=self.providers)
            except Exception as exc:  # onnxruntime's own errors: a truncated graph or weights file
                log.info("onnxruntime cannot load %s: %s", engine.graph_path(name), exc)
                files = [engine.graph_path(name)] + [engine.path / f for f in engine.manifest["graphs"][name].get(
                    "data_files", [])]
                raise EngineError(f"{' / '.join(map(str, files))}: onnxruntime cannot load this graph and its "
                                  "weights (truncated or corrupt? export the engine again)") from None
            if session.get_providers()[0] != self.providers[0]:  # ORT falls back to the CPU silently
                raise VoxtralError(f"onnxruntime could not start its {self.providers[0]} (no usable GPU, or its "
                                   "CUDA/cuDNN libraries are missing); see onnxruntime-gpu's requirements")
            self._sessions[name] = session

        b, slots = self.config.backbone, self.max_batch
        self._n_layers, self._kv = b.n_layers, (b.n_kv_heads, b.head_dim)
        self.layout = KVLayout.for_config(self.config, self.capacity, slots)
        if (options.kv_placement or KV_PLACEMENT[device]) == "host":
            self._cache = HostKV(self.layout)
        else:
            self._cache = DeviceKV(self.layout, "cuda" if device != "cpu" else "cpu")
        # a step runs exactly its sequences: the cache is laid out as wide as they are (:mod:`.kv_slots`)
        self.placement = SlotPlacement(self.layout, range(1, slots + 1))
        self._scratch = self._cache.new(self.placement.scratch_shape, zero=False)
        self._host_buffers(flow_rows=slots)
        self._step_lengths = np.zeros(slots, np.int64)
        self._step_bindings: dict[int, Any] = {}  # rows → the step's binding, made on first use
        self._flow_bindings: dict[int, Any] = {}  # rows → the flow frame's binding

    @property
    def k_cache(self):
        """The key cache: a numpy array, or an OrtValue on the device."""
        return self._cache.k

    @property
    def v_cache(self):
        return self._cache.v

    def _step_binding(self, rows: int):
        """The decode step's binding at ``rows`` sequences: the first rows of the fixed buffers
        (the past is bound per step, as it grows)."""
        binding = self._step_bindings.get(rows)
        if binding is None:
            binding = self._step_bindings[rows] = self._sessions["backbone"].io_binding()
            self._bind(binding, "input", "embeds", self._step_embeds[:rows])
            self._bind(binding, "input", "positions", self._step_positions[:rows])
            self._bind(binding, "input", "past_lengths", self._step_lengths[:rows])
            self._bind(binding, "output", "hidden", self._step_hidden[:rows])
            self._cache.bind_present(binding, self._cache.present, self.layout.present_shape(1, rows))
        return binding

    def _flow_binding(self, rows: int):
        binding = self._flow_bindings.get(rows)
        if binding is None:
            binding = self._flow_bindings[rows] = self._sessions["flow_frame"].io_binding()
            self._bind(binding, "input", "hidden", self._flow_hidden[:rows])
            self._bind(binding, "input", "noise", self._flow_noise[:rows])
            self._bind(binding, "input", "semantic_noise", self._flow_semantic[:rows])
            if self.engine.flow_guidance:
                self._bind(binding, "input", "guidance", self._flow_guidance[:rows])
            self._bind(binding, "output", "codes", self._flow_codes[:rows])
        return binding

    @staticmethod
    def _bind(binding, kind: str, name: str, array: np.ndarray) -> None:
        """Bind a host array by pointer (no copy); ``array`` must stay alive and contiguous."""
        assert array.flags.c_contiguous
        method = binding.bind_input if kind == "input" else binding.bind_output
        method(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)

    # --- backbone ----------------------------------------------------------------------------------
    @property
    def prefix_identity(self) -> tuple:
        return self._identity(self.engine.precision, self.providers[0])

    def _prefix(self, embeds: np.ndarray) -> tuple[int, int, Any]:
        """The prompt prefix's keys/values: the ``present_*`` of a one-sequence prefill at 0, kept as
        they come ([n_layers, L, 1, Hkv, hd]: each layer's rows contiguous, bound as a past later)."""
        length = embeds.shape[0]
        _, present = self._run_prefill(embeds[None], np.arange(length, dtype=np.int64)[None], np.zeros(1, np.int64))
        return length, 2 * self.layout.n_layers * length * self.layout.row_bytes, present

    def _prefill(self, items: list[PrefillItem]) -> list[np.ndarray]:
        """One backbone call for every item: rows padded at the end to the longest (causal, so the
        padding is never seen), each row at its own positions after its own prefix (``past_lengths``)."""
        batch, dim = len(items), self.config.backbone.dim
        starts = [item.start for item in items]
        lengths = [item.embeds.shape[0] for item in items]
        width, past = max(lengths), max(starts)
        embeds = np.zeros((batch, width, dim), np.float32)
        for row, item in enumerate(items):
            embeds[row, : lengths[row]] = item.embeds
        positions = np.asarray(starts, np.int64)[:, None] + np.arange(width, dtype=np.int64)[None]
        pasts = None
        if past and batch == 1:  # the prefix's own buffers, bound as they are
            pasts = (items[0].prefix.data, KVLayout(self.layout.n_layers, past, 1, *self.layout.row_shape))
        elif past:  # every row's prefix gathered into one [n_layers, past, batch, …] buffer
            staging = KVLayout(self.layout.n_layers, past, batch, *self.layout.row_shape)
            buffers = {kind: self._cache.new(staging.shape) for kind in ("k", "v")}
            for row, item in enumerate(items):
                if item.prefix is not None:
                    for kind in ("k", "v"):
                        self._cache.copy(staging.rows_copies(row, 0, starts[row], starts[row]), buffers[kind],
                                         item.prefix.data[kind])
            pasts = (buffers, staging)
        hidden, present = self._run_prefill(embeds, positions, np.asarray(starts, np.int64), pasts)
        self._cache.move(self.placement.admit([item.slot for item in items],
                                              [s + n for s, n in zip(starts, lengths)]), self._scratch)
        layout = self.placement.layout
        for row, item in enumerate(items):
            place = self.placement.row(item.slot)
            for kind, cache in (("k", self._cache.k), ("v", self._cache.v)):
                if item.prefix is not None:
                    self._cache.copy(layout.rows_copies(place, 0, starts[row], starts[row]), cache,
                                     item.prefix.data[kind])
                self._cache.copy(layout.rows_copies(place, starts[row], lengths[row], width, batch, row),
                                 cache, present[kind])
        self._cache.synchronize(self._step_binding(self.placement.width))
        return [hidden[row, lengths[row] - 1].copy() for row in range(batch)]

    def _run_prefill(self, embeds: np.ndarray, positions: np.ndarray, past_lengths: np.ndarray,
                     pasts: tuple[dict, KVLayout] | None = None) -> tuple[np.ndarray, dict]:
        """One backbone call: embeds [B, T, D] at positions [B, T] after ``pasts`` (buffers and
        their layout; None: no past) → (hidden [B, T, D] on the host, present_k/v buffers)."""
        batch, width = positions.shape
        session = self._sessions["backbone"]
        binding = session.io_binding()
        self._bind(binding, "input", "embeds", embeds)
        self._bind(binding, "input", "positions", positions)
        self._bind(binding, "input", "past_lengths", past_lengths)
        if pasts is None:
            empty = np.zeros((0, batch, *self._kv), np.float32)
            for i in range(self._n_layers):
                self._bind(binding, "input", f"past_k.{i}", empty)
                self._bind(binding, "input", f"past_v.{i}", empty)
        else:
            buffers, layout = pasts
            self._cache.synchronize(binding)
            self._cache.bind_past(binding, layout.capacity, buffers, layout)
        hidden = np.empty((batch, width, self.config.backbone.dim), np.float32)
        self._bind(binding, "output", "hidden", hidden)
        present = self._cache.outputs(width, batch)
        self._cache.bind_present(binding, present)
        session.run_with_iobinding(binding)
        return hidden, present

    def _step(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """One backbone call for exactly the sequences named: the cache laid out as wide as they
        are, each in its row (:class:`.kv_slots.SlotPlacement`; moves only when one joins or leaves)."""
        self._cache.move(self.placement.arrange(slots, positions), self._scratch)
        layout, rows = self.placement.layout, np.array([self.placement.row(s) for s in slots])
        binding = self._step_binding(layout.slots)
        self._cache.synchronize(binding)  # the moves before the run
        self._stage_step(embeds, positions, rows)
        self._step_lengths[:] = self._step_positions[:, 0]  # each sequence's filled positions before this one
        # the filled prefix grows by one each step
        self._cache.bind_past(binding, int(positions.max()), layout=layout)
        self._sessions["backbone"].run_with_iobinding(binding)
        self._cache.store(layout.step_copies(positions, rows), self._cache.present, binding)
        return self._step_hidden[rows, 0].copy()

    # --- flow and codec ----------------------------------------------------------------------------
    def _flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None,
              expressiveness: np.ndarray) -> np.ndarray:
        """One call at exactly the frames asked for, through the fixed bindings of that many rows."""
        n = len(hidden)
        self._stage_flow(hidden, noise, semantic, expressiveness)
        self._sessions["flow_frame"].run_with_iobinding(self._flow_binding(n))
        return self._flow_codes[:n].copy()

    def _codec(self, codes: np.ndarray) -> np.ndarray:
        return self._sessions["codec"].run(None, {"codes": codes[None]})[0][0]
