"""``voxtral-export --target tensorrt``: TensorRT engines built from the exported ONNX graphs.

The engine directory is an ONNX engine directory (graphs, embedding tables, voices, manifest with
``"target": "tensorrt"``) whose graphs carry the TensorRT precision, plus the serialized TensorRT
plans, built where TensorRT runs:

1. the ONNX graphs are exported in ``fp16`` (:mod:`.build`: matmul weights and matmuls in float16;
   norms, softmax, RoPE, the Euler updates and the semantic logits in float32; the codec float32)
   and validated against the PyTorch reference with ONNX Runtime on the CPU;
2. ``bf16``: the same graphs retyped (:func:`retype_bf16`): every float16 matmul weight becomes the
   checkpoint's own bfloat16 bits (lossless: the model is released in BF16), every cast to float16
   a cast to bfloat16; nothing else changes. ONNX Runtime's CPU provider has no bfloat16 MatMul, so
   the validation recorded is that of the fp16 graphs before the retyping;
3. the plans: parsed into *strongly typed* networks (TensorRT keeps each tensor's ONNX type, so the
   precision split is the graph's, not the builder's), built now when TensorRT ≥ 10, cuda-python
   and a GPU are present, otherwise on first load on a machine that has them (the manifest says
   ``"plans": "deferred"``).

Optimisation profiles (:func:`graph_profiles`), every shape fixed where a CUDA graph replays it:

- backbone profile 0, prefill: batch 1, length 1..capacity; the past is one masked row
  (``past_lengths`` 0), so no tensor is empty;
- backbone profiles 1..K, decode: batch = cache slots, length 1, past = one bucket of
  :func:`decode_buckets` (multiples of 512 up to the capacity). The runtime binds each layer's
  cache prefix ``[:bucket]`` (position-major: same address for every bucket) and masks the rows
  past each sequence's length, so each bucket is one execution context and one CUDA graph;
- flow frame: batch = cache slots; codec: one chunk of 75 frames (50 new + 25 context).

Plans are cached in ``ENGINE_DIR/tensorrt/<key digest>/`` (``$VOXTRAL_TTS_CACHE/tensorrt/`` when
the engine directory is read-only), keyed by GPU compute capability, TensorRT version, model
identity, precision and profile (:func:`cache_key`), and rebuilt when the stored key differs
(:func:`rebuild_reason`); a TensorRT upgrade replaces the set it supersedes. This module imports
neither torch nor TensorRT at import time: the runtime uses its pure functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..engine import MANIFEST, Engine
from ..errors import EngineError, VoxtralError
from ..runtime.decoding import CODEC_FRAMES

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "bf16")
DEFAULT_PRECISION = "fp16"
#: decode profiles cover the past in steps of this many positions (the last one ends at the capacity)
DECODE_BUCKET = 512
#: prefill profile: the length TensorRT tunes for
PREFILL_OPT = 256
GRAPHS = ("backbone", "flow_frame", "codec")
PLANS_DIR = "tensorrt"
KEY_FILE = "key.json"
KEY_FORMAT = 1

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name → (min, opt, max)


# --- profiles ----------------------------------------------------------------------------------------

def decode_buckets(capacity: int, width: int = DECODE_BUCKET) -> list[int]:
    """Past lengths of the decode profiles: width, 2·width, …, ending exactly at ``capacity``."""
    if capacity < 1 or width < 1:
        raise VoxtralError(f"capacity and bucket width must be positive, got {capacity} and {width}")
    return list(range(width, capacity, width)) + [capacity]


def bucket_for(past: int, buckets: list[int]) -> int:
    """The smallest bucket that holds ``past`` positions."""
    for bucket in buckets:
        if past <= bucket:
            return bucket
    raise VoxtralError(f"a past of {past} positions exceeds the KV cache ({buckets[-1]} positions)")


def _fixed(shape: Shape) -> tuple[Shape, Shape, Shape]:
    return (shape, shape, shape)


def backbone_profiles(config: ModelConfig, capacity: int, max_batch: int,
                      width: int = DECODE_BUCKET) -> list[Profile]:
    """Profile 0: prefill (batch 1, length 1..capacity, one masked past row); then one fixed
    decode profile per past bucket (batch ``max_batch``, length 1)."""
    b = config.backbone
    kv = (b.n_kv_heads, b.head_dim)
    opt = min(PREFILL_OPT, capacity)
    past_names = [f"past_{kind}.{i}" for i in range(b.n_layers) for kind in ("k", "v")]
    prefill: Profile = {
        "embeds": ((1, 1, b.dim), (1, opt, b.dim), (1, capacity, b.dim)),
        "positions": ((1, 1), (1, opt), (1, capacity)),
        "past_lengths": _fixed((1,)),
        **{name: _fixed((1, 1, *kv)) for name in past_names},
    }
    profiles = [prefill]
    for bucket in decode_buckets(capacity, width):
        profiles.append({
            "embeds": _fixed((max_batch, 1, b.dim)),
            "positions": _fixed((max_batch, 1)),
            "past_lengths": _fixed((max_batch,)),
            **{name: _fixed((bucket, max_batch, *kv)) for name in past_names},
        })
    return profiles


def graph_profiles(config: ModelConfig, capacity: int, max_batch: int,
                   width: int = DECODE_BUCKET) -> dict[str, list[Profile]]:
    """The optimisation profiles of every graph."""
    a = config.audio
    return {
        "backbone": backbone_profiles(config, capacity, max_batch, width),
        "flow_frame": [{"hidden": _fixed((max_batch, config.backbone.dim)),
                        "noise": _fixed((max_batch, a.n_acoustic_codebook))}],
        "codec": [{"codes": _fixed((1, CODEC_FRAMES, a.num_codebooks))}],
    }


# --- plan cache --------------------------------------------------------------------------------------

def cache_key(identity: dict[str, str], precision: str, compute_capability: tuple[int, int], tensorrt_version: str,
              capacity: int, max_batch: int, width: int = DECODE_BUCKET) -> dict[str, Any]:
    """What a set of plans depends on: GPU, TensorRT, model, precision and profile."""
    return {
        "format": KEY_FORMAT,
        "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
        "tensorrt": str(tensorrt_version),
        "model": {k: identity.get(k) for k in ("params_sha256", "checkpoint_sha256", "tekken_sha256")},
        "precision": precision,
        "profile": {"capacity": int(capacity), "max_batch": int(max_batch),
                    "decode_buckets": decode_buckets(capacity, width), "codec_frames": CODEC_FRAMES},
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


_KEY_NAMES = {"format": "key format", "compute_capability": "GPU compute capability", "tensorrt": "TensorRT version",
              "model": "model identity", "precision": "precision", "profile": "optimisation profile"}


def rebuild_reason(stored: dict[str, Any] | None, wanted: dict[str, Any], plans_present: bool) -> str | None:
    """Why the plans must be (re)built, or None when the stored ones fit."""
    if stored is None:
        return "no TensorRT plans for this GPU, TensorRT version, model, precision and profile yet"
    differing = [f"{_KEY_NAMES.get(k, k)} {stored.get(k)} → {wanted.get(k)}"
                 for k in sorted(set(stored) | set(wanted)) if stored.get(k) != wanted.get(k)]
    if differing:
        return "the plans were built for another setup: " + "; ".join(differing)
    if not plans_present:
        return "the plan set is incomplete"
    return None


def superseded(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """A stored set that ``new`` replaces: same GPU, model, precision and profile, other TensorRT."""
    same = ("compute_capability", "model", "precision", "profile")
    return all(stored.get(k) == new.get(k) for k in same) and stored.get("tensorrt") != new.get("tensorrt")


def plans_root(engine_dir: Path) -> Path:
    """Where plan sets live: in the engine directory, or the user cache when it is read-only."""
    root = Path(engine_dir) / PLANS_DIR
    if os.access(root if root.exists() else engine_dir, os.W_OK):
        return root
    from ..runtime.tts import cache_root

    return cache_root() / PLANS_DIR


def read_key(directory: Path) -> dict[str, Any] | None:
    try:
        key = json.loads((directory / KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return key if isinstance(key, dict) else None


def plans_complete(directory: Path) -> bool:
    return all((directory / f"{name}.plan").is_file() for name in GRAPHS)


def ensure_plans(engine: Engine, capacity: int, max_batch: int, compute_capability: tuple[int, int], trt,
                 width: int = DECODE_BUCKET) -> tuple[Path, dict[str, Any]]:
    """The plan set for this GPU and profile, built (minutes at full size) when missing or stale."""
    key = cache_key(engine.identity, engine.precision, compute_capability, trt.__version__, capacity, max_batch, width)
    root = plans_root(engine.path)
    directory = root / key_digest(key)
    reason = rebuild_reason(read_key(directory), key, plans_complete(directory))
    if reason is not None:
        log.info("building TensorRT plans in %s: %s", directory, reason)
        build_plans(engine, directory, key, graph_profiles(engine.config, capacity, max_batch, width), trt)
        for other in root.iterdir():
            stored = read_key(other) if other.is_dir() and other != directory else None
            if stored is not None and superseded(stored, key):
                log.info("removing the plans %s, superseded (TensorRT %s → %s)", other.name, stored["tensorrt"],
                         key["tensorrt"])
                shutil.rmtree(other, ignore_errors=True)
    else:
        log.info("using the TensorRT plans in %s", directory)
    return directory, key


def build_plans(engine: Engine, directory: Path, key: dict[str, Any], profiles: dict[str, list[Profile]], trt) -> None:
    """Parse each ONNX graph into a strongly typed network and serialize its plan; ``key.json`` is
    written last, so a half-built set is never taken for a complete one."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / KEY_FILE).unlink(missing_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    for name in GRAPHS:
        started = time.perf_counter()
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(engine.graph_path(name))):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT {trt.__version__} cannot parse {name}.onnx: {errors}")
        config = builder.create_builder_config()
        for shapes in profiles[name]:
            profile = builder.create_optimization_profile()
            for tensor, (lo, opt, hi) in shapes.items():
                profile.set_shape(tensor, lo, opt, hi)
            config.add_optimization_profile(profile)
        log.info("building the TensorRT plan of %s (%d optimisation profiles)", name, len(profiles[name]))
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"TensorRT {trt.__version__} could not build {name} (its log above says why)")
        staging = directory / f"{name}.plan.tmp"
        with open(staging, "wb") as f:
            f.write(plan)
        os.replace(staging, directory / f"{name}.plan")
        log.info("%s.plan: %.0f MB in %.0f s", name, (directory / f"{name}.plan").stat().st_size / 1e6,
                 time.perf_counter() - started)
    (directory / KEY_FILE).write_text(json.dumps(key, indent=2))


# --- bf16 --------------------------------------------------------------------------------------------

def retype_bf16(engine_dir: Path, model_dir: Path, graphs: tuple[str, ...] = ("backbone", "flow_frame")) -> int:
    """Turn the fp16 graphs into bf16 ones in place: each float16 matmul weight ``W[.T].fp16``
    becomes ``W[.T].bf16`` holding the checkpoint's bfloat16 bits (read lazily, written one tensor
    at a time), each Cast to float16 a Cast to bfloat16. Returns the number of weights retyped."""
    import ml_dtypes
    import numpy as np
    import onnx_ir as ir

    from ..checkpoint import CheckpointReader
    from ..tensors import float32_to_bf16

    config = ModelConfig.from_file(model_dir)
    reader = CheckpointReader(model_dir, config)

    def bf16_bits(name: str, transposed: bool) -> np.ndarray:
        bits = reader.read(name, raw_bf16=True)
        if bits.dtype != np.uint16:  # a float32 checkpoint: rounded like torch's .to(bfloat16)
            bits = float32_to_bf16(bits)
        return np.ascontiguousarray(bits.T if transposed else bits).view(ml_dtypes.bfloat16)

    retyped = 0
    for graph_name in graphs:
        path = engine_dir / f"{graph_name}.onnx"
        model = ir.load(path)
        graph = model.graph
        for name, value in list(graph.initializers.items()):
            if value.dtype != ir.DataType.FLOAT16:
                continue
            if not name.endswith(".fp16"):
                raise EngineError(f"{path}: float16 initializer '{name}' is not a matmul weight of the fp16 export")
            base = name[: -len(".fp16")]
            transposed = base.endswith(".T")
            source = base[:-2] if transposed else base
            if source not in reader.shapes:
                raise EngineError(f"{path}: '{name}' has no source tensor in the checkpoint")
            new = ir.Value(name=base + ".bf16", shape=value.shape, type=ir.TensorType(ir.DataType.BFLOAT16))
            new.const_value = ir.LazyTensor(
                lambda s=source, t=transposed, n=new.name: ir.tensor(bf16_bits(s, t), name=n),
                ir.DataType.BFLOAT16, value.shape, name=new.name)
            graph.register_initializer(new)
            value.replace_all_uses_with(new)
            graph.initializers.pop(name)
            retyped += 1
        for node in graph:
            if node.op_type == "Cast" and node.attributes["to"].value == ir.DataType.FLOAT16:
                node.attributes["to"] = ir.AttrInt64("to", ir.DataType.BFLOAT16)
            for output in node.outputs:
                if output.dtype == ir.DataType.FLOAT16:
                    output.dtype = ir.DataType.BFLOAT16
        staging = engine_dir / ".bf16"
        staging.mkdir(exist_ok=True)
        ir.save(model, staging / path.name, external_data=path.name + ".data", size_threshold_bytes=1024, max_workers=1)
        del model, graph
        for produced in staging.iterdir():
            os.replace(produced, engine_dir / produced.name)
        staging.rmdir()
        log.info("%s: matmul weights in bfloat16", path.name)
    return retyped


# --- the export --------------------------------------------------------------------------------------

def tensorrt_available() -> tuple[Any, tuple[int, int]] | str:
    """(tensorrt module, compute capability of GPU 0) when plans can be built here, else why not."""
    from ..runtime.tensorrt_backend import open_cuda, require_libraries

    try:
        trt, cudart = require_libraries()
        _, capability = open_cuda(cudart, 0)
    except VoxtralError as exc:
        return str(exc)
    return trt, capability


def build_tensorrt_engine(model_dir: str | Path, engine_dir: str | Path, precision: str | None = None,
                          capacity: int | None = None, validate: bool = True, progress: bool = True,
                          max_batch: int = 1) -> Path:
    """Export ``model_dir`` to a TensorRT engine directory; plans for ``capacity`` and ``max_batch``
    are built now if this machine can, else on first load. Returns the engine path."""
    from ..engine import open_engine
    from .build import DEFAULT_CAPACITY, build_engine

    precision = precision or DEFAULT_PRECISION
    capacity = DEFAULT_CAPACITY if capacity is None else capacity
    if precision not in PRECISIONS:
        raise VoxtralError(f"precision '{precision}' is not available for target tensorrt; "
                           f"available: {', '.join(PRECISIONS)}")
    model_dir, out = Path(model_dir), Path(engine_dir)
    build_engine(model_dir, out, target="onnx", precision="fp16", capacity=capacity, validate=validate,
                 progress=progress)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).unlink()  # the directory is incomplete until the manifest is rewritten below
    if precision == "bf16":
        retype_bf16(out, model_dir)
    manifest.update(target="tensorrt", precision=precision)
    manifest["tensorrt"] = {
        "onnx_precision": precision, "strongly_typed": True, "decode_bucket": DECODE_BUCKET,
        "codec_frames": CODEC_FRAMES, "validated_graphs": "fp16" if validate else None, "plans": "deferred",
    }
    available = tensorrt_available()
    if isinstance(available, str):
        manifest["tensorrt"]["deferred_reason"] = available
        log.warning("TensorRT plans not built here (%s); they are built on first load on a machine with an "
                    "NVIDIA GPU, TensorRT >= 10 and cuda-python", available)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if not isinstance(available, str):
        trt, capability = available
        directory, _ = ensure_plans(open_engine(out), capacity, max_batch, capability, trt)
        manifest["tensorrt"]["plans"] = directory.name
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out
