"""An engine directory being written, whatever the target: the model's light parts copied in
(params.json, tekken.json, voices as ``.safetensors``, the embedding tables as ``.npy`` copied
row block by row block) and the manifest fields every target shares. ``manifest.json`` is
written last by the target's builder, so a half-written engine is never taken for a complete one.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointReader, model_identity
from ..config import ModelConfig
from ..engine import EMBEDDINGS_DIR, ENGINE_FORMAT, FORMAT_VERSION, MANIFEST, host_info
from ..errors import VoxtralError
from ..tensors import float32_to_bf16, read_safetensors_array, write_safetensors
from ..tokenizer import Tekken
from ..voices import VOICE_DIR, VoiceBank

log = logging.getLogger(__name__)

EMBEDDINGS = {
    "tokens": "mm_audio_embeddings.tok_embeddings.weight",
    "codebooks": "mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight",
}


def _versions() -> dict[str, str]:
    out = {}
    for package in ("voxtral-tts", "torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def _write_embeddings(reader: CheckpointReader, out: Path) -> dict[str, dict]:
    entries = {}
    (out / EMBEDDINGS_DIR).mkdir(exist_ok=True)
    for name, key in EMBEDDINGS.items():
        info = reader.infos[key]
        source = read_safetensors_array(reader.path, info)
        dtype = "bf16" if info.dtype == "BF16" else "float32"
        rel = f"{EMBEDDINGS_DIR}/{name}.npy"
        target = np.lib.format.open_memmap(out / rel, mode="w+", dtype=np.uint16 if dtype == "bf16" else np.float32,
                                           shape=info.shape)
        step = max(1, (64 << 20) // (info.shape[1] * 4))
        for start in range(0, info.shape[0], step):
            block = source[start : start + step]
            target[start : start + step] = block if dtype == "bf16" else np.asarray(block, np.float32)
        target.flush()
        del target
        entries[name] = {"file": rel, "dtype": dtype, "shape": list(info.shape)}
    return entries


def _write_voices(model_dir: Path, out: Path, tokenizer: Tekken, config: ModelConfig) -> list[str]:
    bank = VoiceBank(model_dir / VOICE_DIR, tokenizer.voice_num_audio_tokens, config.backbone.dim, config.voices)
    (out / VOICE_DIR).mkdir(exist_ok=True)
    for name in bank.names:
        bits = float32_to_bf16(bank.get(name).embedding)  # exact: the voices are BF16
        write_safetensors(out / VOICE_DIR / f"{name}.safetensors", {"embedding": ("BF16", bits.shape)},
                          lambda _, bits=bits: bits)
    return bank.names


@dataclass
class EngineDraft:
    """An engine directory being written: the model's light parts copied in, the manifest not yet."""

    model_dir: Path
    out: Path
    config: ModelConfig
    reader: CheckpointReader
    voices: list[str]
    embeddings: dict[str, dict]
    started: float

    def manifest(self, target: str, precision: str, capacity: int, graphs: dict, exporter: dict | None = None,
                 **extra) -> dict:
        """The manifest fields every target writes; ``extra`` adds the target's own, ``exporter``
        more tool versions."""
        return {
            "format": ENGINE_FORMAT,
            "format_version": FORMAT_VERSION,
            "target": target,
            "precision": precision,
            "capacity": capacity,
            **extra,
            "model": model_identity(self.model_dir, self.config),
            "source": str(self.model_dir.resolve()),
            "graphs": graphs,
            "embeddings": self.embeddings,
            "voices": self.voices,
            "exporter": {**_versions(), **(exporter or {}), **host_info()},
            "export_seconds": round(time.perf_counter() - self.started, 1),
        }


def start_engine_dir(model_dir: str | Path, engine_dir: str | Path, what: str) -> EngineDraft:
    """Check the model directory, make ``engine_dir`` ready (new, empty, or an engine being rebuilt:
    its manifest is removed first, so a half-written engine is never taken for a complete one) and
    copy in what every target shares: params.json, tekken.json, the voices, the embedding tables."""
    model_dir, out = Path(model_dir), Path(engine_dir)
    started = time.perf_counter()
    config = ModelConfig.from_file(model_dir)
    tokenizer = Tekken.from_file(model_dir)
    tokenizer.check_config(config.audio)
    reader = CheckpointReader(model_dir, config)
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).exists():
            raise VoxtralError(f"{out}: exists and is not an engine directory; choose an empty or new directory")
        (out / MANIFEST).unlink()  # rebuilt below; the directory is incomplete until it is rewritten
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VoxtralError(f"{out}: cannot create the engine directory ({exc.strerror or exc})") from None
    log.info("exporting %s (%s) to %s in %s", model_dir, reader.describe(), what, out)
    shutil.copyfile(model_dir / "params.json", out / "params.json")
    shutil.copyfile(tokenizer.path, out / "tekken.json")
    voices = _write_voices(model_dir, out, tokenizer, config)
    embeddings = _write_embeddings(reader, out)
    return EngineDraft(model_dir, out, config, reader, voices, embeddings, started)


