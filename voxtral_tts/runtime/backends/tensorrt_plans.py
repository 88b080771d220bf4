"""TensorRT plans for an engine directory: optimisation profiles, decode buckets and the plan
cache. Pure Python except :func:`build_plans`, which takes the ``tensorrt`` module it is given:
the tensorrt backend calls :func:`ensure_plans` on load and ``voxtral-export --target tensorrt``
at export time, when this machine can build.

Optimisation profiles (:func:`graph_profiles`), every shape fixed where a CUDA graph replays it:

- backbone profile 0, prefill: batch 1, length 1..capacity; the past 1..capacity positions: a
  cached voice prefix, or one masked row (``past_lengths`` 0) so that no tensor is empty;
- backbone profiles 1..K·W, decode: length 1, one per (past bucket, batch width) — past buckets
  of :func:`decode_buckets` (multiples of 512 up to the capacity), batch widths of
  :func:`batch_widths` (powers of two up to the cache slots: a step runs the smallest that holds
  its sequences, the cache laid out that wide, :mod:`.kv_slots`). The runtime binds each layer's
  cache prefix ``[:bucket]`` and masks the rows past each sequence's length, so each (bucket,
  width) is one execution context and one CUDA graph (:func:`decode_profiles` lists them in order);
- flow frame: one profile per batch width (with the ``guidance`` input from engine format 4 on);
  codec: one chunk of 75 frames (50 new + 25 context).

Plans are cached in ``ENGINE_DIR/tensorrt/<key digest>/`` (``$VOXTRAL_TTS_CACHE/tensorrt/`` when
the engine directory is read-only), keyed by GPU compute capability, TensorRT version, model
identity, precision, the engine's format (its graphs' inputs) and profile (:func:`cache_key`), and
rebuilt when the stored key differs
(:func:`rebuild_reason`); a TensorRT upgrade replaces the set it supersedes.
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

from ...config import ModelConfig
from ...engine import FORMAT_VERSION, Engine, cache_root
from ...errors import EngineError, VoxtralError
from ..constants import CODEC_FRAMES
from .buckets import power_buckets

log = logging.getLogger(__name__)

#: decode profiles cover the past in steps of this many positions (the last one ends at the capacity)
DECODE_BUCKET = 512
#: prefill profile: the length TensorRT tunes for
PREFILL_OPT = 256
GRAPHS = ("backbone", "flow_frame", "codec")
PLANS_DIR = "tensorrt"
KEY_FILE = "key.json"
KEY_FORMAT = 5  # 2: the prefill profile takes a past (voice-prefix cache); 3: flow_frame takes semantic_noise;
# 4: decode and flow profiles per batch width; 5: the engine's format version (4: flow_frame takes guidance)

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name → (min, opt, max)


# --- profiles ----------------------------------------------------------------------------------------

def decode_buckets(capacity: int, width: int = DECODE_BUCKET) -> list[int]:
    """Past lengths of the decode profiles: width, 2·width, …, ending exactly at ``capacity``."""
    if capacity < 1 or width < 1:
        raise VoxtralError(f"capacity and bucket width must be positive, got {capacity} and {width}")
    return list(range(width, capacity, width)) + [capacity]


def batch_widths(max_batch: int) -> list[int]:
    """Batch sizes of the decode and flow profiles: powers of two below ``max_batch``, then it."""
    return power_buckets(max_batch)


def decode_profiles(capacity: int, max_batch: int, width: int = DECODE_BUCKET) -> list[tuple[int, int]]:
    """(past bucket, batch width) of backbone profiles 1, 2, … in order."""
    return [(bucket, rows) for bucket in decode_buckets(capacity, width) for rows in batch_widths(max_batch)]


def _fixed(shape: Shape) -> tuple[Shape, Shape, Shape]:
    return (shape, shape, shape)


def backbone_profiles(config: ModelConfig, capacity: int, max_batch: int,
                      width: int = DECODE_BUCKET) -> list[Profile]:
    """Profile 0: prefill (batch 1, length 1..capacity, a past of 1..capacity positions: a voice
    prefix or one masked row); then one fixed decode profile per (past bucket, batch width) of
    :func:`decode_profiles` (length 1)."""
    b = config.backbone
    kv = (b.n_kv_heads, b.head_dim)
    opt = min(PREFILL_OPT, capacity)
    past_names = [f"past_{kind}.{i}" for i in range(b.n_layers) for kind in ("k", "v")]
    prefill: Profile = {
        "embeds": ((1, 1, b.dim), (1, opt, b.dim), (1, capacity, b.dim)),
        "positions": ((1, 1), (1, opt), (1, capacity)),
        "past_lengths": _fixed((1,)),
        **{name: ((1, 1, *kv), (opt, 1, *kv), (capacity, 1, *kv)) for name in past_names},
    }
    profiles = [prefill]
    for bucket, rows in decode_profiles(capacity, max_batch, width):
        profiles.append({
            "embeds": _fixed((rows, 1, b.dim)),
            "positions": _fixed((rows, 1)),
            "past_lengths": _fixed((rows,)),
            **{name: _fixed((bucket, rows, *kv)) for name in past_names},
        })
    return profiles


def graph_profiles(config: ModelConfig, capacity: int, max_batch: int, width: int = DECODE_BUCKET,
                   guidance: bool = True) -> dict[str, list[Profile]]:
    """The optimisation profiles of every graph; ``guidance``: whether the flow frame takes the
    guidance weights (False: a format-3 engine)."""
    a = config.audio
    return {
        "backbone": backbone_profiles(config, capacity, max_batch, width),
        "flow_frame": [{"hidden": _fixed((rows, config.backbone.dim)),
                        "noise": _fixed((rows, a.n_acoustic_codebook)),
                        "semantic_noise": _fixed((rows, a.semantic_head_rows)),
                        **({"guidance": _fixed((rows, 2))} if guidance else {})} for rows in batch_widths(max_batch)],
        "codec": [{"codes": _fixed((1, CODEC_FRAMES, a.num_codebooks))}],
    }


# --- plan cache --------------------------------------------------------------------------------------

def cache_key(identity: dict[str, str], precision: str, compute_capability: tuple[int, int], tensorrt_version: str,
              capacity: int, max_batch: int, width: int = DECODE_BUCKET,
              engine_format: int = FORMAT_VERSION) -> dict[str, Any]:
    """What a set of plans depends on: GPU, TensorRT, model, precision, the engine's format (which
    inputs its graphs take) and profile."""
    return {
        "format": KEY_FORMAT,
        "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
        "tensorrt": str(tensorrt_version),
        "model": {k: identity.get(k) for k in ("params_sha256", "checkpoint_sha256", "tekken_sha256")},
        "precision": precision,
        "engine_format": int(engine_format),
        "profile": {"capacity": int(capacity), "max_batch": int(max_batch),
                    "decode_buckets": decode_buckets(capacity, width), "batch_widths": batch_widths(max_batch),
                    "codec_frames": CODEC_FRAMES},
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


_KEY_NAMES = {"format": "key format", "compute_capability": "GPU compute capability", "tensorrt": "TensorRT version",
              "model": "model identity", "precision": "precision", "engine_format": "engine format",
              "profile": "optimisation profile"}


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
    same = ("compute_capability", "model", "precision", "engine_format", "profile")
    return all(stored.get(k) == new.get(k) for k in same) and stored.get("tensorrt") != new.get("tensorrt")


def plans_root(engine_dir: Path) -> Path:
    """Where plan sets live: in the engine directory, or the user cache when it is read-only."""
    root = Path(engine_dir) / PLANS_DIR
    if os.access(root if root.exists() else engine_dir, os.W_OK):
        return root
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
    key = cache_key(engine.identity, engine.precision, compute_capability, trt.__version__, capacity, max_batch, width,
                    engine.manifest["format_version"])
    root = plans_root(engine.path)
    directory = root / key_digest(key)
    reason = rebuild_reason(read_key(directory), key, plans_complete(directory))
    if reason is not None:
        log.info("building TensorRT plans in %s: %s", directory, reason)
        build_plans(engine, directory, key,
                    graph_profiles(engine.config, capacity, max_batch, width, engine.flow_guidance), trt)
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


