"""What attention attends over: the keys/values of a forward, owned by the caller (not the modules).

The backbone's layers hold no cache. ``Backbone.forward(embeds, positions, kv)`` calls
``kv.begin(positions)`` once — masks are computed there, from the positions, once for every layer —
and gets one view per layer; layer i's attention hands its new keys/values [B, Hkv, L, hd] to
``views[i].blocks(k, v)`` and attends over the ``(k, v, mask)`` blocks it returns (one softmax over
all of them, :func:`.layers.attend`).

- ``kv=None``: causal attention within the given tokens (:class:`Causal`).
- :class:`StaticCache`: per-layer buffers written in place at the positions (gpt-fast style: fixed
  addresses for CUDA graphs, Core ML states); attends over the cache prefix.
- :class:`PastInputs`: past keys/values given as inputs (the exported graph's form); attends over
  them and the new tokens without concatenating, and collects the new keys/values to return.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import nn

#: keys, values [B, Hkv, S, hd] and a mask: None, bool [L, S] or [B, L, S] (True = attend)
Block = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


class LayerKV(Protocol):
    def blocks(self, k: torch.Tensor, v: torch.Tensor) -> list[Block]:
        """One layer's new keys/values [B, Hkv, L, hd] → the blocks its queries attend over."""


class KV(Protocol):
    def begin(self, positions: torch.Tensor) -> Sequence[LayerKV]:
        """Once per forward, the tokens' absolute ``positions`` ([L], or [B, L] per sequence) →
        one view per layer."""


class Causal:
    """No cache: each token attends to the given tokens at positions up to its own."""

    def __init__(self, positions: torch.Tensor):
        self.mask = positions[..., None, :] <= positions[..., :, None]  # [L, L] or [B, L, L]

    def blocks(self, k: torch.Tensor, v: torch.Tensor) -> list[Block]:
        return [(k, v, self.mask)]


class LayerCache(nn.Module):
    """One layer's static keys and values [slots, n_kv_heads, capacity, head_dim]."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device=None):
        super().__init__()
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)


class StaticCache(nn.Module):
    """A static cache written in place at the given positions (gpt-fast style): exportable and
    graph-capturable, no growth by concatenation. One slot per sequence decoded together.

    Used directly as ``kv``, every slot is at the same positions [L] and the whole capacity is read
    (the Core ML form). :meth:`window` bounds the positions read (``kv_len``) and, for positions
    [B, L], names the slot of each row (``slots``)."""

    def __init__(self, n_layers: int, slots: int, n_kv_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        shape = (slots, n_kv_heads, capacity, head_dim)
        self.layers = nn.ModuleList(LayerCache(shape, dtype, device) for _ in range(n_layers))

    @classmethod
    def for_backbone(cls, backbone, slots: int, capacity: int, dtype: torch.dtype = torch.float32) -> "StaticCache":
        """A cache shaped for ``backbone``'s layers, on its device."""
        a = backbone.args
        return cls(a.n_layers, slots, a.n_kv_heads, capacity, a.head_dim, dtype, backbone.norm.weight.device)

    @property
    def capacity(self) -> int:
        return self.layers[0].k.shape[2]

    @property
    def slots(self) -> int:
        return self.layers[0].k.shape[0]

    def window(self, kv_len: int | None = None, slots: torch.Tensor | slice | None = None) -> "CacheWindow":
        return CacheWindow(self, kv_len, slots)

    def begin(self, positions: torch.Tensor) -> list["CachedLayer"]:
        return self.window().begin(positions)


class CacheWindow:
    """One call's use of a :class:`StaticCache`.

    - positions [L]: every slot at the same positions (``index_copy_``, which Core ML converts to
      a state update); the keys/values of the call are [slots, Hkv, L, hd].
    - positions [B, L]: row b is the sequence in slot ``slots[b]`` (a tensor [B], or a slice: rows
      0..B−1 in slots 0..B−1, the default) at its own positions — sequences of different lengths in
      one call.

    Queries attend to cache positions ``j <= position`` among the first ``kv_len`` (default: the
    capacity); positions beyond it are not read."""

    def __init__(self, cache: StaticCache, kv_len: int | None = None, slots: torch.Tensor | slice | None = None):
        self.cache, self.kv_len, self.slots = cache, kv_len, slots

    def begin(self, positions: torch.Tensor) -> list["CachedLayer"]:
        n = self.kv_len if self.kv_len is not None else self.cache.capacity
        if positions.dim() == 1:
            mask = torch.arange(n, device=positions.device)[None, :] <= positions[:, None]
            slots = index = None
        else:
            slots = self.slots if self.slots is not None else slice(0, positions.shape[0])
            mask = torch.arange(n, device=positions.device)[None, None, :] <= positions[:, :, None]
            index = (torch.arange(slots.start or 0, slots.stop, device=positions.device)
                     if isinstance(slots, slice) else slots)
        return [CachedLayer(layer.k, layer.v, positions, mask, index, self.kv_len, slots)
                for layer in self.cache.layers]


class CachedLayer:
    """A layer's cache buffers in one call (the buffers themselves, no layer index: one compiled
    block serves every layer)."""

    def __init__(self, k_cache, v_cache, positions, mask, index, kv_len, slots):
        self.k_cache, self.v_cache, self.positions, self.mask = k_cache, v_cache, positions, mask
        self.index, self.kv_len, self.slots = index, kv_len, slots

    def blocks(self, k: torch.Tensor, v: torch.Tensor) -> list[Block]:
        kc, vc = self.k_cache, self.v_cache
        if self.index is None:  # every slot at the same positions
            kc.index_copy_(2, self.positions, k.to(kc.dtype))
            vc.index_copy_(2, self.positions, v.to(vc.dtype))
            if self.kv_len is not None:
                kc, vc = kc[:, :, : self.kv_len], vc[:, :, : self.kv_len]
            return [(kc, vc, self.mask)]
        # row b into slot index[b] at its own positions[b]; read back a view when slots is a slice
        # (the graph-captured decode step: rows 0..B−1 are slots 0..B−1), else a gather
        kc[self.index[:, None], :, self.positions] = k.transpose(1, 2).to(kc.dtype)
        vc[self.index[:, None], :, self.positions] = v.transpose(1, 2).to(vc.dtype)
        return [(kc[self.slots, :, : self.kv_len], vc[self.slots, :, : self.kv_len], self.mask)]


class PastInputs:
    """Past keys/values given per layer [P, B, Hkv, hd] (position-major), of which sequence b sees
    the first ``past_lengths[b]``; positions [B, L]. The new tokens attend over the visible past and
    causally over themselves, in one softmax without concatenation; their keys/values are
    collected for the caller to store (:meth:`present`: [n_layers, L, B, Hkv, hd])."""

    def __init__(self, past: Sequence[tuple[torch.Tensor, torch.Tensor]], past_lengths: torch.Tensor):
        self.past, self.past_lengths = list(past), past_lengths
        self.new_k: list[torch.Tensor] = []
        self.new_v: list[torch.Tensor] = []

    def begin(self, positions: torch.Tensor) -> list["PastLayer"]:
        L = positions.shape[1]
        index = torch.arange(self.past[0][0].shape[0], device=positions.device)
        past_mask = (index[None, :] < self.past_lengths[:, None])[:, None, :].expand(-1, L, -1)
        causal = torch.ones(L, L, dtype=torch.bool, device=positions.device).tril()
        return [PastLayer(self, k, v, past_mask, causal) for k, v in self.past]

    def present(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack(self.new_k), torch.stack(self.new_v)


class PastLayer:
    def __init__(self, owner: PastInputs, past_k, past_v, past_mask, causal):
        self.owner, self.past_k, self.past_v, self.past_mask, self.causal = owner, past_k, past_v, past_mask, causal

    def blocks(self, k: torch.Tensor, v: torch.Tensor) -> list[Block]:
        self.owner.new_k.append(k.permute(2, 0, 1, 3))
        self.owner.new_v.append(v.permute(2, 0, 1, 3))
        past = (self.past_k.permute(1, 2, 0, 3), self.past_v.permute(1, 2, 0, 3), self.past_mask)
        return [past, (k, v, self.causal)]
