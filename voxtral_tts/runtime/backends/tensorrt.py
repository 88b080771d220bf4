"""The TensorRT backend: an engine directory's TensorRT plans, run with numpy, ``tensorrt`` (≥ 10)
and cuda-python (``cuda.bindings.runtime``) only — no torch, no ONNX Runtime.

Every device buffer is allocated once (:func:`buffer_plan`) and every tensor address set once
(:func:`backbone_bindings`, :func:`flow_bindings`, :func:`codec_bindings`):

- the KV cache ``k``/``v`` [n_layers, capacity, slots, Hkv, hd] float32 (:mod:`.kv_layout`), zeroed
  once (rows past a sequence's length are masked, and must be finite);
- the decode step: one execution context per (past bucket, batch width) (:mod:`.tensorrt_plans`),
  whose ``past_*`` inputs are each layer's cache prefix ``[:bucket]`` with the cache laid out as
  wide as the step's batch — the sequences in flight kept in its first rows, moved when one
  leaves or the width changes (:mod:`.kv_slots`) —, fixed shapes, replayed as a CUDA graph
  captured on its first use; the new rows go into the cache with ``cudaMemcpy2DAsync`` (one copy
  per sequence and cache);
- the flow frame: one context per batch width (the smallest holding the frame's sequences),
  replayed as a CUDA graph; each row's guidance weights copied in with its noise (a format-3
  engine's flow graph has its scale built in and no such input);
- the codec: one fixed chunk of 75 frames, shorter inputs padded at the end (the codec is causal:
  padding after the last frame does not change the audio before it);
- the prefill: its own context, length set per call, no graph. Its past is a cached voice
  prefix's own device buffers (:class:`DevicePrefix`: the keys/values of the prefix computed
  alone, kept by the runtime's prefix cache), copied into the sequence's slot with the new rows
  after them; without a prefix, one masked zero row.

Host transfers: per frame, the fed-back code embedding and positions in and the hidden state out
(:class:`.Backend` passes hidden states between the flow and the step on the host: 4·D bytes per
sequence each way), the codes out; per codec chunk the codes in and the audio out. All work runs in
order on one CUDA stream; the activation memory of every context is one shared buffer.
"""

from __future__ import annotations

import logging
import numpy as np

from ...engine import Engine
from ...errors import EngineError, VoxtralError
from ..codec import pad_codec_chunk
from ..load_options import TensorRTOptions
from .buckets import bucket_for
from .engine_backend import EngineBackend
from .kv_layout import Copy2D, KVLayout
from .kv_slots import CACHE, TO_SCRATCH, SlotPlacement
from .tensorrt_buffers import TensorBinding, backbone_bindings, buffer_plan, codec_bindings, flow_bindings
from .tensorrt_plans import DECODE_BUCKET, batch_widths, decode_buckets, decode_profiles, ensure_plans

log = logging.getLogger(__name__)

INSTALL = "pip install 'voxtral-tts[tensorrt]' on a machine with an NVIDIA GPU"


def require_libraries():
    """(tensorrt, cuda-python's runtime module), or one VoxtralError line naming what is missing."""
    missing = []
    trt = cudart = None
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        missing.append("tensorrt>=10")
    try:
        from cuda.bindings import runtime as cudart
    except (ImportError, OSError):
        try:
            from cuda import cudart
        except (ImportError, OSError):
            missing.append("cuda-python>=12")
    if missing:
        raise VoxtralError(f"the tensorrt backend needs {' and '.join(missing)}, not installed here ({INSTALL})")
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise VoxtralError(f"the tensorrt backend needs TensorRT >= 10, found {trt.__version__} ({INSTALL})")
    return trt, cudart


class Cuda:
    """cuda-python's runtime calls, each result's error code checked (they return (error, *values))."""

    def __init__(self, cudart):
        self.rt = cudart

    def error_name(self, err) -> str:
        name = self.rt.cudaGetErrorName(err)
        return name[1].decode() if isinstance(name[1], bytes) else str(name[1])

    def __call__(self, function: str, *args):
        err, *values = getattr(self.rt, function)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA {function} failed: {self.error_name(err)}")
        return values[0] if len(values) == 1 else tuple(values)


def open_cuda(cudart, index: int = 0) -> tuple[str, tuple[int, int]]:
    """Select GPU ``index``: (its name, its compute capability); no GPU is one VoxtralError line."""
    cuda = Cuda(cudart)
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        why = f" ({cuda.error_name(err)})" if err != cudart.cudaError_t.cudaSuccess else ""
        raise VoxtralError(f"the tensorrt backend needs an NVIDIA GPU; CUDA finds none{why}")
    if not 0 <= index < count:
        raise VoxtralError(f"GPU {index} does not exist; CUDA finds {count}")
    cuda("cudaSetDevice", index)
    props = cuda("cudaGetDeviceProperties", index)
    name = props.name.split(b"\0")[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return name, (int(props.major), int(props.minor))


def device_index(device) -> int:
    """``None`` / ``cuda`` → GPU 0, ``cuda:N`` or N → GPU N."""
    if device is None or device in ("cuda", "gpu", "tensorrt"):
        return 0
    if isinstance(device, int) and device >= 0:
        return device
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise VoxtralError(f"the tensorrt backend runs on a CUDA GPU: device must be cuda or cuda:N, got '{device}'")


def check_engine(engine: Engine) -> None:
    """TensorRT runs a ``--target tensorrt`` engine, or the float graphs of an ONNX engine."""
    if engine.target == "tensorrt" or (engine.target == "onnx" and engine.precision in ("fp32", "fp16")):
        return
    what = f"an {engine.precision} onnx engine (MatMulNBits has no TensorRT kernel)" if engine.target == "onnx" \
        else f"an engine for {engine.target}"
    raise VoxtralError(f"{engine.path}: {what}; export one with voxtral-export --target tensorrt")


# --- the backend -------------------------------------------------------------------------------------

class DevicePrefix:
    """A voice prefix's keys and values in device buffers of their own, freed with the object."""

    def __init__(self, cuda: Cuda, length: int, nbytes: int):
        self._cuda, self.length = cuda, length
        self.ptr: dict[str, int] = {}
        for kind in ("k", "v"):
            self.ptr[kind] = cuda("cudaMalloc", nbytes)

    def __del__(self):
        for ptr in self.ptr.values():
            try:
                self._cuda.rt.cudaFree(ptr)
            except Exception:  # interpreter shutdown: CUDA may already be gone
                pass
        self.ptr = {}


class TensorRTBackend(EngineBackend):
    """A TensorRT engine directory (``voxtral-export --target tensorrt``), or an fp32/fp16 ONNX
    engine directory (its graphs built as they are): plans built on first use, cached."""

    name = "tensorrt"
    options_type = TensorRTOptions
    export_flags = " --target tensorrt"
    check_engine = staticmethod(check_engine)

    def __init__(self, engine: Engine, options: TensorRTOptions | None = None, bucket_width: int = DECODE_BUCKET):
        options = options or TensorRTOptions()
        self._closed = True
        super().__init__(engine, options)
        trt, cudart = require_libraries()
        self._device_index = device_index(options.device)
        gpu, capability = open_cuda(cudart, self._device_index)
        self._slots = self.max_batch
        self.layout = KVLayout.for_config(self.config, self.capacity, self._slots)
        self.buckets = decode_buckets(self.capacity, bucket_width)
        self.widths = batch_widths(self._slots)
        self.placement = SlotPlacement(self.layout, self.widths)
        directory, _ = ensure_plans(engine, self.capacity, self._slots, capability, trt, bucket_width)
        self._takes_guidance = engine.flow_guidance

        self._trt, self._cuda = trt, Cuda(cudart)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engines = {}
        for name in ("backbone", "flow_frame", "codec"):
            self._engines[name] = self._runtime.deserialize_cuda_engine((directory / f"{name}.plan").read_bytes())
            if self._engines[name] is None:
                raise EngineError(f"{directory / name}.plan: TensorRT {trt.__version__} cannot deserialize it")
        self._graphs: dict = {}
        self._contexts: dict = {}
        self._ptr: dict[str, int] = {}
        self._stream = self._cuda("cudaStreamCreate")
        self._closed = False  # from here on, close() frees what was allocated
        self.buffers = {b.name: b for b in buffer_plan(self.config, self.capacity, self._slots)}
        for name, b in self.buffers.items():  # zeroed: the cache and the masked prefill row must be finite
            self._ptr[name] = self._cuda("cudaMalloc", b.nbytes)
            self._cuda("cudaMemsetAsync", self._ptr[name], 0, b.nbytes, self._stream)
        scratch = max(self._scratch_bytes(e, i)
                      for e in self._engines.values() for i in range(e.num_optimization_profiles))
        self._ptr["scratch"] = self._cuda("cudaMalloc", max(scratch, 1))

        dim = self.config.backbone.dim
        self._contexts["backbone", None] = self._context("backbone", 0, backbone_bindings(self.layout, dim), scratch)
        for profile, (bucket, rows) in enumerate(decode_profiles(self.capacity, self._slots, bucket_width), start=1):
            self._contexts["backbone", bucket, rows] = self._context(
                "backbone", profile, backbone_bindings(self.layout, dim, bucket, rows), scratch)
        for profile, rows in enumerate(self.widths):
            bindings = flow_bindings(self.config, rows, self._takes_guidance)
            self._contexts["flow", rows] = self._context("flow_frame", profile, bindings, scratch)
        self._contexts["codec", None] = self._context("codec", 0, codec_bindings(self.config), scratch)
        self._cuda("cudaStreamSynchronize", self._stream)

        self._host_buffers(flow_rows=self._slots)
        total = sum(b.nbytes for b in self.buffers.values()) + scratch
        log.info("TensorRT %s on %s (sm_%d%d), %s: %.2f GB of buffers, %d decode buckets", trt.__version__, gpu,
                 *capability, engine.precision, total / 1e9, len(self.buckets))

    @staticmethod
    def _scratch_bytes(engine, profile: int) -> int:
        if hasattr(engine, "get_device_memory_size_for_profile_v2"):  # TensorRT >= 10.1
            return int(engine.get_device_memory_size_for_profile_v2(profile))
        return int(engine.get_device_memory_size_for_profile(profile))

    def _context(self, graph: str, profile: int, bindings: list[TensorBinding], scratch: int):
        """An execution context on ``profile`` with every shape and address set once."""
        trt = self._trt
        engine = self._engines[graph]
        context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if hasattr(context, "set_device_memory"):  # TensorRT >= 10.1
            context.set_device_memory(self._ptr["scratch"], scratch)
        else:
            context.device_memory = self._ptr["scratch"]
        context.set_optimization_profile_async(profile, int(self._stream))
        dtypes = {trt.DataType.FLOAT: "float32", trt.DataType.INT64: "int64"}
        for b in bindings:
            buffer = self.buffers[b.buffer]
            expected = dtypes.get(engine.get_tensor_dtype(b.tensor))
            if expected != buffer.dtype:
                raise EngineError(f"{graph} plan: tensor {b.tensor} is {engine.get_tensor_dtype(b.tensor)}, "
                                  f"the runtime binds {buffer.dtype}")
            if engine.get_tensor_mode(b.tensor) == trt.TensorIOMode.INPUT:
                context.set_input_shape(b.tensor, b.shape)  # the prefill's length is set per call
            context.set_tensor_address(b.tensor, self._ptr[b.buffer] + b.offset)
        return context

    # --- transfers and launches --------------------------------------------------------------------
    def _h2d(self, buffer: str, array: np.ndarray, offset: int = 0) -> None:
        array = np.ascontiguousarray(array)
        self._cuda("cudaMemcpyAsync", self._ptr[buffer] + offset, array.ctypes.data, array.nbytes,
                   self._cuda.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream)

    def _d2h(self, array: np.ndarray, buffer: str, offset: int = 0) -> None:
        """Into ``array`` (C-contiguous), then wait for the stream."""
        self._cuda("cudaMemcpyAsync", array.ctypes.data, self._ptr[buffer] + offset, array.nbytes,
                   self._cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream)
        self._cuda("cudaStreamSynchronize", self._stream)

    def _store(self, copies: list[Copy2D], source: str) -> None:
        """Rows of ``source``.present_{k,v} into the cache, device to device, on the stream."""
        for kind in ("k", "v"):
            self._copy(copies, self._ptr[f"kv.{kind}"], self._ptr[f"{source}.present_{kind}"])

    def _move(self, moves) -> None:
        """Execute a :class:`.kv_slots.SlotPlacement` plan on both caches, on the stream."""
        scratch = self._ptr["kv.scratch"]
        for kind in ("k", "v"):
            cache = self._ptr[f"kv.{kind}"]
            for m in moves:
                dst, src = {CACHE: (cache, cache), TO_SCRATCH: (scratch, cache)}.get(m.kind, (cache, scratch))
                self._copy([m.copy], dst, src)

    def _copy(self, copies: list[Copy2D], dst: int, src: int) -> None:
        for c in copies:
            self._cuda("cudaMemcpy2DAsync", dst + c.dst, c.dst_pitch, src + c.src, c.src_pitch, c.width, c.height,
                       self._cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream)

    def _enqueue(self, context) -> None:
        if not context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (its log above says why)")

    def _replay(self, key) -> None:
        """Run a fixed-shape context as a CUDA graph: the first call runs it (which also flushes
        TensorRT's deferred setup) and captures it; later calls launch the graph."""
        if key not in self._graphs:
            self._enqueue(self._contexts[key])
            self._graphs[key] = self._capture(key)
        elif self._graphs[key] is None:
            self._enqueue(self._contexts[key])
        else:
            self._cuda("cudaGraphLaunch", self._graphs[key], self._stream)

    def _capture(self, key):
        rt = self._cuda.rt
        self._cuda("cudaStreamSynchronize", self._stream)
        self._cuda("cudaStreamBeginCapture", self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        ok = self._contexts[key].execute_async_v3(int(self._stream))
        err, graph = rt.cudaStreamEndCapture(self._stream)
        if not ok or err != rt.cudaError_t.cudaSuccess:
            rt.cudaGetLastError()  # clear the capture's error
            why = self._cuda.error_name(err) if ok else "TensorRT could not enqueue while capturing"
            log.warning("CUDA graph capture of %s failed (%s): it runs without a graph", key, why)
            return None
        executable = self._cuda("cudaGraphInstantiate", graph, 0)
        self._cuda("cudaGraphDestroy", graph)
        return executable

    # --- the backend's calls (arguments checked by Backend) --------------------------------------
    @property
    def prefix_identity(self) -> tuple:
        return self._identity(self.engine.precision, f"cuda:{self._device_index}")

    def _prefix(self, embeds: np.ndarray) -> tuple[int, int, "DevicePrefix"]:
        """The prefix's keys/values: a prefill of the prefix alone (no slot written), its
        ``present_k`` / ``present_v`` ([n_layers, L, 1, Hkv, hd], dense) copied into buffers of
        their own, freed when the last reference goes (:class:`DevicePrefix`)."""
        length = embeds.shape[0]
        self._run_prefill(embeds, None)
        nbytes = self.layout.n_layers * length * self.layout.row_bytes
        prefix = DevicePrefix(self._cuda, length, nbytes)
        for kind in ("k", "v"):
            self._cuda("cudaMemcpyAsync", prefix.ptr[kind], self._ptr[f"prefill.present_{kind}"], nbytes,
                       self._cuda.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream)
        self._cuda("cudaStreamSynchronize", self._stream)
        return length, 2 * nbytes, prefix

    def _prefill(self, items) -> list[np.ndarray]:
        """One prompt (TensorRT's prefill profile has batch 1): the prefill context, then the
        prefix's rows and the new ones copied into the slot."""
        ((embeds, slot, prefix),) = items
        dim = self.config.backbone.dim
        length, start = embeds.shape[0], 0 if prefix is None else prefix.length
        self._run_prefill(embeds, prefix)
        self._move(self.placement.admit([slot], [start + length]))
        layout, row = self.placement.layout, self.placement.row(slot)
        if prefix is not None:  # the prefix's rows, then the new ones after them
            for kind in ("k", "v"):
                self._copy(layout.rows_copies(row, 0, start, start), self._ptr[f"kv.{kind}"], prefix.data.ptr[kind])
        for kind in ("k", "v"):
            self._copy(layout.rows_copies(row, start, length, length), self._ptr[f"kv.{kind}"],
                       self._ptr[f"prefill.present_{kind}"])
        hidden = np.empty(dim, np.float32)
        self._d2h(hidden, "prefill.hidden", (length - 1) * dim * 4)
        return [hidden]

    def _run_prefill(self, embeds: np.ndarray, prefix) -> None:
        """The prefill context on ``embeds`` after ``prefix`` (its buffers bound as each layer's past),
        or after the one masked row."""
        length, dim = embeds.shape[0], self.config.backbone.dim
        start = 0 if prefix is None else prefix.length
        context = self._contexts["backbone", None]
        context.set_input_shape("embeds", (1, length, dim))
        context.set_input_shape("positions", (1, length))
        rows = max(start, 1)
        for layer in range(self.layout.n_layers):
            for kind in ("k", "v"):
                name = f"past_{kind}.{layer}"
                context.set_input_shape(name, (rows, 1, *self.layout.row_shape))
                address = (self._ptr["prefill.past"] if prefix is None
                           else prefix.data.ptr[kind] + layer * start * self.layout.row_bytes)
                context.set_tensor_address(name, address)
        self._h2d("prefill.embeds", embeds)
        self._h2d("prefill.positions", np.arange(start, start + length, dtype=np.int64))
        self._h2d("prefill.past_lengths", np.array([start], np.int64))
        self._enqueue(context)

    def _step(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """One replay of the step graph of the smallest past bucket and batch width that hold the
        sequences, each in its row (:class:`.kv_slots.SlotPlacement`); rows past them decode a
        dummy token whose rows are never stored (:meth:`_stage_step`)."""
        self._move(self.placement.arrange(slots, positions))
        layout, width = self.placement.layout, self.placement.width
        rows = np.array([self.placement.row(s) for s in slots])
        self._stage_step(embeds, positions, rows)
        self._h2d("step.embeds", self._step_embeds[:width])
        self._h2d("step.positions", self._step_positions[:width])
        self._h2d("step.past_lengths", self._step_positions[:width, 0])  # filled positions before this one
        self._replay(("backbone", bucket_for(int(positions.max()), self.buckets), width))
        self._store(layout.step_copies(positions, rows), "step")
        self._d2h(self._step_hidden[:width], "step.hidden")
        return self._step_hidden[rows, 0].copy()

    def _flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None,
              expressiveness: np.ndarray) -> np.ndarray:
        n = len(hidden)
        rows = bucket_for(n, self.widths)
        changed = self._stage_flow(hidden, noise, semantic, expressiveness)
        self._h2d("flow.hidden", self._flow_hidden[:rows])
        self._h2d("flow.noise", self._flow_noise[:rows])
        if self._takes_guidance:
            self._h2d("flow.guidance", self._flow_guidance[:rows])
        if changed:  # all rows (a narrower frame must not leave a sample behind); zeros stay while greedy
            self._h2d("flow.semantic_noise", self._flow_semantic)
        self._replay(("flow", rows))
        self._d2h(self._flow_codes[:rows], "flow.codes")
        return self._flow_codes[:n].copy()

    def _codec(self, codes: np.ndarray) -> np.ndarray:
        """One fixed 75-frame chunk, padded at the end (the codec is causal)."""
        self._h2d("codec.codes", pad_codec_chunk(codes))
        self._enqueue(self._contexts["codec", None])
        audio = np.empty(len(codes) * self.config.samples_per_frame, np.float32)
        self._d2h(audio, "codec.audio")
        return audio

    # --- teardown ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the graphs, contexts, buffers and stream (also done when the object is collected)."""
        if self._closed:
            return
        self._closed = True
        self._cuda.rt.cudaStreamSynchronize(self._stream)
        for executable in self._graphs.values():
            if executable is not None:
                self._cuda.rt.cudaGraphExecDestroy(executable)
        self._graphs.clear()
        self._contexts.clear()
        self._engines.clear()
        for ptr in self._ptr.values():
            self._cuda.rt.cudaFree(ptr)
        self._ptr.clear()
        self._cuda.rt.cudaStreamDestroy(self._stream)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass
