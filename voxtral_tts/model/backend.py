"""The PyTorch backend: the reference modules behind the runtime's :class:`Inference`, on CPU or CUDA.

- CPU (the reference): float32 compute, weights stored in float32 or bf16 (see :func:`load_model`).
- CUDA: bf16 weights and bf16 matmuls by default (``dtype="fp32"`` for a float32 GPU path), with
  norms' statistics, RoPE, softmax, the semantic logits, the Euler updates and FSQ in float32
  (spec §9.2). The decode step and the flow frame are captured as CUDA graphs and replayed.

State is allocated once: the backbone's static KV cache (``KVCache``, one slot per sequence decoded
together, written in place) and fixed input/output buffers. A decode step runs rows 0..B−1 = cache
slots 0..B−1 — B the smallest batch bucket holding every named slot; unnamed rows are free slots
that decode a dummy token into a scratch position no sequence reads — and attends over the first
K positions, K the smallest KV bucket past the longest sequence. Each (B, K) is one CUDA graph,
captured on first use (inputs, outputs and cache at fixed addresses), so a step costs one replay
and two small host copies. The flow frame is one graph per batch bucket. Prefill (any length) and
the codec run eagerly. ``compile=True`` also fuses each transformer block with ``torch.compile``
(:class:`FusedBlocks`) inside those graphs: fewer, larger kernels, at a compile cost per shape.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import CapacityError, VoxtralError
from ..runtime.decoding import Inference
from ..runtime.host_embeddings import code_embedding
from .loading import VoxtralModel, load_model

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 4096
#: The smallest KV bucket: a step reads at most this many positions more than it needs.
MIN_KV_BUCKET = 256
MAX_BATCH = 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def buckets(limit: int, first: int = 1) -> list[int]:
    """Powers of two from ``first`` below ``limit``, then ``limit`` itself: the fixed shapes a
    variable size is rounded up to (at most twice the work, a handful of graphs)."""
    out, size = [], first
    while size < limit:
        out.append(size)
        size *= 2
    return out + [limit]


def bucket_for(n: int, sizes: list[int]) -> int:
    """The smallest size ≥ ``n``."""
    for size in sizes:
        if size >= n:
            return size
    raise CapacityError(f"{n} exceeds the largest bucket ({sizes[-1]})")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Compute dtype: bf16 on CUDA and float32 on CPU unless asked otherwise."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise VoxtralError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError:
        raise VoxtralError(f"unknown device '{device}'; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VoxtralError("device 'cuda' asked for, but this torch build sees no CUDA GPU "
                           f"(torch {torch.__version__}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise VoxtralError(f"the torch backend runs on cpu or cuda, not '{device.type}'")
    return device


class GraphCache:
    """CUDA graphs of fixed-shape calls, captured on first use and replayed after; or, disabled
    (CPU, or for comparison), the same calls run eagerly.

    ``fn`` must read its inputs from, and its result must be, tensors at fixed addresses. The
    warm-up runs before capture execute ``fn`` for real: the calls here are idempotent (a decode
    step writes the same cache rows each time), so that is harmless.
    """

    WARMUP = 2

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def __call__(self, key: tuple, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if not self.enabled:
            return fn()
        entry = self._graphs.get(key)
        if entry is None:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(self.WARMUP):
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = fn()
            entry = self._graphs[key] = (graph, out)
            log.debug("captured CUDA graph %s", key)
        graph, out = entry
        graph.replay()
        return out


class FusedBlocks:
    """``torch.compile`` of the transformer block (inductor fuses its norms, RoPE, casts and
    residuals into a few kernels), used by the graph-captured calls only: prefill (any length)
    stays eager. One compiled function serves every layer of the backbone and of the flow head (the
    same code, the weights are inputs), compiled once per shape bucket, at the first capture."""

    def __init__(self, model: VoxtralModel):
        from .layers import TransformerBlock

        limit = 8 * MAX_BATCH  # shapes: batch buckets × KV buckets of the step, batch buckets of the flow
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        self._fn = torch.compile(TransformerBlock.forward, dynamic=False)
        self._layers = list(model.backbone.layers) + list(model.acoustic_transformer.layers)

    @contextlib.contextmanager
    def active(self):
        for layer in self._layers:
            layer.forward = self._fn.__get__(layer)
        try:
            yield
        finally:
            for layer in self._layers:
                del layer.forward


def set_precision(model: VoxtralModel, dtype: torch.dtype) -> None:
    """Backbone and flow weights in ``dtype`` and computed in it; the semantic head in float32
    (its logits decide the code); the codec and every computed constant stay float32."""
    for block in (model.backbone, model.acoustic_transformer):
        for param in block.parameters():
            param.data = param.data.to(dtype)
        block.compute_dtype = dtype
    head = model.acoustic_transformer.semantic_codebook_output.weight
    head.data = head.data.float()


class TorchInference(Inference):
    def __init__(self, model: VoxtralModel, capacity: int = DEFAULT_CAPACITY, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None, max_batch: int = 1, cuda_graphs: bool | None = None,
                 compile: bool = False):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if not 1 <= max_batch <= MAX_BATCH:
            raise VoxtralError(f"max_batch must be between 1 and {MAX_BATCH}, got {max_batch}")
        if capacity < 2:
            raise VoxtralError("capacity must be at least 2 positions")
        self.config = model.config
        self.model = model.to(self.device)
        if self.device.type == "cuda" or self.dtype != torch.float32:
            set_precision(self.model, self.dtype)  # on the CPU, float32 compute keeps the storage dtype
        self._capacity, self._slots = int(capacity), int(max_batch)
        # one scratch position past the capacity: where rows of free slots write their dummy token
        self.model.backbone.setup_cache(self._slots, self._capacity + 1, self.dtype)
        self._batch_buckets = buckets(self._slots)
        self._kv_buckets = buckets(self._capacity + 1, min(MIN_KV_BUCKET, self._capacity + 1))
        b, a = self.config.backbone, self.config.audio
        self._embeds = torch.zeros(self._slots, 1, b.dim, dtype=self.dtype, device=self.device)
        self._positions = torch.zeros(self._slots, 1, dtype=torch.int64, device=self.device)
        self._hidden = torch.zeros(self._slots, b.dim, dtype=torch.float32, device=self.device)
        self._noise = torch.zeros(self._slots, a.n_acoustic_codebook, dtype=torch.float32, device=self.device)
        self.graphs = GraphCache(self.device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs))
        if self.graphs.enabled and self.device.type != "cuda":
            raise VoxtralError("CUDA graphs need device 'cuda'")
        self._fused = FusedBlocks(self.model) if compile else None
        table = self.model.backbone.mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight
        self._codebooks = table.detach().float().cpu().numpy()  # feedback sums on the host, in float32
        self._offsets = np.asarray(a.codebook_offsets, dtype=np.int64)
        log.info("torch backend on %s: %s compute, %d slot(s) × %d positions, CUDA graphs %s", self.device,
                 str(self.dtype).replace("torch.", ""), self._slots, self._capacity,
                 "on" if self.graphs.enabled else "off")

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, capacity: int = DEFAULT_CAPACITY, device: str = "cpu",
                       dtype: str | torch.dtype | None = None, weight_dtype: torch.dtype | None = None,
                       max_batch: int = 1, cuda_graphs: bool | None = None, compile: bool = False,
                       progress: bool = True) -> "TorchInference":
        compute = resolve_dtype(dtype, resolve_device(device))
        if weight_dtype is None and compute != torch.float32:
            weight_dtype = torch.bfloat16  # read straight into bf16: no float32 copy on the host
        model = load_model(model_dir, weight_dtype=weight_dtype, progress=progress)
        return cls(model, capacity, device, compute, max_batch, cuda_graphs, compile)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_batch(self) -> int:
        return self._slots

    def _captured(self, key: tuple, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``fn`` as a replayed CUDA graph (or eagerly), through the fused blocks if compiled."""
        if self._fused is None:
            return self.graphs(key, fn)

        def fused():
            with self._fused.active():
                return fn()

        return self.graphs(key, fused)

    def _tensor(self, array: np.ndarray, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=dtype, device=self.device)

    @staticmethod
    def _host(tensor: torch.Tensor) -> np.ndarray:
        return tensor.float().cpu().numpy() if tensor.is_floating_point() else tensor.cpu().numpy()

    # --- embeddings --------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        return self._host(self.model.backbone.embed_tokens(self._tensor(ids, torch.int64)))

    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        return code_embedding(self._codebooks, self._offsets, codes)

    # --- backbone ----------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, embeds: np.ndarray, slot: int = 0) -> np.ndarray:
        """One prompt into ``slot``. (Several prompts padded into one call measured slower on an H200
        — 1.17 s for 32 × 291 tokens against 0.88 s one by one — so sequences are prefilled one at
        a time.)"""
        length = embeds.shape[0]
        if length > self._capacity:
            raise CapacityError(f"prompt of {length} tokens exceeds the KV cache ({self._capacity} positions)")
        if not 0 <= slot < self._slots:
            raise VoxtralError(f"slot {slot} does not exist (max_batch {self._slots})")
        positions = torch.arange(length, device=self.device)[None]
        slots = torch.tensor([slot], device=self.device)
        hidden = self.model.backbone(self._tensor(embeds)[None], positions, kv_len=length, slots=slots)
        return self._host(hidden[0, -1])

    def decode_step(self, embed: np.ndarray, position: int) -> np.ndarray:
        return self.decode_steps(np.asarray(embed)[None], np.array([position]), np.array([0]))[0]

    @torch.no_grad()
    def decode_steps(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        positions, slots = np.asarray(positions, np.int64), np.asarray(slots, np.int64)
        if positions.max() >= self._capacity:
            raise CapacityError(f"position {positions.max()} is beyond the KV cache ({self._capacity} positions)")
        if slots.min() < 0 or slots.max() >= self._slots:
            raise VoxtralError(f"slots {slots.tolist()} out of range (max_batch {self._slots})")
        rows = bucket_for(int(slots.max()) + 1, self._batch_buckets)
        kv_len = bucket_for(int(positions.max()) + 1, self._kv_buckets)
        host_embeds = np.zeros((rows, embeds.shape[-1]), np.float32)
        host_positions = np.full(rows, self._capacity, np.int64)  # free slots: the scratch position
        host_embeds[slots] = embeds
        host_positions[slots] = positions
        self._embeds[:rows, 0].copy_(torch.from_numpy(host_embeds))
        self._positions[:rows, 0].copy_(torch.from_numpy(host_positions))
        backbone = self.model.backbone
        hidden = self._captured(("step", rows, kv_len), lambda: backbone(
            self._embeds[:rows], self._positions[:rows], kv_len=kv_len, slots=slice(0, rows)))
        return self._host(hidden[:, 0])[slots]

    # --- flow and codec ----------------------------------------------------------------------------
    def flow_frame(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.flow_frames(np.asarray(hidden)[None], np.asarray(noise)[None])[0]

    def flow_frames(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Any number of frames, ``max_batch`` rows per call (the flow head holds no state)."""
        step = self._slots
        return np.concatenate([self._flow_rows(hidden[i : i + step], noise[i : i + step])
                               for i in range(0, len(hidden), step)])

    @torch.no_grad()
    def _flow_rows(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        n = len(hidden)
        rows = bucket_for(n, self._batch_buckets)
        host_hidden = np.zeros((rows, hidden.shape[-1]), np.float32)  # rows past n: zeros, codes unused
        host_noise = np.zeros((rows, noise.shape[-1]), np.float32)
        host_hidden[:n], host_noise[:n] = hidden, noise
        self._hidden[:rows].copy_(torch.from_numpy(host_hidden))
        self._noise[:rows].copy_(torch.from_numpy(host_noise))
        flow = self.model.acoustic_transformer
        codes = self._captured(("flow", rows), lambda: flow(self._hidden[:rows], self._noise[:rows]))
        return codes[:n].cpu().numpy()

    @torch.no_grad()
    def decode_audio(self, codes: np.ndarray) -> np.ndarray:
        # cuDNN runs float32 convolutions in TF32 by default (error ~5e-4 of peak, measured on an
        # H200): the float32 path asks for true float32; the bf16 path keeps the faster TF32
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=self.dtype != torch.float32):
            return self._host(self.model.audio_tokenizer(self._tensor(codes, torch.int64)[None])[0])
