"""Loading ``consolidated.safetensors`` into the reference modules, strictly by the real key names.

The header is validated first against params.json (every missing, unexpected or mis-shaped tensor
named in one error). The modules are built on the ``meta`` device (no memory); then each tensor is
read from the memory-mapped file by :class:`CheckpointReader` — weight norm folded, semantic
codebook computed — and assigned, one at a time, so a checkpoint never needs twice its size in
RAM. Constants the checkpoint lacks (``time_embedding.inv_freq``, ALiBi slopes, codebook offsets)
are computed by the modules' ``init_buffers``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import CODEC_PREFIX, CheckpointReader
from ..config import ModelConfig
from ..errors import CheckpointError
from ..reporting import steps
from .backbone import Backbone
from .codec import CodecDecoder
from .flow import FlowHead

log = logging.getLogger(__name__)


class VoxtralModel(nn.Module):
    """The three blocks of Voxtral-4B-TTS-2603."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.backbone, config.audio)
        self.acoustic_transformer = FlowHead(config.flow, config.audio)
        self.audio_tokenizer = CodecDecoder(config.codec)


def default_weight_dtype(n_params: int) -> torch.dtype:
    """float32 when the float32 weights take under half of physical memory, else bfloat16 storage."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return torch.float32
    return torch.float32 if 4 * n_params < total // 2 else torch.bfloat16


def build_on_meta(config: ModelConfig) -> VoxtralModel:
    """The model structure without weight memory; computed constants materialised on the CPU."""
    with torch.device("meta"):
        model = VoxtralModel(config)
    with torch.device("cpu"):
        for module in model.modules():
            if hasattr(module, "init_buffers"):
                module.init_buffers()
    return model


def set_tensor(root: nn.Module, name: str, tensor: torch.Tensor) -> None:
    *path, leaf = name.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    if leaf in module._buffers:
        module._buffers[leaf] = tensor
    else:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)


def to_torch(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if array.dtype == np.uint16:  # raw BF16 bits
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).to(dtype)
    return torch.from_numpy(array).to(dtype)


def load_model(model_dir: str | Path, weight_dtype: torch.dtype | None = None, progress: bool = True,
               blocks: tuple[str, ...] | None = None) -> VoxtralModel:
    """Build the reference model from a model directory (params.json + consolidated.safetensors).

    ``blocks`` (e.g. ``("backbone",)``) loads only those blocks; the others stay on the meta
    device (no memory) — for validating one exported graph at a time on a small machine.
    """
    config = ModelConfig.from_file(model_dir)
    reader = CheckpointReader(model_dir, config)
    names = sorted(n for n in reader.shapes if blocks is None or n.split(".", 1)[0] in blocks)
    dtype = weight_dtype or default_weight_dtype(reader.n_params)
    # what is read, from what, into what; the compute dtype is the caller's to say (the modules
    # compute in float32 until a backend sets another)
    held = "float32" if dtype == torch.float32 else f"{str(dtype).replace('torch.', '')} (the codec into float32)"
    if blocks is None:
        log.info("loading %s: %s, read into %s", reader.path, reader.describe(), held)
    else:  # one block of several a caller reads in turn (validation): said once by that caller
        log.debug("loading %s of %s, read into %s", ", ".join(blocks), reader.path, held)
    model = build_on_meta(config)
    for name in steps(names, desc="loading weights", unit="tensor", disable=not progress):
        # the codec is small: always float32; backbone and flow weights in `dtype`
        target = torch.float32 if name.startswith(CODEC_PREFIX) else dtype
        raw = target == torch.bfloat16 and reader.is_plain(name)
        set_tensor(model, name, to_torch(reader.read(name, raw_bf16=raw), target))
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
                if t.is_meta and (blocks is None or n.split(".", 1)[0] in blocks)]
    if leftover:  # cannot happen after validation; a guard against a module/key-map mismatch
        raise CheckpointError(f"{reader.path}: no tensor for {', '.join(leftover[:8])}")
    return model.eval().requires_grad_(False)


def random_model(config: ModelConfig, weight_dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu",
                 seed: int = 0) -> VoxtralModel:
    """The model with random weights made directly on ``device`` (no checkpoint is read): for
    benchmarks of the full size on a GPU, where the cost of a step does not depend on the values.
    Matrices are N(0, 1/fan_in), norms 1, LayerScales 0.1; the codec is float32."""
    model = build_on_meta(config)
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not tensor.is_meta:
            continue
        dtype = torch.float32 if name.startswith(CODEC_PREFIX) else weight_dtype
        if tensor.dim() == 1:
            value = torch.full(tensor.shape, 0.1 if name.endswith("_scale") else 1.0, dtype=dtype, device=device)
        else:
            value = torch.randn(tensor.shape, generator=generator, device=device)
            value = value.mul_(tensor[0].numel() ** -0.5).to(dtype)
        set_tensor(model, name, value)
    return model.to(device).eval().requires_grad_(False)
