"""The checkpoint's tensor set, derived from params.json, and validation of a model directory.

:func:`expected_tensors` lists every tensor of ``consolidated.safetensors`` with its shape, by the
real (Mistral-native) key names of spec §2, from the configuration alone — no weights allocated.
:func:`validate_checkpoint` compares a file's header with it and reports every missing, unexpected
or mis-shaped tensor by name in one error. :class:`CheckpointReader` serves each tensor of the
reference model by its module name, read lazily from the memory-mapped file with the load-time
transforms applied — the one mapping that both model loading and ONNX export use. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .engine import sha256_file
from .errors import CheckpointError
from .reporting import count_text
from .tensors import TensorFileError, TensorInfo, as_float32, read_safetensors_array, read_safetensors_header

CHECKPOINT_FILE = "consolidated.safetensors"
Shape = tuple[int, ...]


def _transformer_layer(prefix: str, dim: int, hidden: int, n_heads: int, n_kv: int, head_dim: int) -> dict[str, Shape]:
    q, kv = n_heads * head_dim, n_kv * head_dim
    return {
        f"{prefix}.attention.wq.weight": (q, dim),
        f"{prefix}.attention.wk.weight": (kv, dim),
        f"{prefix}.attention.wv.weight": (kv, dim),
        f"{prefix}.attention.wo.weight": (dim, q),
        f"{prefix}.attention_norm.weight": (dim,),
        f"{prefix}.ffn_norm.weight": (dim,),
        f"{prefix}.feed_forward.w1.weight": (hidden, dim),
        f"{prefix}.feed_forward.w2.weight": (dim, hidden),
        f"{prefix}.feed_forward.w3.weight": (hidden, dim),
    }


def _weight_norm_conv(prefix: str, dim0: int, dim1: int, kernel: int) -> dict[str, Shape]:
    return {
        f"{prefix}.conv.parametrizations.weight.original0": (dim0, 1, 1),
        f"{prefix}.conv.parametrizations.weight.original1": (dim0, dim1, kernel),
    }


def expected_tensors(config: ModelConfig) -> dict[str, Shape]:
    """Every tensor the released checkpoint format holds for this configuration (spec §2)."""
    b, f, a, c = config.backbone, config.flow, config.audio, config.codec
    out: dict[str, Shape] = {
        "mm_audio_embeddings.tok_embeddings.weight": (b.vocab_size, b.dim),
        "mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight": (a.codebook_table_rows, b.dim),
        "norm.weight": (b.dim,),
    }
    for i in range(b.n_layers):
        out.update(_transformer_layer(f"layers.{i}", b.dim, b.hidden_dim, b.n_heads, b.n_kv_heads, b.head_dim))

    p = "acoustic_transformer"
    out.update({
        f"{p}.input_projection.weight": (f.dim, a.n_acoustic_codebook),
        f"{p}.time_projection.weight": (f.dim, f.dim),
        f"{p}.llm_projection.weight": (f.dim, f.input_dim),
        f"{p}.semantic_codebook_output.weight": (a.semantic_head_rows, f.input_dim),
        f"{p}.acoustic_codebook_output.weight": (a.n_acoustic_codebook, f.dim),
        f"{p}.norm.weight": (f.dim,),
    })
    for j in range(f.n_layers):
        out.update(_transformer_layer(f"{p}.layers.{j}", f.dim, f.hidden_dim, f.n_heads, f.n_kv_heads, f.head_dim))

    p = "audio_tokenizer"
    block = 0
    for stage, (n_layers, kernel, _stride) in enumerate(
        zip(c.decoder_transformer_lengths, c.decoder_convs_kernels, c.decoder_convs_strides)
    ):
        if stage == 0:
            out.update(_weight_norm_conv(f"{p}.decoder_blocks.{block}", c.dim, c.latent_dim, kernel))
        else:  # Conv1d [out, in, k] or ConvTranspose1d [in, out, k]: both dim × dim here
            out.update(_weight_norm_conv(f"{p}.decoder_blocks.{block}", c.dim, c.dim, kernel))
        block += 1
        for layer in range(n_layers):
            lp = f"{p}.decoder_blocks.{block}.layers.{layer}"
            out.update(_transformer_layer(lp, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads, c.head_dim))
            if c.qk_norm:
                out[f"{lp}.attention.q_norm.weight"] = (c.n_heads * c.head_dim,)
                out[f"{lp}.attention.k_norm.weight"] = (c.n_kv_heads * c.head_dim,)
            if c.layer_scale:
                out[f"{lp}.attention_scale"] = (c.dim,)
                out[f"{lp}.ffn_scale"] = (c.dim,)
        block += 1
    out.update(_weight_norm_conv(f"{p}.output_proj", c.patch_size, c.dim, c.patch_proj_kernel_size))
    out[f"{p}.quantizer.semantic_codebook.embedding_sum"] = (c.semantic_codebook_size, c.semantic_dim)
    out[f"{p}.quantizer.semantic_codebook.cluster_usage"] = (c.semantic_codebook_size,)
    return out


def checkpoint_path(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    return model_dir / CHECKPOINT_FILE if model_dir.is_dir() else model_dir


def validate_checkpoint(path: str | Path, config: ModelConfig) -> dict[str, TensorInfo]:
    """The checkpoint header, checked against the configuration; one error lists every problem."""
    path = checkpoint_path(path)
    try:
        infos, _ = read_safetensors_header(path)
    except TensorFileError as exc:
        raise CheckpointError(str(exc)) from None
    expected = expected_tensors(config)
    missing = sorted(set(expected) - set(infos))
    unexpected = sorted(set(infos) - set(expected))
    misshaped = sorted(
        f"{name} {list(infos[name].shape)} (expected {list(shape)})"
        for name, shape in expected.items()
        if name in infos and infos[name].shape != shape
    )
    bad_dtype = sorted(
        f"{name} {infos[name].dtype}"
        for name in expected
        if name in infos and infos[name].dtype not in ("BF16", "F32", "F16")
    )
    problems = []
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", misshaped),
        ("unsupported dtype", bad_dtype),
    ):
        if names:
            shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{path}: does not match params.json: " + "; ".join(problems))
    return infos


def checkpoint_identity(path: str | Path) -> str:
    """sha256 of the safetensors header: names, dtypes, shapes and offsets (cheap, content-free)."""
    path = checkpoint_path(path)
    infos, metadata = read_safetensors_header(path)
    canon = {n: [i.dtype, list(i.shape), i.start, i.end] for n, i in sorted(infos.items())}
    return hashlib.sha256(json.dumps([canon, metadata], sort_keys=True).encode()).hexdigest()


def model_identity(model_dir: str | Path, config: ModelConfig) -> dict[str, str]:
    """What an engine is built from: sha256 of params.json, of the checkpoint header, of tekken.json."""
    return {"params_sha256": config.params_sha256, "checkpoint_sha256": checkpoint_identity(model_dir),
            "tekken_sha256": sha256_file(Path(model_dir) / "tekken.json")}


# --- module-space tensors ---------------------------------------------------------------------------

FLOW_PREFIX = "acoustic_transformer."
CODEC_PREFIX = "audio_tokenizer."
WEIGHT_NORM_G = ".parametrizations.weight.original0"
WEIGHT_NORM_V = ".parametrizations.weight.original1"
SEMANTIC_CODEBOOK = "audio_tokenizer.semantic_codebook"
_QUANTIZER = "audio_tokenizer.quantizer.semantic_codebook."


def module_key(checkpoint_key: str) -> str:
    """Where a checkpoint tensor lives in the reference model (backbone keys get ``backbone.``)."""
    if checkpoint_key.startswith((FLOW_PREFIX, CODEC_PREFIX)):
        return checkpoint_key
    return "backbone." + checkpoint_key


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """weight_norm(dim=0): ``g · v / ‖v‖``, one norm per dim-0 slice over all other dims, in
    float32 (for ConvTranspose1d [in, out, k] dim 0 is the *input* channel; spec §2.4)."""
    v = v.astype(np.float32, copy=False)
    norm = np.sqrt(np.square(v.reshape(v.shape[0], -1), dtype=np.float32).sum(axis=1, dtype=np.float32))
    return (
        g.astype(np.float32).reshape(-1, *([1] * (v.ndim - 1))) * v / norm.reshape(-1, *([1] * (v.ndim - 1)))
    ).astype(np.float32)


class CheckpointReader:
    """The checkpoint in module space: each reference-model tensor (by its module name) as numpy,
    read from the memory-mapped file on demand, one at a time, with the load-time transforms
    applied (weight norm folded, the semantic codebook computed, spec §2.4, §7.1)."""

    def __init__(self, model_dir: str | Path, config: ModelConfig):
        self.path = checkpoint_path(model_dir)
        self.config = config
        self.infos = validate_checkpoint(self.path, config)
        self.shapes: dict[str, Shape] = {}
        self._sources: dict[str, tuple[str, ...]] = {}
        for key, info in self.infos.items():
            if key.endswith(WEIGHT_NORM_G):
                base = key[: -len(WEIGHT_NORM_G)]
                v_key = base + WEIGHT_NORM_V
                self._add(module_key(base + ".weight"), self.infos[v_key].shape, (key, v_key))
            elif key.endswith(WEIGHT_NORM_V) or key.startswith(_QUANTIZER):
                continue
            else:
                self._add(module_key(key), info.shape, (key,))
        c = config.codec
        self._add(SEMANTIC_CODEBOOK, (c.semantic_codebook_size, c.semantic_dim),
                  (_QUANTIZER + "embedding_sum", _QUANTIZER + "cluster_usage"))

    def _add(self, name: str, shape: Shape, sources: tuple[str, ...]) -> None:
        self.shapes[name] = tuple(shape)
        self._sources[name] = sources

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(i.shape, dtype=np.int64)) for i in self.infos.values())

    @property
    def storage_dtype(self) -> str:
        """The dtype the file stores its values in ("BF16" for the release): the commonest by
        parameter count, and the others with their counts when the file mixes dtypes."""
        counts: Counter[str] = Counter()
        for info in self.infos.values():
            counts[info.dtype] += int(np.prod(info.shape, dtype=np.int64))
        (first, _), *others = counts.most_common()
        if not others:
            return first
        return f"{first} ({', '.join(f'{count_text(n)} of them as {dtype}' for dtype, n in others)})"

    def describe(self) -> str:
        """What the file holds, in a log line's words: "4.0 B parameters stored as BF16"."""
        return f"{count_text(self.n_params)} parameters stored as {self.storage_dtype}"

    def is_plain(self, name: str) -> bool:
        """Stored as is in the file (no transform): may be read as raw BF16 bits."""
        return len(self._sources[name]) == 1

    def _array(self, key: str) -> np.ndarray:
        return read_safetensors_array(self.path, self.infos[key])

    def read(self, name: str, raw_bf16: bool = False) -> np.ndarray:
        """Module tensor ``name`` as float32 — or, with ``raw_bf16`` and a plain BF16 tensor, its
        uint16 bits (no conversion; torch views them as bfloat16)."""
        sources = self._sources[name]
        try:
            if name == SEMANTIC_CODEBOOK:
                total, usage = (as_float32(self._array(k), self.infos[k].dtype) for k in sources)
                return (total / np.maximum(usage, np.float32(1e-5))[:, None]).astype(np.float32)
            if len(sources) == 2:
                g, v = (as_float32(self._array(k), self.infos[k].dtype) for k in sources)
                return fold_weight_norm(g, v)
            info = self.infos[sources[0]]
            array = self._array(sources[0])
            if raw_bf16 and info.dtype == "BF16":
                return np.array(array)
            return as_float32(array, info.dtype)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor data ({exc})") from None
