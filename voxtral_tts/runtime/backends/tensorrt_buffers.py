"""The TensorRT backend's device memory, planned before anything is allocated: every buffer
(:func:`buffer_plan`) and every graph tensor's place in one (:func:`backbone_bindings`,
:func:`flow_bindings`, :func:`codec_bindings`). Pure arithmetic on shapes, no library.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...config import ModelConfig
from ..constants import CODEC_FRAMES
from .kv_layout import KVLayout


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
        DeviceBuffer("kv.scratch", (capacity, slots, *layout.row_shape), f32),  # one layer, for re-layouts
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
        DeviceBuffer("flow.guidance", (slots, 2), f32),
        DeviceBuffer("flow.codes", (slots, a.num_codebooks), i64),
        DeviceBuffer("codec.codes", (1, codec_frames, a.num_codebooks), i64),
        DeviceBuffer("codec.audio", (1, codec_frames * config.samples_per_frame), f32),
    ]


def backbone_bindings(layout: KVLayout, dim: int, bucket: int | None = None,
                      rows: int | None = None) -> list[TensorBinding]:
    """The backbone's tensors: prefill (``bucket`` None, shapes at their maximum) or the decode
    step of one past bucket at ``rows`` sequences (default: every slot), whose ``past_*`` inputs
    are the cache prefixes of the cache laid out ``rows`` wide (:mod:`.kv_slots`)."""
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
    slots = layout.slots if rows is None else rows
    layout = replace(layout, slots=slots)
    return [
        TensorBinding("embeds", "step.embeds", 0, (slots, 1, dim)),
        TensorBinding("positions", "step.positions", 0, (slots, 1)),
        TensorBinding("past_lengths", "step.past_lengths", 0, (slots,)),
        *[TensorBinding(name, f"kv.{kind}", *layout.prefix(i, bucket)) for name, kind, i in pasts],
        TensorBinding("hidden", "step.hidden", 0, (slots, 1, dim)),
        TensorBinding("present_k", "step.present_k", 0, layout.present_shape(1, slots)),
        TensorBinding("present_v", "step.present_v", 0, layout.present_shape(1, slots)),
    ]


def flow_bindings(config: ModelConfig, slots: int, guidance: bool = True) -> list[TensorBinding]:
    """The flow frame's tensors at ``slots`` rows; ``guidance``: whether its graph takes the
    guidance weights (False: a format-3 engine, its scale built in)."""
    a = config.audio
    return [TensorBinding("hidden", "flow.hidden", 0, (slots, config.backbone.dim)),
            TensorBinding("noise", "flow.noise", 0, (slots, a.n_acoustic_codebook)),
            TensorBinding("semantic_noise", "flow.semantic_noise", 0, (slots, a.semantic_head_rows)),
            *([TensorBinding("guidance", "flow.guidance", 0, (slots, 2))] if guidance else []),
            TensorBinding("codes", "flow.codes", 0, (slots, a.num_codebooks))]


def codec_bindings(config: ModelConfig, frames: int = CODEC_FRAMES) -> list[TensorBinding]:
    return [TensorBinding("codes", "codec.codes", 0, (1, frames, config.audio.num_codebooks)),
            TensorBinding("audio", "codec.audio", 0, (1, frames * config.samples_per_frame))]
