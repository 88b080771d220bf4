"""Check every exported graph against the PyTorch reference on random inputs (``--check``).

Each graph runs in ONNX Runtime (CPU) next to the reference modules on the same inputs; the
largest error, absolute and relative to the reference's peak, is printed and recorded in the
manifest. Codes must match exactly; float outputs within ``tolerance`` of the peak.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..engine import MANIFEST
from ..errors import VoxtralError
from ..runtime.guidance import guidance_weights
from .quantize import graph_precision

log = logging.getLogger(__name__)

#: Largest error relative to the reference's peak, and the largest fraction of codes that may differ
#: (reduced precision moves some FSQ / argmax decisions that sit near a boundary on random inputs).
TOLERANCE = {"fp32": (1e-4, 0.0), "fp16": (2e-2, 0.1), "int8": (1e-1, 0.5), "int4": (3e-1, 0.9)}


def _error(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    diff = float(np.abs(actual.astype(np.float64) - expected).max())
    return {"max_abs": diff, "relative": diff / max(float(np.abs(expected).max()), 1e-30)}


def validate_engine(engine_dir: str | Path, model_dir: str | Path, manifest: dict | None = None,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    import onnxruntime as ort
    import torch

    from ..model.kv import StaticCache
    from ..model.loading import load_model

    engine_dir = Path(engine_dir)
    if manifest is None:
        manifest = json.loads((engine_dir / MANIFEST).read_text())
    precision = manifest["precision"]

    def limits(label: str) -> tuple[float, float]:
        """(float tolerance, code tolerance) of the graph a record is about ("backbone …", …)."""
        return TOLERANCE[graph_precision(precision, label.split()[0])]
    config = ModelConfig.from_file(model_dir)
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, float]] = {}

    def session(name: str):
        path = engine_dir / manifest["graphs"][name]["file"]
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def record(label: str, actual, expected, codes: bool = False):
        actual, expected = np.asarray(actual), np.asarray(expected)
        if codes:
            results[label] = {"mismatches": int((actual != expected).sum()), "count": int(actual.size)}
            print(f"  {label:24s} {results[label]['mismatches']} of {actual.size} codes differ")
        else:
            results[label] = _error(actual, expected)
            print(f"  {label:24s} max |Δ| {results[label]['max_abs']:.3e}  ({results[label]['relative']:.2e} of peak)")

    print(f"validating the {manifest['precision']} graphs of {engine_dir} against the PyTorch reference, computed "
          "in float32:")
    b = config.backbone
    # one block of the reference at a time, next to one graph: the full model fits a small machine
    with torch.inference_mode():
        model = load_model(model_dir, progress=False, blocks=("backbone",))
        # backbone: a prefill of 7 positions, then one decode step
        ids = torch.from_numpy(rng.integers(1000, b.vocab_size, size=7))
        embeds = model.backbone.embed_tokens(ids)[None]
        step = model.backbone.embed_codes(torch.tensor([[2 + int(rng.integers(8192))] + [12] * 36]))[None]
        cache = StaticCache.for_backbone(model.backbone, 1, 16)
        ref_prefill = model.backbone(embeds, torch.arange(7), kv=cache.window(kv_len=7))
        ref_k = cache.layers[-1].k[0, :, :7].transpose(0, 1).numpy().copy()
        ref_step = model.backbone(step, torch.tensor([7]), kv=cache.window(kv_len=8))
        # a shorter sequence, for the batch
        model.backbone(embeds[:, :4], torch.arange(4), kv=cache.window(kv_len=4))
        ref_short = model.backbone(step, torch.tensor([4]), kv=cache.window(kv_len=5))
        sess = session("backbone")
        empty = np.zeros((0, 1, b.n_kv_heads, b.head_dim), np.float32)
        feeds = {"embeds": embeds.numpy(), "positions": np.arange(7)[None], "past_lengths": np.array([0])}
        feeds.update({f"past_{kv}.{i}": empty for i in range(b.n_layers) for kv in "kv"})
        hidden, present_k, present_v = sess.run(None, feeds)
        record("backbone prefill hidden", hidden, ref_prefill.numpy())
        record("backbone prefill keys", present_k[-1, :, 0], ref_k)
        feeds = {"embeds": step.numpy(), "positions": np.array([[7]]), "past_lengths": np.array([7])}
        feeds.update({f"past_k.{i}": present_k[i] for i in range(b.n_layers)})
        feeds.update({f"past_v.{i}": present_v[i] for i in range(b.n_layers)})
        record("backbone decode step", sess.run(["hidden"], feeds)[0], ref_step.numpy())
        # a batch of two sequences at different positions (7 and 4) in one call
        feeds = {"embeds": np.concatenate([step.numpy()] * 2), "positions": np.array([[7], [4]]),
                 "past_lengths": np.array([7, 4])}
        feeds.update({f"past_{kv}.{i}": np.repeat(p[i], 2, axis=1)
                      for kv, p in (("k", present_k), ("v", present_v)) for i in range(b.n_layers)})
        batched = sess.run(["hidden"], feeds)[0]
        record("backbone batched step", batched, np.concatenate([ref_step.numpy(), ref_short.numpy()]))
        del sess, model
        gc.collect()

        # flow head: hidden states of the prefill (realistic scale) and fresh noise
        model = load_model(model_dir, progress=False, blocks=("acoustic_transformer",))
        hidden = ref_prefill[0, -4:]
        noise = torch.from_numpy(rng.standard_normal((4, config.audio.n_acoustic_codebook)).astype(np.float32))
        sess = session("flow_frame")
        zeros = np.zeros((4, config.audio.semantic_head_rows), np.float32)
        default = model.acoustic_transformer.guidance(4)
        feeds = {"hidden": hidden.numpy(), "noise": noise.numpy(), "semantic_noise": zeros,
                 "guidance": default.numpy()}
        codes = sess.run(None, feeds)[0]
        record("flow_frame codes", codes, model.acoustic_transformer(hidden, noise).numpy(), codes=True)
        # sampled at temperature 1: the same Gumbel noise through the graph and the reference
        gumbel = rng.gumbel(size=zeros.shape).astype(np.float32)
        codes = sess.run(None, {**feeds, "semantic_noise": gumbel})[0]
        reference = model.acoustic_transformer(hidden, noise, torch.from_numpy(gumbel)).numpy()
        record("flow_frame sampled codes", codes, reference, codes=True)
        # each row guided at its own scale (expressiveness), none the default
        guided = guidance_weights([1.0, 1.5, 2.0, 3.0])
        codes = sess.run(None, {**feeds, "guidance": guided})[0]
        reference = model.acoustic_transformer(hidden, noise, None, torch.from_numpy(guided)).numpy()
        record("flow_frame guided codes", codes, reference, codes=True)
        del sess
        if "flow_velocity" in manifest["graphs"]:
            flow = model.acoustic_transformer
            t = torch.tensor([0.0, 1 / 7, 3 / 7, 6 / 7])
            ref = flow.velocity(noise, flow.time_token(t), flow.llm_projection(hidden))
            sess = session("flow_velocity")
            out = sess.run(None, {"x": noise.numpy(), "t": t.numpy(), "hidden": hidden.numpy()})[0]
            record("flow_velocity", out, ref.numpy())
            del sess

        del model
        gc.collect()

        # codec: random valid codes
        model = load_model(model_dir, progress=False, blocks=("audio_tokenizer",))
        n = 12
        codes = np.concatenate(
            [
                rng.integers(2, 2 + config.audio.semantic_codebook_size, (1, n, 1)),
                rng.integers(2, 2 + config.audio.acoustic_codebook_size, (1, n, config.audio.n_acoustic_codebook)),
            ],
            axis=2,
        ).astype(np.int64)
        sess = session("codec")
        record(
            "codec waveform",
            sess.run(None, {"codes": codes})[0],
            model.audio_tokenizer(torch.from_numpy(codes)).numpy(),
        )
        del sess
    del model
    gc.collect()

    failed = [k for k, v in results.items()
              if v.get("mismatches", 0) > limits(k)[1] * v.get("count", 0) or v.get("relative", 0.0) > limits(k)[0]]
    if failed:
        raise VoxtralError(f"{engine_dir}: validation failed for "
                           + ", ".join(f"{k} (tolerance {limits(k)[0]:g} of peak)" for k in failed))
    print("  every graph within its precision's tolerance of the reference: "
          + ", ".join(f"{g} {graph_precision(precision, g)} {TOLERANCE[graph_precision(precision, g)][0]:g}"
                      for g in manifest["graphs"]))
    return results
