"""The KV-cache layout every engine backend shares: [n_layers, capacity, slots, Hkv, hd], position-major.

Pure arithmetic, no device and no library: byte offsets (from the cache's base address) of a
layer's filled prefix and of one row (layer, position, slot), and the 2-D copies that store a
graph's new keys/values (``present_k`` / ``present_v``) at their positions. The copies are
executed with numpy on the host (ONNX Runtime CPU), as contiguous runs on a device-resident ONNX
Runtime cache, and with ``cudaMemcpy2DAsync`` by the TensorRT backend.

Position-major is what makes the prefix of a layer, ``cache[l, :P]`` = [P, slots, Hkv, hd],
contiguous for every P: a graph's ``past_*`` input is bound at ``offset(l)`` with shape
``prefix_shape(P)``, by pointer, and the address does not change as P grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...config import ModelConfig
from ...errors import VoxtralError


@dataclass(frozen=True)
class Copy2D:
    """``height`` rows of ``width`` bytes, row i from ``src + i·src_pitch`` to ``dst + i·dst_pitch``:
    the arguments of ``cudaMemcpy2D``, as offsets from the two buffers' base addresses."""

    dst: int
    dst_pitch: int
    src: int
    src_pitch: int
    width: int
    height: int

    @property
    def nbytes(self) -> int:
        return self.width * self.height

    def runs(self) -> list[tuple[int, int, int]]:
        """The same copy as contiguous pieces (dst, src, nbytes): one when both sides are dense."""
        if self.dst_pitch == self.width and self.src_pitch == self.width:
            return [(self.dst, self.src, self.nbytes)]
        return [(self.dst + i * self.dst_pitch, self.src + i * self.src_pitch, self.width) for i in range(self.height)]

    def apply(self, dst: np.ndarray, src: np.ndarray) -> None:
        """Execute on host arrays (C-contiguous; offsets are bytes from their first element)."""
        self._rows(dst)[...] = self._rows(src, source=True)

    def _rows(self, array: np.ndarray, source: bool = False) -> np.ndarray:
        if not array.flags.c_contiguous:
            raise VoxtralError("Copy2D.apply needs C-contiguous arrays")
        start, pitch = (self.src, self.src_pitch) if source else (self.dst, self.dst_pitch)
        flat = array.reshape(-1).view(np.uint8)
        if start < 0 or start + (self.height - 1) * pitch + self.width > flat.size:
            raise VoxtralError(f"copy of {self.height}×{self.width} bytes at {start} overruns a "
                               f"{flat.size}-byte buffer")
        return np.lib.stride_tricks.as_strided(flat[start:], shape=(self.height, self.width), strides=(pitch, 1),
                                               writeable=not source)


@dataclass(frozen=True)
class KVLayout:
    """One of the two caches (keys or values): [n_layers, capacity, slots, n_kv_heads, head_dim]."""

    n_layers: int
    capacity: int
    slots: int
    n_kv_heads: int
    head_dim: int
    itemsize: int = 4  # float32

    @classmethod
    def for_config(cls, config: ModelConfig, capacity: int, slots: int, itemsize: int = 4) -> "KVLayout":
        b = config.backbone
        return cls(b.n_layers, int(capacity), int(slots), b.n_kv_heads, b.head_dim, itemsize)

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.n_layers, self.capacity, self.slots, self.n_kv_heads, self.head_dim)

    @property
    def row_shape(self) -> tuple[int, int]:
        return (self.n_kv_heads, self.head_dim)

    @property
    def row_bytes(self) -> int:
        """One (layer, position, slot) row: n_kv_heads · head_dim values."""
        return self.n_kv_heads * self.head_dim * self.itemsize

    @property
    def position_stride(self) -> int:
        return self.slots * self.row_bytes

    @property
    def layer_stride(self) -> int:
        return self.capacity * self.position_stride

    @property
    def nbytes(self) -> int:
        return self.n_layers * self.layer_stride

    def offset(self, layer: int, position: int = 0, slot: int = 0) -> int:
        """Byte offset of ``cache[layer, position, slot]`` from the cache's base address."""
        if not (0 <= layer < self.n_layers and 0 <= position < self.capacity and 0 <= slot < self.slots):
            raise VoxtralError(f"KV row (layer {layer}, position {position}, slot {slot}) is outside the cache "
                               f"({self.n_layers} layers, {self.capacity} positions, {self.slots} slots)")
        return layer * self.layer_stride + position * self.position_stride + slot * self.row_bytes

    def prefix_shape(self, length: int) -> tuple[int, int, int, int]:
        """Shape of ``cache[l, :length]``, a graph's ``past_*`` input."""
        if not 0 <= length <= self.capacity:
            raise VoxtralError(f"a prefix of {length} positions does not fit the KV cache ({self.capacity} positions)")
        return (length, self.slots, self.n_kv_heads, self.head_dim)

    def prefix(self, layer: int, length: int) -> tuple[int, tuple[int, int, int, int]]:
        """(byte offset, shape) of layer ``layer``'s first ``length`` positions: contiguous."""
        return self.offset(layer), self.prefix_shape(length)

    def present_shape(self, length: int, batch: int) -> tuple[int, int, int, int, int]:
        """Shape of the graph's ``present_k`` / ``present_v`` output for ``length`` new positions."""
        return (self.n_layers, length, batch, self.n_kv_heads, self.head_dim)

    def rows_copies(self, slot: int, start: int, length: int, src_length: int, src_batch: int = 1,
                    src_index: int = 0) -> list[Copy2D]:
        """Rows 0..length−1 of sequence ``src_index`` of a [n_layers, src_length, src_batch, …]
        buffer (a graph's ``present_*``, a prompt prefix) → ``cache[:, start:start+length, slot]``
        (one copy per layer)."""
        if not (1 <= length <= src_length and 0 <= start and start + length <= self.capacity
                and 0 <= src_index < src_batch):
            raise VoxtralError(f"{length} positions from position {start} (row {src_index} of a {src_length}×"
                               f"{src_batch} source) does not fit the KV cache ({self.capacity} positions)")
        row = self.row_bytes
        return [Copy2D(self.offset(layer, start, slot), self.position_stride,
                       (layer * src_length * src_batch + src_index) * row, src_batch * row, row, length)
                for layer in range(self.n_layers)]

    def step_copies(self, positions: Sequence[int], slots: Sequence[int]) -> list[Copy2D]:
        """Store a decode step of every slot: present [n_layers, 1, slots, …] → for each (position p,
        slot s) ``cache[:, p, s]`` (one copy per sequence, a row per layer)."""
        positions, slots = [int(p) for p in positions], [int(s) for s in slots]
        if len(positions) != len(slots):
            raise VoxtralError(f"{len(positions)} positions for {len(slots)} slots")
        if len(set(slots)) != len(slots):
            raise VoxtralError(f"a slot appears twice in one step: {slots}")
        row = self.row_bytes
        return [Copy2D(self.offset(0, p, s), self.layer_stride, s * row, self.slots * row, row, self.n_layers)
                for p, s in zip(positions, slots)]
