"""The exported graphs: thin wrappers that call the reference modules (the math is written once).

Each wrapper holds its block under the reference model's attribute name, so graph initializers
carry the reference model's tensor names and are filled from the checkpoint by those names.

- ``backbone``: embeds [B, L, D] at positions [B, L], past keys/values per layer [P, B, Hkv, hd]
  (position-major) of which sequence b sees the first ``past_lengths[b]`` → hidden [B, L, D],
  present_k / present_v [n_layers, L, B, Hkv, hd]. The KV cache is preallocated by the runtime;
  the graph reads the filled prefix and returns the new rows, which the runtime writes in place
  at their positions (no growth by concatenation, no ``If``). Prefill is P = 0, L = prompt; a
  decode step is L = 1 for a batch of sequences at their own positions — one graph, two profiles.
- ``flow_frame``: hidden [B, D], noise [B, 36], semantic_noise [B, 8320], guidance [B, 2] → codes
  [B, 37] (masked argmax of the semantic logits + semantic_noise — zeros: the reference's greedy
  code, temperature × Gumbel noise: a sample —, 7 unrolled Euler steps with the CFG pair batched,
  each row guided by its weights (α, 1 − α) — :mod:`voxtral_tts.runtime.guidance` —, FSQ).
- ``flow_velocity`` (for tests): x [B, 36], t [B], hidden [B, D] → velocity [B, 36].
- ``codec``: codes [B, T, 37] → waveform [B, T·1920]; the runtime feeds it chunks with left context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.export import Dim

from ..config import ModelConfig
from ..model.kv import PastInputs, StaticCache
from ..model.loading import VoxtralModel
from ..runtime.constants import MAX_BATCH


class BackboneGraph(nn.Module):
    def __init__(self, model: VoxtralModel):
        super().__init__()
        self.backbone = model.backbone

    def forward(self, embeds, positions, past_lengths, *past):
        kv = PastInputs(list(zip(past[0::2], past[1::2])), past_lengths)
        hidden = self.backbone(embeds, positions, kv=kv)
        return (hidden, *kv.present())


class CachedBackboneGraph(nn.Module):
    """The backbone over a static cache of its own (batch 1, every position read): the module
    traced for Core ML, whose cache buffers become the package's states."""

    def __init__(self, model: VoxtralModel, capacity: int, dtype: torch.dtype = torch.float16):
        super().__init__()
        self.backbone = model.backbone
        self.cache = StaticCache.for_backbone(model.backbone, 1, capacity, dtype)

    def forward(self, embeds, positions):
        return self.backbone(embeds, positions, kv=self.cache)


class FlowFrameGraph(nn.Module):
    def __init__(self, model: VoxtralModel):
        super().__init__()
        self.acoustic_transformer = model.acoustic_transformer

    def forward(self, hidden, noise, semantic_noise, guidance):
        return self.acoustic_transformer(hidden, noise, semantic_noise, guidance)


class FlowVelocityGraph(nn.Module):
    def __init__(self, model: VoxtralModel):
        super().__init__()
        self.acoustic_transformer = model.acoustic_transformer

    def forward(self, x, t, hidden):
        flow = self.acoustic_transformer
        return flow.velocity(x, flow.time_token(t), flow.llm_projection(hidden))


class CodecGraph(nn.Module):
    def __init__(self, model: VoxtralModel):
        super().__init__()
        self.audio_tokenizer = model.audio_tokenizer

    def forward(self, codes):
        return self.audio_tokenizer(codes)


@dataclass(frozen=True)
class GraphDef:
    name: str
    build: Callable[[VoxtralModel], nn.Module]
    inputs: list[tuple[str, torch.dtype, tuple]]  # name, dtype, example shape (with symbolic dims named)
    outputs: list[str]
    dims: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name → (example, min, max)
    varargs_from: int | None = None  # inputs from this index are the forward's *args

    def example_inputs(self, device: str = "meta") -> tuple[torch.Tensor, ...]:
        def size(d):
            return self.dims[d][0] if isinstance(d, str) else d

        return tuple(
            torch.zeros([size(d) for d in shape], dtype=dtype, device=device) for _, dtype, shape in self.inputs
        )

    def dynamic_shapes(self) -> tuple[dict[int, Dim], ...]:
        dims = {name: Dim(name, min=lo, max=hi) for name, (_, lo, hi) in self.dims.items()}
        specs = [{i: dims[d] for i, d in enumerate(shape) if isinstance(d, str)} for _, _, shape in self.inputs]
        if self.varargs_from is not None:
            specs = specs[: self.varargs_from] + [tuple(specs[self.varargs_from :])]
        return tuple(specs)

    def io_spec(self) -> dict[str, list[dict]]:
        def dtype_name(dtype):
            return {torch.float32: "float32", torch.int64: "int64"}[dtype]

        return {"inputs": [{"name": n, "dtype": dtype_name(t), "shape": list(s)} for n, t, s in self.inputs],
                "outputs": list(self.outputs)}


def graph_defs(config: ModelConfig, capacity: int, with_velocity: bool = False) -> list[GraphDef]:
    b, a = config.backbone, config.audio
    kv = (b.n_kv_heads, b.head_dim)
    past = []
    for i in range(b.n_layers):
        past += [
            (f"past_k.{i}", torch.float32, ("past", "batch", *kv)),
            (f"past_v.{i}", torch.float32, ("past", "batch", *kv)),
        ]
    # example sizes avoid 0 and 1, which torch.export would specialise; the graphs accept them
    defs = [
        GraphDef(
            "backbone", BackboneGraph,
            [("embeds", torch.float32, ("batch", "length", b.dim)), ("positions", torch.int64, ("batch", "length")),
             ("past_lengths", torch.int64, ("batch",))] + past,
            ["hidden", "present_k", "present_v"],
            {"batch": (2, 1, MAX_BATCH), "length": (3, 1, capacity), "past": (4, 0, capacity)}, varargs_from=3,
        ),
        GraphDef(
            "flow_frame", FlowFrameGraph,
            [("hidden", torch.float32, ("batch", b.dim)), ("noise", torch.float32, ("batch", a.n_acoustic_codebook)),
             ("semantic_noise", torch.float32, ("batch", a.semantic_head_rows)),
             ("guidance", torch.float32, ("batch", 2))],
            ["codes"], {"batch": (2, 1, MAX_BATCH)},
        ),
        GraphDef(
            "codec", CodecGraph, [("codes", torch.int64, ("batch", "frames", a.num_codebooks))], ["audio"],
            {"batch": (2, 1, MAX_BATCH), "frames": (4, 1, 4096)},
        ),
    ]
    if with_velocity:
        defs.append(GraphDef(
            "flow_velocity", FlowVelocityGraph,
            [("x", torch.float32, ("batch", a.n_acoustic_codebook)), ("t", torch.float32, ("batch",)),
             ("hidden", torch.float32, ("batch", b.dim))],
            ["velocity"], {"batch": (2, 1, MAX_BATCH)},
        ))
    return defs
