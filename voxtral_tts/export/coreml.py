"""Core ML target (``voxtral-export --target coreml``): three ML Program packages for macOS 15 / iOS 18.

The reference modules are traced with ``torch.jit.trace`` and converted by coremltools (the math
is written once, in :mod:`voxtral_tts.model`):

- ``backbone.mlpackage``: one stateful function for prefill and decode step. ``Backbone.forward``
  over a static fp16 cache of batch 1 that the traced wrapper owns (:class:`.graphs.CachedBackboneGraph`):
  embeds [1, L, D] float32 at positions [L] int32 → final-normed hidden [1, L, D]. Each layer's
  ``k``/``v`` buffer [1, Hkv, capacity, hd] (states ``cache_layers_{i}_k`` / ``_v``) is a Core ML
  state (float16: Core ML states must be), written in place at
  ``positions`` (``index_copy_`` → ``scatter`` + ``coreml_update_state``); queries attend to
  slots j <= position. L is flexible (``ct.RangeDim(1, capacity)``, shared by both inputs): a
  prefill is L = prompt length, a step L = 1, so no second function or package is needed
  (coremltools 9 converts states with a flexible length). Flexible shapes keep the backbone off
  the Neural Engine (GPU/CPU); positions are 1-D because a rank-0 index input is refused.
- ``flow_frame.mlpackage``: hidden [1, D] + noise [1, 36] + semantic_noise [1, 8320] + guidance [1, 2]
  float32 → codes [1, 37] int32 (+2 offset); semantic_noise is added to the masked semantic logits
  (zeros: greedy); guidance is the frame's weights (α, 1 − α) of the CFG pair (``expressiveness``).
- ``codec.mlpackage``: codes [1, 75, 37] int32 → audio [1, 75·1920]. 75 = the runtime's largest
  chunk (50 new + 25 context frames); the codec is causal, so a shorter chunk padded at the end
  with valid codes gives the same audio for its real frames, which the host keeps.

``fp16`` (default) computes in float16 except the RMSNorm statistics (x², mean, rsqrt) and
everything computed from ``positions`` alone (RoPE angles and tables, the attention mask), which
stay float32: positions above 2048 are not integers in float16. ``fp32`` computes in float32.

Validation: on any system the traced modules (what is converted) are run next to the eager
reference — prefill then a decode step at other lengths than the trace's, flow codes, the padded
codec chunk; Core ML prediction runs only on macOS 15+ and is skipped elsewhere with a logged reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..engine import MANIFEST
from ..errors import VoxtralError
from ..runtime.backends.coreml import coreml_unavailable
from ..runtime.codec import pad_codec_chunk
from ..runtime.constants import CODEC_FRAMES, DEFAULT_CAPACITY
from ..runtime.guidance import guidance_weights
from .engine_dir import start_engine_dir

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"
#: frames per codec call: the runtime's largest chunk
DEPLOYMENT_TARGET = "macOS15"
SPEC_VERSION = 9  # Core ML 8: macOS 15 / iOS 18, the first with states
GRAPHS = ("backbone", "flow_frame", "codec")


# --- tracing -----------------------------------------------------------------------------------------

def _register_index_copy() -> None:
    """Teach coremltools ``aten::index_copy`` (the static cache's in-place write) as a ``scatter``;
    its in-place form on a state buffer then becomes ``coreml_update_state``."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op
    from coremltools.converters.mil.mil.types import builtin_to_string

    if _TORCH_OPS_REGISTRY.get_func("index_copy") is not None:
        return

    def index_copy(context, node):
        x, dim, index, source = _get_inputs(context, node, expected=4)
        if source.dtype != x.dtype:  # the state is read as float32, the written rows may be float16
            source = mb.cast(x=source, dtype=builtin_to_string(x.dtype))
        context.add(mb.scatter(data=x, indices=index, updates=source, axis=dim.val, mode="update", name=node.name))

    register_torch_op(index_copy)


def trace_graphs(model, capacity: int) -> dict:
    """The three traced modules that are converted, ``{name: traced}``. The backbone wrapper owns a
    float16 static cache of ``capacity`` positions (batch 1); ``model`` is left unchanged."""
    import torch

    from .graphs import CachedBackboneGraph, CodecGraph, FlowFrameGraph

    config = model.config
    b, a = config.backbone, config.audio
    backbone = CachedBackboneGraph(model, capacity, torch.float16).eval()
    # a trace length that is neither 1 nor the capacity, so no size is frozen to either
    length = min(3, capacity)
    examples = {
        "backbone": (torch.zeros(1, length, b.dim), torch.arange(length)),
        "flow_frame": (
            torch.zeros(1, b.dim),
            torch.zeros(1, a.n_acoustic_codebook),
            torch.zeros(1, a.semantic_head_rows),
            model.acoustic_transformer.guidance(1),
        ),
        "codec": (torch.full((1, CODEC_FRAMES, a.num_codebooks), 2, dtype=torch.int64),),
    }
    modules = {"backbone": backbone, "flow_frame": FlowFrameGraph(model).eval(), "codec": CodecGraph(model).eval()}
    traced = {}
    with torch.no_grad(), warnings.catch_warnings():
        # the codec's one Python branch on a length is constant at its fixed 75-frame input
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.13 deprecates torch.jit.trace; coremltools' states are converted from it here
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        for name, module in modules.items():
            traced[name] = torch.jit.trace(module, examples[name], check_trace=False)
        reset_cache(traced["backbone"])
    return traced


def reset_cache(traced_backbone) -> None:
    """Zero the traced backbone's KV buffers (a trace or a validation run wrote into them)."""
    for name, buf in traced_backbone.named_buffers():
        if name.startswith("cache."):
            buf.zero_()


def _state_buffers(traced_backbone) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(buf.shape)) for name, buf in traced_backbone.named_buffers() if name.startswith("cache.")]


def _compute_precision(precision: str, fp32_inputs: tuple[str, ...] = ()):
    """Float16 everywhere except the RMSNorm statistics and what is computed from ``fp32_inputs``
    alone (see the module docstring); float32 for ``fp32``."""
    import coremltools as ct

    if precision == "fp32":
        return ct.precision.FLOAT32
    memo: dict[int, bool] = {}

    def float32_lineage(var) -> bool:
        """True when ``var`` derives only from constants, ``fp32_inputs`` and x² of a norm."""
        key = id(var)
        if key not in memo:
            op = var.op
            if op is None:
                memo[key] = var.name in fp32_inputs
            elif op.op_type == "pow":
                memo[key] = True
            else:
                memo[key] = all(float32_lineage(v) for v in _input_vars(op))
        return memo[key]

    def selector(op) -> bool:  # True: compute this op in float16
        return op.op_type != "pow" and not all(float32_lineage(v) for v in _input_vars(op))

    return ct.transform.FP16ComputePrecision(op_selector=selector)


def _input_vars(op) -> list:
    out = []
    for value in op.inputs.values():
        out.extend(value if isinstance(value, (list, tuple)) else [value])
    return out


def convert_graphs(traced: dict, config: ModelConfig, capacity: int, precision: str, out: Path,
                   progress: bool = True) -> dict[str, dict]:
    """Convert the traced modules to ``out/<name>.mlpackage``; returns each graph's manifest entry."""
    import coremltools as ct

    from ..reporting import steps

    _register_index_copy()
    b, a = config.backbone, config.audio
    length = ct.RangeDim(1, capacity, default=1, symbol="length")
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=shape, dtype=np.float16), name=name)
              for name, shape in _state_buffers(traced["backbone"])]
    specs = {
        "backbone": dict(inputs=[ct.TensorType("embeds", shape=(1, length, b.dim), dtype=np.float32),
                                 ct.TensorType("positions", shape=(length,), dtype=np.int32)],
                         outputs=[ct.TensorType("hidden", dtype=np.float32)], states=states,
                         compute_precision=_compute_precision(precision, ("positions",))),
        "flow_frame": dict(inputs=[ct.TensorType("hidden", shape=(1, b.dim), dtype=np.float32),
                                   ct.TensorType("noise", shape=(1, a.n_acoustic_codebook), dtype=np.float32),
                                   ct.TensorType("semantic_noise", shape=(1, a.semantic_head_rows), dtype=np.float32),
                                   ct.TensorType("guidance", shape=(1, 2), dtype=np.float32)],
                           outputs=[ct.TensorType("codes", dtype=np.int32)],
                           compute_precision=_compute_precision(precision)),
        "codec": dict(inputs=[ct.TensorType("codes", shape=(1, CODEC_FRAMES, a.num_codebooks), dtype=np.int32)],
                      outputs=[ct.TensorType("audio", dtype=np.float32)],
                      compute_precision=_compute_precision(precision)),
    }
    entries = {}
    for name in steps(GRAPHS, desc="converting to Core ML", unit="graph", disable=not progress):
        path = out / f"{name}.mlpackage"
        started = time.perf_counter()
        with _quiet_coremltools():
            mlmodel = ct.convert(traced[name], convert_to="mlprogram", skip_model_load=True,
                                 minimum_deployment_target=ct.target.macOS15, **specs[name])
        mlmodel.short_description = f"Voxtral-4B-TTS-2603 {name} ({precision}), voxtral-tts"
        if path.exists():
            shutil.rmtree(path)
        mlmodel.save(str(path))
        entries[name] = {"file": path.name, **package_io(mlmodel.get_spec())}
        log.info("%s written in %.1f s", path.name, time.perf_counter() - started)
    return entries


@contextlib.contextmanager
def _quiet_coremltools():
    """coremltools logs every op at INFO, draws nested progress bars and warns about expected
    things (int64 constants stored as int32, state inputs renamed, -inf masks cast to float16):
    only its errors (exceptions, ERROR logs) come through."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", module=r"coremltools\.")
            yield
    finally:
        logger.setLevel(level)


def package_io(spec) -> dict:
    """Inputs, outputs and states of a package's spec, as the manifest records them."""
    from coremltools.proto import FeatureTypes_pb2 as ft

    def array(feature_type) -> dict:
        arr = feature_type.multiArrayType
        dtype = ft.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()
        if arr.HasField("shapeRange"):
            shape = [[int(r.lowerBound), int(r.upperBound)] if r.lowerBound != r.upperBound else int(r.lowerBound)
                     for r in arr.shapeRange.sizeRanges]
        else:
            shape = [int(d) for d in arr.shape]
        return {"dtype": dtype, "shape": shape}

    desc = spec.description
    return {
        "inputs": [{"name": f.name, **array(f.type)} for f in desc.input],
        "outputs": [f.name for f in desc.output],
        "states": [{"name": s.name, "dtype": ft.ArrayFeatureType.ArrayDataType.Name(
            s.type.stateType.arrayType.dataType).lower(), "shape": [int(d) for d in s.type.stateType.arrayType.shape]}
                   for s in desc.state],
    }


# --- validation --------------------------------------------------------------------------------------

def _validation_inputs(model, rng: np.random.Generator, prompt: int = 7, codec_frames: int = 12) -> dict:
    """Realistic inputs (token rows of the checkpoint's table, a fed-back frame, random valid codes)."""
    import torch

    config = model.config
    a = config.audio
    with torch.no_grad():
        ids = torch.from_numpy(rng.integers(1000, config.backbone.vocab_size, size=prompt))
        frame = torch.tensor(
            [
                [2 + int(rng.integers(a.semantic_codebook_size))]
                + [2 + int(v) for v in rng.integers(a.acoustic_codebook_size, size=a.n_acoustic_codebook)]
            ]
        )
        embeds = torch.cat([model.backbone.embed_tokens(ids), model.backbone.embed_codes(frame)])[None]
    codes = np.concatenate([rng.integers(2, 2 + a.semantic_codebook_size, (1, codec_frames, 1)),
                            rng.integers(2, 2 + a.acoustic_codebook_size, (1, codec_frames, a.n_acoustic_codebook))],
                           axis=2).astype(np.int64)
    noise = rng.standard_normal((4, a.n_acoustic_codebook)).astype(np.float32)
    semantic = rng.gumbel(size=(4, a.semantic_head_rows)).astype(np.float32)  # sampling at temperature 1
    scales = np.array([1.0, 1.5, 2.0, 3.0])  # each row guided at a scale other than the default
    return {"embeds": embeds.float(), "prompt": prompt, "codes": codes, "noise": noise, "semantic": semantic,
            "scales": scales}


def validate_traced(model, traced: dict, precision: str, seed: int = 0) -> dict[str, dict]:
    """Run the traced modules next to the eager reference; raise a VoxtralError beyond tolerance."""
    import torch

    from .validate import TOLERANCE, _error

    tolerance, code_tolerance = TOLERANCE[precision]
    data = _validation_inputs(model, np.random.default_rng(seed))
    embeds, prompt = data["embeds"], data["prompt"]
    results: dict[str, dict] = {}
    print("validating the traced modules against the PyTorch reference:")
    with torch.no_grad():
        # the reference: the whole sequence at once, without a cache (causal attention)
        ref = model.backbone(embeds, torch.arange(embeds.shape[1]))
        bb = traced["backbone"]
        reset_cache(bb)
        prefill = bb(embeds[:, :prompt], torch.arange(prompt))
        step = bb(embeds[:, prompt:], torch.tensor([prompt]))
        reset_cache(bb)
        # float16 keys/values: the converted model's cache precision
        results["traced backbone prefill"] = _error(prefill.numpy(), ref[:, :prompt].numpy())
        results["traced backbone step"] = _error(step.numpy(), ref[:, prompt:].numpy())

        hidden = ref[0, -4:]
        noise, semantic = torch.from_numpy(data["noise"]), torch.from_numpy(data["semantic"])
        default = model.acoustic_transformer.guidance(len(hidden))
        guided = torch.from_numpy(guidance_weights(data["scales"]))
        for label, perturbation, guidance in (("codes", torch.zeros_like(semantic), default),
                                              ("sampled codes", semantic, default),
                                              ("guided codes", torch.zeros_like(semantic), guided)):
            codes = np.concatenate([traced["flow_frame"](h[None], x[None], s[None], g[None]).numpy()
                                    for h, x, s, g in zip(hidden, noise, perturbation, guidance)])
            expected = model.acoustic_transformer(hidden, noise, perturbation, guidance).numpy()
            results[f"traced flow_frame {label}"] = {
                "mismatches": int((codes != expected).sum()),
                "count": int(codes.size),
            }

        real = data["codes"]
        spf = model.config.samples_per_frame
        audio = traced["codec"](torch.from_numpy(pad_codec_chunk(real[0], CODEC_FRAMES)))[0, : real.shape[1] * spf]
        results["traced codec (padded chunk)"] = _error(
            audio.numpy(), model.audio_tokenizer(torch.from_numpy(real))[0].numpy()
        )
    cache_tolerance = max(tolerance, TOLERANCE["fp16"][0])  # the cache is float16 whatever the precision
    limits = {"traced backbone prefill": cache_tolerance, "traced backbone step": cache_tolerance}
    _report(results, lambda k: limits.get(k, 1e-4), code_tolerance=0.0)
    return results


def _report(results: dict[str, dict], tolerance, code_tolerance: float) -> None:
    for label, r in results.items():
        if "mismatches" in r:
            print(f"  {label:30s} {r['mismatches']} of {r['count']} codes differ")
        else:
            print(f"  {label:30s} max |Δ| {r['max_abs']:.3e}  ({r['relative']:.2e} of peak)")
    failed = [k for k, r in results.items()
              if r.get("mismatches", 0) > code_tolerance * r.get("count", 0) or r.get("relative", 0.0) > tolerance(k)]
    if failed:
        raise VoxtralError(f"Core ML validation failed for {', '.join(failed)}")


def validate_coreml_engine(engine_dir: str | Path, model_dir: str | Path, manifest: dict | None = None,
                           seed: int = 0) -> dict[str, dict]:
    """Run the engine's packages with Core ML next to the eager reference (macOS 15+ only)."""
    import torch

    from ..engine import Engine
    from ..model.loading import load_model
    from ..runtime.backends.coreml import CoreMLBackend
    from .validate import TOLERANCE, _error

    engine_dir = Path(engine_dir)
    if manifest is None:
        manifest = json.loads((engine_dir / MANIFEST).read_text())
    reason = coreml_unavailable()
    if reason:
        raise VoxtralError(f"{engine_dir}: cannot validate with Core ML: {reason}")
    model = load_model(model_dir, weight_dtype=torch.float32, progress=False)
    # the manifest may not be written yet (it is written last): the engine from its dict
    backend = CoreMLBackend(Engine(engine_dir, manifest, ModelConfig.from_file(engine_dir / "params.json")))
    data = _validation_inputs(model, np.random.default_rng(seed))
    embeds, prompt = data["embeds"], data["prompt"]
    results: dict[str, dict] = {}
    print(f"validating the {manifest['precision']} packages of {engine_dir} with Core ML against the PyTorch "
          "reference, computed in float32:")
    with torch.no_grad():
        ref = model.backbone(embeds, torch.arange(embeds.shape[1]))[0]
        results["coreml backbone prefill"] = _error(
            backend.prefill(embeds[0, :prompt].numpy()), ref[prompt - 1].numpy()
        )
        step = backend.step(embeds[0, prompt:prompt + 1].numpy(), [prompt], [0])[0]
        results["coreml backbone step"] = _error(step, ref[prompt].numpy())
        hidden, noise = ref[-4:], torch.from_numpy(data["noise"])
        for label, semantic, scales in (("codes", None, None), ("sampled codes", data["semantic"], None),
                                        ("guided codes", None, data["scales"])):
            codes = backend.flow(hidden.numpy(), data["noise"], semantic, scales)
            expected = model.acoustic_transformer(
                hidden, noise, None if semantic is None else torch.from_numpy(semantic),
                None if scales is None else torch.from_numpy(guidance_weights(scales)),
            )
            results[f"coreml flow_frame {label}"] = {"mismatches": int((codes != expected.numpy()).sum()),
                                                     "count": int(codes.size)}
        real = data["codes"]
        results["coreml codec"] = _error(
            backend.codec(real[0]), model.audio_tokenizer(torch.from_numpy(real))[0].numpy()
        )
    tolerance, code_tolerance = TOLERANCE[manifest["precision"]]
    _report(results, lambda _: tolerance, code_tolerance)
    return results


# --- the engine --------------------------------------------------------------------------------------

def build_coreml_engine(model_dir: str | Path, engine_dir: str | Path, precision: str | None = None,
                        capacity: int = DEFAULT_CAPACITY, validate: bool = True, progress: bool = True) -> Path:
    """Export ``model_dir`` to a Core ML engine directory; returns its path."""
    precision = precision or DEFAULT_PRECISION
    if precision not in PRECISIONS:
        raise VoxtralError(
            f"precision '{precision}' is not available for target coreml; available: {', '.join(PRECISIONS)}"
        )
    if capacity < 2:
        raise VoxtralError("capacity must be at least 2 positions")
    try:
        import coremltools as ct
    except ImportError:
        raise VoxtralError("--target coreml needs coremltools (pip install 'voxtral-tts[coreml]')") from None
    import torch

    from ..model.loading import load_model

    draft = start_engine_dir(model_dir, engine_dir, f"a Core ML {precision} engine")
    model_dir, out, config = draft.model_dir, draft.out, draft.config

    model = load_model(model_dir, weight_dtype=torch.float32, progress=progress)
    traced = trace_graphs(model, capacity)
    validation = validate_traced(model, traced, precision) if validate else {}
    graphs = convert_graphs(traced, config, capacity, precision, out, progress)
    del traced, model

    manifest = draft.manifest("coreml", precision, capacity, graphs, deployment_target=DEPLOYMENT_TARGET,
                              spec_version=SPEC_VERSION, codec_frames=CODEC_FRAMES,
                              exporter={"coremltools": ct.__version__})
    if validate:
        reason = coreml_unavailable()
        if reason:
            log.warning("Core ML prediction not validated: %s", reason)
            validation["coreml"] = {"skipped": reason}
        else:
            validation.update(validate_coreml_engine(out, model_dir, manifest=manifest))
        manifest["validation"] = validation
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("engine written to %s in %.1f s", out, time.perf_counter() - draft.started)
    return out
