"""Engine directories: what ``voxtral-export`` writes and the runtime loads. Torch-free.

    ENGINE_DIR/
      manifest.json                  format, version, model identity, graphs and their I/O, versions
      backbone.onnx (+ .data)        one decode graph for prefill and for each step (see export)
      flow_frame.onnx (+ .data)      hidden + noise (+ semantic sampling noise, guidance) → 37 codes
      codec.onnx (+ .data)           codes [B, T, 37] → waveform
      embeddings/*.npy               text and codebook tables (BF16 bits or float32), read on the host
      params.json tekken.json voice_embedding/*.safetensors     copied / converted: self-contained

An engine is checked when loaded: every file the manifest names is present, the format version
is one this runtime reads, and params.json / tekken.json are the ones it was built from.

Format 4 gave the flow frame its ``guidance`` input (each row's classifier-free guidance weights,
``expressiveness``); a format-3 engine is still read and runs at the scale its flow graph holds as a
constant (:attr:`Engine.flow_guidance` is False), and only there.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig
from .errors import EngineError

ENGINE_FORMAT = "voxtral-tts-engine"
FORMAT_VERSION = 4  # 2: batched backbone (past_lengths, position-major past); 3: flow_frame samples (semantic_noise);
# 4: flow_frame takes each row's guidance weights (expressiveness)
#: the versions this runtime reads: 3 runs at its built-in expressiveness
READ_VERSIONS = (3, 4)
MANIFEST = "manifest.json"
EMBEDDINGS_DIR = "embeddings"


def cache_root() -> Path:
    """This user's cache directory (``$VOXTRAL_TTS_CACHE``, default ``~/.cache/voxtral-tts``): engines
    exported on first use, TensorRT plans of read-only engine directories."""
    return Path(os.environ.get("VOXTRAL_TTS_CACHE", Path.home() / ".cache" / "voxtral-tts"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_engine_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def check_not_partial_engine(path: str | Path) -> None:
    """A directory with an engine's files but no manifest (an interrupted export) is one clear error,
    not taken for a model directory."""
    path = Path(path)
    if not is_engine_dir(path) and ((path / "backbone.onnx").exists() or (path / EMBEDDINGS_DIR).is_dir()
                                    or (path / "backbone.mlpackage").exists()):
        raise EngineError(f"{path}: has an engine's files but no {MANIFEST} (an interrupted export?); "
                          "run voxtral-export again")


@dataclass(frozen=True)
class Engine:
    """A checked engine directory."""

    path: Path
    manifest: dict[str, Any]
    config: ModelConfig

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def capacity(self) -> int:
        return int(self.manifest["capacity"])

    @property
    def identity(self) -> dict[str, str]:
        return self.manifest["model"]

    def graph(self, name: str) -> dict[str, Any]:
        try:
            return self.manifest["graphs"][name]
        except KeyError:
            raise EngineError(f"{self.path}: the engine has no '{name}' graph") from None

    @property
    def flow_guidance(self) -> bool:
        """Whether the flow frame takes the ``guidance`` input (format 4 on); False: its expressiveness
        is the checkpoint's ``cfg_alpha``, built into the graph."""
        return any(i.get("name") == "guidance" for i in self.graph("flow_frame").get("inputs", []))

    def graph_path(self, name: str) -> Path:
        return self.path / self.graph(name)["file"]

    def embedding(self, name: str) -> tuple[Path, str]:
        entry = self.manifest["embeddings"][name]
        return self.path / entry["file"], entry["dtype"]


def _files(manifest: dict[str, Any]) -> list[str]:
    files = ["params.json", "tekken.json"]
    for graph in manifest.get("graphs", {}).values():
        files.append(graph["file"])
        files.extend(graph.get("data_files", []))
    files.extend(e["file"] for e in manifest.get("embeddings", {}).values())
    return files


def _present(path: Path) -> bool:
    """A file, or for a Core ML package (a directory) its ``Manifest.json``."""
    return (path / "Manifest.json").is_file() if path.suffix == ".mlpackage" else path.is_file()


def open_engine(path: str | Path) -> Engine:
    """Read and check an engine directory; every problem is one :class:`EngineError` line."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise EngineError(f"{path}: not an engine directory (no {MANIFEST}); run voxtral-export first")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{manifest_path}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ENGINE_FORMAT:
        raise EngineError(f"{manifest_path}: not a voxtral-tts engine manifest")
    version = manifest.get("format_version")
    if version not in READ_VERSIONS:
        raise EngineError(
            f"{path}: engine format version {version}, this runtime reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}; re-export it with this version of voxtral-export"
        )
    missing = [f for f in _files(manifest) if not _present(path / f)]
    if missing:
        raise EngineError(f"{path}: incomplete engine, missing {', '.join(missing)}")
    identity = manifest.get("model", {})
    for name, key in (("params.json", "params_sha256"), ("tekken.json", "tekken_sha256")):
        if sha256_file(path / name) != identity.get(key):
            raise EngineError(f"{path}: {name} differs from the one this engine was built from")
    return Engine(path, manifest, ModelConfig.from_file(path / "params.json"))


def check_engine_matches(engine: Engine, identity: dict[str, str]) -> None:
    """An engine must come from the same model (params, checkpoint header, tokenizer)."""
    theirs = engine.identity
    differing = [k for k in ("params_sha256", "checkpoint_sha256", "tekken_sha256") if theirs.get(k) != identity.get(k)]
    if differing:
        raise EngineError(f"{engine.path}: built for another model ({', '.join(differing)} differ)")


def host_info() -> dict[str, str]:
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()}
