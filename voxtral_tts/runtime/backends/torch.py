"""The PyTorch backend: the reference modules (:mod:`voxtral_tts.model`, imported when this backend
is opened) behind the runtime's :class:`.Backend` protocol, on CPU or CUDA.

- CPU: bf16 compute where the CPU has native bf16 dot products (AVX-512 BF16, AMX, Arm BF16), its
  matmul weights packed once for oneDNN (:func:`pack_linears`: bit-identical and faster per frame;
  docs/performance.md); float32 elsewhere or with ``dtype="fp32"`` (the reference: weights stored in float32 or
  bf16, see :func:`load_model`).
- CUDA: bf16 weights and bf16 matmuls by default (``dtype="fp32"`` for a float32 GPU path), with
  norms' statistics, RoPE, softmax, the semantic logits, the Euler updates and FSQ in float32
  (spec §9.2). The decode step and the flow frame are captured as CUDA graphs and replayed.

State is allocated once: the backbone's static KV cache (``StaticCache``, owned by this backend, one
slot per sequence decoded together, written in place) and fixed input/output buffers. The n
sequences in flight are kept in cache rows 0..n−1 (:class:`.kv_slots.RowPlacement`: when one leaves,
the one in the highest row moves into its row), and a decode step runs rows 0..B−1 — B = n on the
CPU, on CUDA the smallest batch bucket holding n; rows past n decode a dummy token into a scratch
position no sequence reads — and attends over the first K positions, K the smallest KV bucket past
the longest sequence. Each (B, K) is one CUDA graph, captured on first use (inputs, outputs and
cache at fixed addresses), so a step costs one replay and two small host copies. The flow frame is
one graph per batch bucket. Prefill (any length) and the codec run eagerly. ``compile=True`` also
fuses each transformer block with ``torch.compile`` (:class:`FusedBlocks`) inside those graphs:
fewer, larger kernels, at a compile cost per shape."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ...engine import is_engine_dir
from ...errors import VoxtralError
from ..backend import Backend
from ..constants import DEFAULT_CAPACITY, MAX_BATCH
from ..guidance import guidance_weights
from ..hardware import cpu_bf16
from ..load_options import TORCH_DTYPES, TorchOptions
from .buckets import bucket_for, power_buckets
from .host_embeddings import HostEmbeddings
from .kv_slots import RowPlacement

if TYPE_CHECKING:
    from ...model.loading import VoxtralModel

log = logging.getLogger(__name__)

#: The smallest KV bucket: a step reads at most this many positions more than it needs.
MIN_KV_BUCKET = 256
#: the options' dtype names (:data:`..load_options.TORCH_DTYPES`) → torch dtypes
DTYPES = dict(zip(TORCH_DTYPES, (torch.float32, torch.bfloat16, torch.float16)))


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """Compute dtype (a name of :data:`DTYPES`, checked by :class:`TorchOptions`): unless asked
    otherwise bf16 on CUDA and on a CPU with native bf16 dot products (:func:`..hardware.cpu_bf16`),
    else float32 (emulated bf16 is slower)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" or cpu_bf16() else torch.float32
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
        from ...model.layers import TransformerBlock

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


def _packed_linear(self, x: torch.Tensor) -> torch.Tensor:
    """A :class:`Linear` over a oneDNN-packed bf16 weight (see :func:`pack_linears`)."""
    if x.dtype != torch.bfloat16:  # every caller feeds the compute dtype; another input is computed in bf16
        packed = torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed_weight, None, "none", [], "")
        return packed.to(x.dtype)
    return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, None, "none", [], "")


def pack_linears(model: VoxtralModel) -> int:
    """CPU bf16: each bf16 weight of the backbone and the flow head reordered once into oneDNN's
    blocked layout and run by oneDNN's linear — bit-identical to ``F.linear`` in bf16, and it reads
    the weights at ~26 GB/s here where ``F.linear`` streams ~15 GB/s (the step is 93 % matmuls).
    The original weight is freed as each packed copy is made (one matrix of extra memory at most).
    Returns how many were packed (0 where this torch build lacks oneDNN)."""
    from types import MethodType

    from ...model.layers import Linear

    if not torch.backends.mkldnn.is_available():
        return 0
    packed = 0
    for block in (model.backbone, model.acoustic_transformer):
        for module in block.modules():
            if isinstance(module, Linear) and "weight" in module._parameters and module.weight.dtype == torch.bfloat16:
                module.packed_weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), 1)
                del module.weight
                module.forward = MethodType(_packed_linear, module)
                packed += 1
    model.packed_for_onednn = True
    return packed


def set_precision(model: VoxtralModel, dtype: torch.dtype) -> None:
    """Backbone and flow weights in ``dtype`` and computed in it; the semantic head in float32
    (its logits decide the code); the codec and every computed constant stay float32."""
    for block in (model.backbone, model.acoustic_transformer):
        for param in block.parameters():
            param.data = param.data.to(dtype)
        block.compute_dtype = dtype
    head = model.acoustic_transformer.semantic_codebook_output.weight
    head.data = head.data.float()


class TorchBackend(Backend):
    """The reference modules of ``model`` with ``options`` (:class:`TorchOptions`: device,
    compute dtype, CUDA graphs, torch.compile, capacity and slots)."""

    name = "torch"
    options_type = TorchOptions
    #: batched by default on the CPU, where that is faster; on CUDA one after another, where padded
    #: whole prompts were slower (docs/performance.md)
    can_batch_prefill = True

    def __init__(self, model: VoxtralModel, options: TorchOptions | None = None):
        from ...model.kv import StaticCache

        options = options or TorchOptions()
        self.device = resolve_device(options.device or "cpu")
        self.dtype = resolve_dtype(options.dtype, self.device)
        super().__init__(model.config, options.capacity or DEFAULT_CAPACITY, options.max_batch)
        self.batch_prefill = self.device.type == "cpu"
        graphs = options.cuda_graphs
        self.graphs = GraphCache(self.device.type == "cuda" if graphs is None else graphs)
        if self.graphs.enabled and self.device.type != "cuda":
            raise VoxtralError("CUDA graphs need device 'cuda'")
        # oneDNN-packed weights on the CPU in bf16 (torch.compile's inductor cannot lower them: not with compile)
        packed = self.device.type == "cpu" and self.dtype == torch.bfloat16 and not options.compile
        if getattr(model, "packed_for_onednn", False) and not packed:
            raise VoxtralError("this model's weights were packed for bf16 on the CPU by another torch backend; "
                               "load the model again for another device or dtype")
        self.model = model.to(self.device)
        if self.device.type == "cuda" or self.dtype != torch.float32:
            set_precision(self.model, self.dtype)  # on the CPU, float32 compute keeps the storage dtype
        if packed:
            log.info("%d bf16 matmul weights packed for oneDNN", pack_linears(self.model))
        self._slots = self.max_batch
        # one scratch position past the capacity: where rows of free slots write their dummy token
        self.kv_cache = StaticCache.for_backbone(self.model.backbone, self._slots, self.capacity + 1, self.dtype)
        # a step runs the rows of its sequences, kept in rows 0..n−1 of the cache (:class:`RowPlacement`):
        # on the CPU exactly n, on CUDA the smallest batch bucket (one graph each)
        self._batch_buckets = power_buckets(self._slots) if self.graphs.enabled else list(range(1, self._slots + 1))
        self.placement = RowPlacement(self._batch_buckets)
        self._kv_buckets = power_buckets(self.capacity + 1, min(MIN_KV_BUCKET, self.capacity + 1))
        b, a = self.config.backbone, self.config.audio
        self._embeds = torch.zeros(self._slots, 1, b.dim, dtype=self.dtype, device=self.device)
        self._positions = torch.zeros(self._slots, 1, dtype=torch.int64, device=self.device)
        self._hidden = torch.zeros(self._slots, b.dim, dtype=torch.float32, device=self.device)
        self._noise = torch.zeros(self._slots, a.n_acoustic_codebook, dtype=torch.float32, device=self.device)
        self._semantic = torch.zeros(self._slots, a.semantic_head_rows, dtype=torch.float32, device=self.device)
        self._sampled = False  # whether _semantic holds samples (zeroed again for a greedy frame)
        self._guidance = torch.zeros(self._slots, 2, dtype=torch.float32, device=self.device)  # each row's (α, 1 − α)
        self._fused = FusedBlocks(self.model) if options.compile else None
        # feedback sums on the host, in float32; text rows are looked up by the module (on its device)
        table = self.model.backbone.mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight
        self.embeddings = HostEmbeddings.from_tables(None, table.detach().float().cpu().numpy(), a.codebook_offsets)
        log.info("torch backend on %s: %s compute, %d slot(s) × %d positions, CUDA graphs %s", self.device,
                 str(self.dtype).replace("torch.", ""), self._slots, self.capacity,
                 "on" if self.graphs.enabled else "off")

    @classmethod
    def from_path(cls, path: str | Path, options: TorchOptions | None = None) -> "TorchBackend":
        """A model directory's checkpoint in the reference modules, its weights stored in
        ``options.weight_dtype`` (default: bf16 when computing in a 16-bit dtype, else see ``load_model``)."""
        from ...model.loading import load_model

        options = options or TorchOptions()
        path = Path(path)
        if is_engine_dir(path):
            raise VoxtralError(f"{path}: is an engine directory; the torch backend needs a model directory")
        compute = resolve_dtype(options.dtype, resolve_device(options.device or "cpu"))
        weight_dtype = DTYPES[options.weight_dtype] if options.weight_dtype else None
        if weight_dtype is None and compute != torch.float32:
            weight_dtype = torch.bfloat16  # read straight into bf16: no float32 copy on the host
        model = load_model(path, weight_dtype=weight_dtype, progress=options.progress)
        return cls(model, options)

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

    # --- backbone ----------------------------------------------------------------------------------
    @property
    def prefix_identity(self) -> tuple:
        return self._identity(str(self.dtype).replace("torch.", ""), str(self.device))

    @torch.no_grad()
    def _prefix(self, embeds: np.ndarray) -> tuple[int, int, tuple[torch.Tensor, torch.Tensor]]:
        """The prefix's keys/values [n_layers, Hkv, L, hd] in the cache's dtype, on its device:
        the backbone over the prefix alone, its new keys/values collected (no slot written)."""
        from ...model.kv import PastInputs

        length, a = embeds.shape[0], self.model.backbone.args
        empty = torch.zeros(0, 1, a.n_kv_heads, a.head_dim, dtype=self.dtype, device=self.device)
        kv = PastInputs([(empty, empty)] * a.n_layers, torch.zeros(1, dtype=torch.int64, device=self.device))
        self.model.backbone(self._tensor(embeds)[None], torch.arange(length, device=self.device)[None], kv=kv)
        k, v = (t[:, :, 0].transpose(1, 2).to(self.dtype).contiguous() for t in kv.present())
        return length, k.nbytes + v.nbytes, (k, v)

    def _move(self, moves) -> None:
        """A sequence's filled positions to another row of the cache (:class:`RowPlacement`)."""
        for src, dst, length in moves:
            for layer in self.kv_cache.layers:
                layer.k[dst, :, :length] = layer.k[src, :, :length]
                layer.v[dst, :, :length] = layer.v[src, :, :length]

    def _write_prefix(self, prefix, slot: int) -> None:
        k, v = prefix.data
        for i, layer in enumerate(self.kv_cache.layers):
            layer.k[slot, :, : prefix.length] = k[i]
            layer.v[slot, :, : prefix.length] = v[i]

    @torch.no_grad()
    def _prefill(self, items) -> list[np.ndarray]:
        """Prompts as the rows of one call, padded at the end to the longest; a padding token sits at
        the scratch position (causal: no real token sees it)."""
        starts = [item.start for item in items]
        lengths = [item.embeds.shape[0] for item in items]
        self._move(self.placement.admit([item.slot for item in items], [s + n for s, n in zip(starts, lengths)]))
        rows = [self.placement.row(item.slot) for item in items]
        width = max(lengths)
        embeds = np.zeros((len(items), width, self.config.backbone.dim), np.float32)
        positions = np.full((len(items), width), self.capacity, np.int64)
        for row, item in enumerate(items):
            embeds[row, : lengths[row]] = item.embeds
            positions[row, : lengths[row]] = np.arange(starts[row], starts[row] + lengths[row])
            if item.prefix is not None:
                self._write_prefix(item.prefix, rows[row])
        slots = torch.tensor(rows, device=self.device)
        kv_len = max(start + length for start, length in zip(starts, lengths))
        hidden = self.model.backbone(self._tensor(embeds), self._tensor(positions, torch.int64),
                                     kv=self.kv_cache.window(kv_len=kv_len, slots=slots))
        return [self._host(hidden[row, lengths[row] - 1]) for row in range(len(items))]

    @torch.no_grad()
    def _step(self, embeds: np.ndarray, positions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        self._move(self.placement.arrange(slots, positions))
        rows, slots = self.placement.width, np.array([self.placement.row(s) for s in slots])
        kv_len = bucket_for(int(positions.max()) + 1, self._kv_buckets)
        host_embeds = np.zeros((rows, embeds.shape[-1]), np.float32)
        host_positions = np.full(rows, self.capacity, np.int64)  # rows past the sequences: the scratch position
        host_embeds[slots] = embeds
        host_positions[slots] = positions
        self._embeds[:rows, 0].copy_(torch.from_numpy(host_embeds))
        self._positions[:rows, 0].copy_(torch.from_numpy(host_positions))
        backbone = self.model.backbone
        window = self.kv_cache.window(kv_len=kv_len, slots=slice(0, rows))
        hidden = self._captured(("step", rows, kv_len), lambda: backbone(self._embeds[:rows], self._positions[:rows],
                                                                         kv=window))
        return self._host(hidden[:, 0])[slots]

    # --- flow and codec ----------------------------------------------------------------------------
    @torch.no_grad()
    def _flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None,
              expressiveness: np.ndarray) -> np.ndarray:
        n = len(hidden)
        rows = bucket_for(n, self._batch_buckets)
        host_hidden = np.zeros((rows, hidden.shape[-1]), np.float32)  # rows past n: zeros, codes unused
        host_noise = np.zeros((rows, noise.shape[-1]), np.float32)
        host_hidden[:n], host_noise[:n] = hidden, noise
        scales = np.full(rows, self.config.flow.cfg_alpha)
        scales[:n] = expressiveness
        self._hidden[:rows].copy_(torch.from_numpy(host_hidden))
        self._noise[:rows].copy_(torch.from_numpy(host_noise))
        self._guidance[:rows].copy_(torch.from_numpy(guidance_weights(scales)))
        if semantic is not None:
            self._semantic[n:rows].zero_()
            self._semantic[:n].copy_(torch.from_numpy(semantic))
        elif self._sampled:
            self._semantic.zero_()
        self._sampled = semantic is not None
        flow = self.model.acoustic_transformer
        codes = self._captured(("flow", rows), lambda: flow(self._hidden[:rows], self._noise[:rows],
                                                            self._semantic[:rows], self._guidance[:rows]))
        return codes[:n].cpu().numpy()

    @torch.no_grad()
    def _codec(self, codes: np.ndarray) -> np.ndarray:
        # cuDNN runs float32 convolutions in TF32 by default, short of float32's precision: the
        # float32 path asks for true float32; the bf16 path keeps the faster TF32
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=self.dtype != torch.float32):
            return self._host(self.model.audio_tokenizer(self._tensor(codes, torch.int64)[None])[0])
