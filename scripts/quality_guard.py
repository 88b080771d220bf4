"""Quality guard for quantised engines, without real weights.

    python scripts/quality_guard.py MODEL_DIR --reference FP32_ENGINE --engine INT8_ENGINE [--engine ...]
                                    [--torch-bf16] [--frames 50] [--layers 0,12,25]

1. Per layer, per component: for the matmul weights of a few backbone layers and of every flow
   layer, the relative error ‖x·Ŵᵀ − x·Wᵀ‖ / ‖x·Wᵀ‖ of each precision's matmul — run by ONNX
   Runtime's own kernel (``MatMulNBits``, int8 compute) on Gaussian inputs, for the layers that
   precision quantises (``int8-backbone``: the backbone's only; the flow head stays float32) — next
   to the error of computing the same matmul in BF16 (inputs and weights rounded to BF16, float32
   accumulation: how the reference serves the released BF16 model, and the torch backend's bf16
   path). The guard: a precision's median ratio to BF16 over its quantised layers ≤ 2 — a project
   choice, not a published criterion (published practice calls int8 block-32 weights with int8
   activations, llama.cpp's Q8_0 — this int8 — near-lossless).
2. End to end, teacher-forced: the float32 engine generates ``--frames`` frames; each quantised
   engine (and with ``--torch-bf16`` the torch backend computing in bf16) is fed the same prompt,
   noise and float32 codes, and the share of its codes that equal the float32 codes is reported
   (semantic and acoustic separately), with the hidden-state error.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voxtral_tts.checkpoint import CheckpointReader  # noqa: E402
from voxtral_tts.config import ModelConfig  # noqa: E402
from voxtral_tts.export.quantize import BITS, graph_precision  # noqa: E402
from voxtral_tts.tensors import bf16_to_float32, float32_to_bf16  # noqa: E402

MATRICES = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
            "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


def bf16(x: np.ndarray) -> np.ndarray:
    return bf16_to_float32(float32_to_bf16(x))


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def component(name: str) -> str:
    """The graph a checkpoint weight belongs to."""
    return "backbone" if name.startswith("backbone.") else "flow_frame"


def layer_errors(reader: CheckpointReader, names: list[str], precisions: list[str], rows: int = 16) -> dict:
    """Per weight: the BF16 error and each precision's, where that precision quantises the weight."""
    rng = np.random.default_rng(0)
    out = {}
    for name in names:
        weight = reader.read(name)  # [N, K]
        x = rng.standard_normal((rows, weight.shape[1]), dtype=np.float32)
        exact = x.astype(np.float64) @ weight.T.astype(np.float64)
        errors = {"bf16": relative(bf16(x) @ bf16(weight).T, exact)}
        quantised = [p for p in precisions if graph_precision(p, component(name)) in BITS]
        for precision in quantised:
            session = _session_for(weight, BITS[graph_precision(precision, component(name))])
            errors[precision] = relative(session.run(None, {"A": x})[0], exact)
        precisions_here = quantised
        out[name] = errors
        print(f"  {name:58s} bf16 {errors['bf16']:.2e}  " +
              "  ".join(f"{p} {errors[p]:.2e} (×{errors[p] / errors['bf16']:.1f})" for p in precisions_here))
    return out


def _session_for(weight: np.ndarray, bits: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from voxtral_tts.export.quantize import ACCURACY_LEVEL, BLOCK_SIZE, quantize_blocks

    n, k = weight.shape
    packed, scales = quantize_blocks(weight, bits)
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=BLOCK_SIZE, accuracy_level=ACCURACY_LEVEL)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
                              [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales.reshape(-1), "S")])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def teacher_forced(path: Path, embeds: np.ndarray, noise: np.ndarray, forced: np.ndarray | None, **options):
    """Codes and hidden states of each frame; with ``forced`` codes, those are fed back instead.
    ``path``: an engine, or a model directory with ``options`` (``backend="torch", dtype="bf16"``)."""
    import voxtral_tts
    from voxtral_tts.testing import flow_one, step_one

    tts = voxtral_tts.load(path, **options)
    model = tts.backend
    hidden = model.prefill(embeds)
    codes, hiddens = [], []
    for n in range(noise.shape[0]):
        hiddens.append(hidden)
        frame = flow_one(model, hidden, noise[n])
        codes.append(frame)
        feed = forced[n] if forced is not None else frame.copy()
        feed[0] = max(int(feed[0]), 2)  # random weights may say END_AUDIO: keep a fixed frame count
        hidden = step_one(model, model.embed_codes(feed), embeds.shape[0] + n)
    del tts, model
    gc.collect()
    return np.stack(codes), np.stack(hiddens)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--reference", type=Path, required=True, help="the float32 engine of MODEL")
    p.add_argument("--engine", type=Path, action="append", default=[], help="a quantised engine (repeatable)")
    p.add_argument("--torch-bf16", action="store_true",
                   help="also the torch backend's bf16 compute on MODEL (the guard's own baseline, end to end)")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--layers", default="0,12,25", help="backbone layers whose matmuls are measured")
    args = p.parse_args()

    import json

    import voxtral_tts

    precisions = [json.loads((e / "manifest.json").read_text())["precision"] for e in args.engine]
    config = ModelConfig.from_file(args.model)
    reader = CheckpointReader(args.model, config)
    layers = [int(i) for i in args.layers.split(",") if int(i) < config.backbone.n_layers]
    names = [f"backbone.layers.{i}.{m}.weight" for i in layers for m in MATRICES]
    names += [f"acoustic_transformer.layers.{j}.{m}.weight" for j in range(config.flow.n_layers) for m in MATRICES]
    print("per-layer matmul error (relative Frobenius norm, Gaussian inputs; × = ratio to BF16):")
    errors = layer_errors(reader, names, [p for p in precisions if p != "fp32"])
    print("\nper component, median ratio to BF16 of the quantised matmuls (float32 where not quantised):")
    for precision in precisions:
        parts = []
        for part in ("backbone", "flow_frame"):
            quantised = [e for n, e in errors.items() if component(n) == part and precision in e]
            if not quantised:
                parts.append(f"{part} float32")
                continue
            error, ratio = (
                np.median([e[precision] for e in quantised]),
                np.median([e[precision] / e["bf16"] for e in quantised]),
            )
            parts.append(f"{part} {error:.1e} (×{ratio:.1f} of BF16)")
        print(f"  {precision}: " + ", ".join(parts))

    tts = voxtral_tts.load(args.reference)
    _, embeds = tts.prompt("The quick brown fox jumps over the lazy dog.", tts.voice_bank.get(None))
    del tts
    noise = np.random.default_rng(0).standard_normal((args.frames, config.audio.n_acoustic_codebook)).astype(np.float32)
    ref_codes, ref_hidden = teacher_forced(args.reference, embeds, noise, None)
    print(f"\nteacher-forced code agreement with float32 over {args.frames} frames:")
    verdicts = []
    runs = [(engine, precision, {}) for engine, precision in zip(args.engine, precisions)]
    if args.torch_bf16:
        runs.append((args.model, "bf16", {"backend": "torch", "dtype": "bf16", "progress": False}))
    for engine, precision, options in runs:
        codes, hidden = teacher_forced(engine, embeds, noise, ref_codes, **options)
        semantic = float((codes[:, 0] == ref_codes[:, 0]).mean())
        acoustic = float((codes[:, 1:] == ref_codes[:, 1:]).mean())
        ratios = [e[precision] / e["bf16"] for e in errors.values() if precision in e]
        median = float(np.median(ratios)) if ratios else None
        ok = median is None or median <= 2.0
        verdicts.append(ok)
        guard = ("the BF16 baseline" if precision == "bf16" else "float weights") if median is None \
            else f"per-layer median ×{median:.1f} of BF16"
        print(f"  {precision}: semantic {semantic:.0%}, acoustic {acoustic:.1%}, hidden error "
              f"{relative(hidden, ref_hidden):.2e}; {guard} → {'PASS' if ok else 'FAIL'} (limit ×2)")
    sys.exit(0 if all(verdicts) else 1)


if __name__ == "__main__":
    main()
