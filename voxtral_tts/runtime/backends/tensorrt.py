"""The TensorRT backend: an engine directory's TensorRT plans, run with numpy, ``tensorrt`` (≥ 10)
and cuda-python (``cuda.bindings.runtime``) only — no torch, no ONNX Runtime.

Every device buffer is allocated once (:func:`buffer_plan`) and every tensor address set once
(:func:`backbone_bindings`, :func:`flow_bindings`, :func:`codec_bindings`):

- the KV cache ``k``/``v`` [n_layers, capacity, slots, Hkv, hd] float32 (:mod:`.kv_layout`), zeroed
  once (rows past a sequence's length are masked, and must be finite);
- the decode step: one execution context per past bucket (:mod:`.tensorrt_plans`),
  whose ``past_*`` inputs are each layer's cache prefix ``[:bucket]`` — the same address for every
  bucket — with fixed shapes, replayed as a CUDA graph captured on its first use; the new rows go
  into the cache with ``cudaMemcpy2DAsync`` (one copy per sequence and cache);
- the flow frame: one context, fixed batch (the cache slots), replayed as a CUDA graph;
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import ModelConfig
from ...engine import Engine, is_engine_dir, open_engine
from ...errors import EngineError, VoxtralError
from ..backend import Backend
from ..codec import pad_codec_chunk
from ..constants import CODEC_FRAMES
from .buckets import bucket_for
from .host_embeddings import HostEmbeddings
from .kv_layout import Copy2D, KVLayout
from .tensorrt_plans import DECODE_BUCKET, decode_buckets, ensure_plans

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


# --- the device buffer plan --------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceBuffer:
    name: str
    shape: tuple[int, ...]
    dtype: str  # float32 | int64

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class TensorBinding:
    """A graph tensor bound to ``buffer`` at byte ``offset``, with its largest shape."""

    tensor: str
    buffer: str
    offset: int
    shape: tuple[int, ...]


def buffer_plan(config: ModelConfig, capacity: int, max_batch: int,
                codec_frames: int = CODEC_FRAMES) -> list[DeviceBuffer]:
    """Every device buffer the backend allocates (once), besides TensorRT's activation memory."""
    layout = KVLayout.for_config(config, capacity, max_batch)
    dim, a, slots = config.backbone.dim, config.audio, max_batch
    f32, i64 = "float32", "int64"
    return [
        DeviceBuffer("kv.k", layout.shape, f32),
        DeviceBuffer("kv.v", layout.shape, f32),
        DeviceBuffer("prefill.embeds", (1, capacity, dim), f32),
        DeviceBuffer("prefill.positions", (1, capacity), i64),
        DeviceBuffer("prefill.past_lengths", (1,), i64),
        DeviceBuffer("prefill.past", (1, 1, *layout.row_shape), f32),  # one masked zero row for every layer
        DeviceBuffer("prefill.hidden", (1, capacity, dim), f32),
        DeviceBuffer("prefill.present_k", layout.present_shape(capacity, 1), f32),
        DeviceBuffer("prefill.present_v", layout.present_shape(capacity, 1), f32),
        DeviceBuffer("step.embeds", (slots, 1, dim), f32),
        DeviceBuffer("step.positions", (slots, 1), i64),
        DeviceBuffer("step.past_lengths", (slots,), i64),
        DeviceBuffer("step.hidden", (slots, 1, dim), f32),
        DeviceBuffer("step.present_k", layout.present_shape(1, slots), f32),
        DeviceBuffer("step.present_v", layout.present_shape(1, slots), f32),
        DeviceBuffer("flow.hidden", (slots, dim), f32),
        DeviceBuffer("flow.noise", (slots, a.n_acoustic_codebook), f32),
        DeviceBuffer("flow.semantic_noise", (slots, a.semantic_head_rows), f32),
        DeviceBuffer("flow.codes", (slots, a.num_codebooks), i64),
        DeviceBuffer("codec.codes", (1, codec_frames, a.num_codebooks), i64),
        DeviceBuffer("codec.audio", (1, codec_frames * config.samples_per_frame), f32),
    ]


def backbone_bindings(layout: KVLayout, dim: int, bucket: int | None = None) -> list[TensorBinding]:
    """The backbone's tensors: prefill (``bucket`` None, shapes at their maximum) or the decode
    step of one past bucket, whose ``past_*`` inputs are the cache prefixes."""
    pasts = [(f"past_{kind}.{i}", kind, i) for i in range(layout.n_layers) for kind in ("k", "v")]
    if bucket is None:
        length = layout.capacity
        return [
            TensorBinding("embeds", "prefill.embeds", 0, (1, length, dim)),
            TensorBinding("positions", "prefill.positions", 0, (1, length)),
            TensorBinding("past_lengths", "prefill.past_lengths", 0, (1,)),
            *[TensorBinding(name, "prefill.past", 0, (1, 1, *layout.row_shape)) for name, _, _ in pasts],
            TensorBinding("hidden", "prefill.hidden", 0, (1, length, dim)),
            TensorBinding("present_k", "prefill.present_k", 0, layout.present_shape(length, 1)),
            TensorBinding("present_v", "prefill.present_v", 0, layout.present_shape(length, 1)),
        ]
    slots = layout.slots
    return [
        TensorBinding("embeds", "step.embeds", 0, (slots, 1, dim)),
        TensorBinding("positions", "step.positions", 0, (slots, 1)),
        TensorBinding("past_lengths", "step.past_lengths", 0, (slots,)),
        *[TensorBinding(name, f"kv.{kind}", *layout.prefix(i, bucket)) for name, kind, i in pasts],
        TensorBinding("hidden", "step.hidden", 0, (slots, 1, dim)),
        TensorBinding("present_k", "step.present_k", 0, layout.present_shape(1, slots)),
        TensorBinding("present_v", "step.present_v", 0, layout.present_shape(1, slots)),
    ]


def flow_bindings(config: ModelConfig, slots: int) -> list[TensorBinding]:
    a = config.audio
    return [TensorBinding("hidden", "flow.hidden", 0, (slots, config.backbone.dim)),
            TensorBinding("noise", "flow.noise", 0, (slots, a.n_acoustic_codebook)),
            TensorBinding("semantic_noise", "flow.semantic_noise", 0, (slots, a.semantic_head_rows)),
            TensorBinding("codes", "flow.codes", 0, (slots, a.num_codebooks))]


def codec_bindings(config: ModelConfig, frames: int = CODEC_FRAMES) -> list[TensorBinding]:
    return [TensorBinding("codes", "codec.codes", 0, (1, frames, config.audio.num_codebooks)),
            TensorBinding("audio", "codec.audio", 0, (1, frames * config.samples_per_frame))]


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


class TensorRTBackend(Backend):
    name = "tensorrt"

    @classmethod
    def from_path(cls, path: str | Path, capacity: int | None = None, progress: bool = True, device=None,
                  threads: int | None = None, max_batch: int = 1) -> "TensorRTBackend":
        """The backend of a TensorRT engine directory (``voxtral-export --target tensorrt``), or of
        an fp32/fp16 ONNX engine directory (its graphs built as they are). ``progress`` is accepted
        like every backend's (plan building logs its own progress)."""
        path = Path(path)
        if not is_engine_dir(path):
            raise VoxtralError(f"{path}: the tensorrt backend runs an engine directory; make one with "
                               f"voxtral-export {path} -o ENGINE_DIR --target tensorrt")
        engine = open_engine(path)
        check_engine(engine)
        if threads:
            raise VoxtralError("--threads does not apply to the tensorrt backend")
        return cls(engine, capacity=capacity, max_batch=max_batch, device=device)

    def __init__(self, engine: Engine, capacity: int | None = None, max_batch: int = 1, device=None,
                 bucket_width: int = DECODE_BUCKET):
        self._closed = True
        super().__init__(engine.config, capacity or engine.capacity, max_batch)
        trt, cudart = require_libraries()
        self._device_index = device_index(device)
        gpu, capability = open_cuda(cudart, self._device_index)
        self.engine = engine
        self._slots = self.max_batch
        self.layout = KVLayout.for_config(self.config, self.capacity, self._slots)
        self.buckets = decode_buckets(self.capacity, bucket_width)
        directory, _ = ensure_plans(engine, self.capacity, self._slots, capability, trt, bucket_width)

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
        for profile, bucket in enumerate(self.buckets, start=1):
            self._contexts["backbone", bucket] = self._context(
                "backbone", profile, backbone_bindings(self.layout, dim, bucket), scratch)
        self._contexts["flow", None] = self._context("flow_frame", 0, flow_bindings(self.config, self._slots), scratch)
        self._contexts["codec", None] = self._context("codec", 0, codec_bindings(self.config), scratch)
        self._cuda("cudaStreamSynchronize", self._stream)

        a = self.config.audio
        self._step_embeds = np.zeros((self._slots, 1, dim), np.float32)
        self._step_positions = np.zeros((self._slots, 1), np.int64)
        self._step_hidden = np.zeros((self._slots, 1, dim), np.float32)
        self._flow_hidden = np.zeros((self._slots, dim), np.float32)
        self._flow_noise = np.zeros((self._slots, a.n_acoustic_codebook), np.float32)
        self._flow_semantic = np.zeros((self._slots, a.semantic_head_rows), np.float32)
        self._flow_sampled = False  # whether the device's flow.semantic_noise holds samples
        self._flow_codes = np.zeros((self._slots, a.num_codebooks), np.int64)
        self.embeddings = HostEmbeddings(engine)
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

    def _prefill(self, embeds: np.ndarray, slot: int, prefix=None) -> np.ndarray:
        dim = self.config.backbone.dim
        length, start = embeds.shape[0], 0 if prefix is None else prefix.length
        self._run_prefill(embeds, prefix)
        if prefix is not None:  # the prefix's rows, then the new ones after them
            for kind in ("k", "v"):
                self._copy(self.layout.rows_copies(slot, 0, start, start), self._ptr[f"kv.{kind}"],
                           prefix.data.ptr[kind])
        for kind in ("k", "v"):
            self._copy(self.layout.rows_copies(slot, start, length, length), self._ptr[f"kv.{kind}"],
                       self._ptr[f"prefill.present_{kind}"])
        hidden = np.empty(dim, np.float32)
        self._d2h(hidden, "prefill.hidden", (length - 1) * dim * 4)
        return hidden

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
        """One replay of the step graph of the smallest past bucket that holds every sequence; the
        slots not named decode a dummy token whose rows are never stored."""
        self._step_embeds.fill(0.0)
        self._step_positions.fill(0)
        self._step_embeds[slots, 0] = embeds
        self._step_positions[slots, 0] = positions
        self._h2d("step.embeds", self._step_embeds)
        self._h2d("step.positions", self._step_positions)
        self._h2d("step.past_lengths", self._step_positions[:, 0])  # filled positions before this one
        self._replay(("backbone", bucket_for(int(positions.max()), self.buckets)))
        self._store(self.layout.step_copies(positions, slots), "step")
        self._d2h(self._step_hidden, "step.hidden")
        return self._step_hidden[slots, 0].copy()

    def _flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None) -> np.ndarray:
        n = len(hidden)
        self._flow_hidden.fill(0.0)
        self._flow_noise.fill(0.0)
        self._flow_hidden[:n], self._flow_noise[:n] = hidden, noise
        self._h2d("flow.hidden", self._flow_hidden)
        self._h2d("flow.noise", self._flow_noise)
        if semantic is not None or self._flow_sampled:  # zeros stay on the device while decoding greedily
            self._flow_semantic.fill(0.0)
            if semantic is not None:
                self._flow_semantic[:n] = semantic
            self._h2d("flow.semantic_noise", self._flow_semantic)
        self._flow_sampled = semantic is not None
        self._replay(("flow", None))
        self._d2h(self._flow_codes, "flow.codes")
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
