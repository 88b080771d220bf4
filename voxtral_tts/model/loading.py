"""Loading ``consolidated.safetensors`` into the reference modules, strictly by the real key names.

The header is validated first against params.json (:func:`validate_checkpoint`: every missing,
unexpected or mis-shaped tensor named in one error). The modules are built on the ``meta`` device
(no memory), then each tensor is read from the memory-mapped file and assigned, one at a time, so
a checkpoint never needs twice its size in RAM. At load time:

- weight norm is folded (``W = g · v / ‖v‖`` over all dims but 0, in float32; spec §2.4);
- the semantic codebook is ``embedding_sum / clamp(cluster_usage, 1e-5)`` in float32 (§7.1);
- the flow head's ``time_embedding.inv_freq`` is recomputed (the buffer is absent, §2.2).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import checkpoint_path, validate_checkpoint
from ..config import ModelConfig
from ..errors import CheckpointError
from .backbone import Backbone
from .codec import CodecDecoder
from .flow import FlowHead

log = logging.getLogger(__name__)

FLOW_PREFIX = "acoustic_transformer."
CODEC_PREFIX = "audio_tokenizer."
WEIGHT_NORM_G = ".parametrizations.weight.original0"
WEIGHT_NORM_V = ".parametrizations.weight.original1"


class VoxtralModel(nn.Module):
    """The three blocks of Voxtral-4B-TTS-2603."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, config.audio)
        self.acoustic_transformer = FlowHead(config.flow, config.audio)
        self.audio_tokenizer = CodecDecoder(config.codec)


def module_key(checkpoint_key: str) -> str:
    """Where a checkpoint tensor lives in :class:`VoxtralModel` (backbone keys have no prefix)."""
    if checkpoint_key.startswith((FLOW_PREFIX, CODEC_PREFIX)):
        return checkpoint_key
    return "backbone." + checkpoint_key


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight_norm(dim=0): one norm per dim-0 slice (the *input* channel for ConvTranspose1d)."""
    v = v.float()
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return g.float() * v / norm


def default_weight_dtype(config: ModelConfig, n_params: int) -> torch.dtype:
    """float32 when the float32 weights take under half of physical memory, else bfloat16 storage."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return torch.float32
    return torch.float32 if 4 * n_params < total // 2 else torch.bfloat16


def _set(root: nn.Module, dotted: str, tensor: torch.Tensor, as_buffer: bool = False) -> None:
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    if as_buffer or leaf in module._buffers:
        module._buffers[leaf] = tensor
    else:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def load_model(
    model_dir: str | Path, weight_dtype: torch.dtype | None = None, progress: bool = True
) -> VoxtralModel:
    """Build the reference model from a model directory (params.json + consolidated.safetensors)."""
    model_dir = Path(model_dir)
    config = ModelConfig.from_file(model_dir)
    path = checkpoint_path(model_dir)
    infos = validate_checkpoint(path, config)
    n_params = sum(int(torch.Size(i.shape).numel()) for i in infos.values())
    dtype = weight_dtype or default_weight_dtype(config, n_params)
    log.info("loading %s (%.1f M parameters, weights stored as %s, computed in float32)",
             path, n_params / 1e6, str(dtype).replace("torch.", ""))

    with torch.device("meta"):
        model = VoxtralModel(config)
    with torch.device("cpu"):  # constants computed at construction, not loaded
        for module in model.modules():
            if hasattr(module, "init_buffers"):
                module.init_buffers()

    pending: dict[str, torch.Tensor] = {}  # weight-norm halves and codebook statistics, until paired
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in tqdm(sorted(infos), desc="loading weights", unit="tensor", disable=not progress):
                tensor = f.get_tensor(name)
                if name.endswith((WEIGHT_NORM_G, WEIGHT_NORM_V)) or ".quantizer." in name:
                    pending[name] = tensor
                    continue
                # codec weights are small: always float32; backbone / flow weights in `dtype`
                target = torch.float32 if name.startswith(CODEC_PREFIX) else dtype
                _set(model, module_key(name), tensor.to(target))
    except (OSError, RuntimeError) as exc:  # safetensors raises these on corrupt data
        raise CheckpointError(f"{path}: cannot read tensor data ({exc})") from None

    for name in [n for n in pending if n.endswith(WEIGHT_NORM_G)]:
        base = name[: -len(WEIGHT_NORM_G)]
        weight = fold_weight_norm(pending.pop(name), pending.pop(base + WEIGHT_NORM_V))
        _set(model, module_key(base + ".weight"), weight)
    quantizer = CODEC_PREFIX + "quantizer.semantic_codebook."
    usage = pending.pop(quantizer + "cluster_usage").float().clamp(min=1e-5)
    codebook = pending.pop(quantizer + "embedding_sum").float() / usage[:, None]
    _set(model.audio_tokenizer, "semantic_codebook", codebook, as_buffer=True)
    assert not pending, f"unused tensors: {sorted(pending)}"

    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # cannot happen after validation; a guard against a module/key-map mismatch
        raise CheckpointError(f"{path}: no tensor for {', '.join(leftover[:8])}")
    return model.eval().requires_grad_(False)
