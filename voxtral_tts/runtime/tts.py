"""The embedding API: ``voxtral_tts.load(path, backend=...)`` → :class:`TTS`.

:class:`TTS` owns the parts every backend shares — tokenizer, voices, prompt construction, the
decode loop, chunked codec decoding — and drives an :class:`Inference` backend. Torch-free: the
torch backend is imported only when asked for.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..config import ModelConfig
from ..engine import Engine, is_engine_dir, open_engine
from ..errors import VoxtralError
from ..text import MAX_CHUNK_CHARS, check_text, split_text
from ..tokenizer import Tekken
from ..voices import VOICE_DIR, Voice, VoiceBank
from .decoding import (Inference, NoiseSource, Sequence, decode_codes, decode_span, frame_budget, generate_frames,
                       stream_chunk_frames)

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt", "coreml")


@dataclass(frozen=True)
class SynthesisResult:
    text: str
    voice: str
    prompt_ids: np.ndarray  # int64 [P]: ids fed to the backbone ([AUDIO] at the voice rows)
    codes: np.ndarray  # int64 [T, 37]: frames decoded to audio, +2 offset
    audio: np.ndarray  # float32 [T · 1920], unclipped
    sample_rate: int
    finished: bool  # True when END_AUDIO ended generation, False when the frame cap did
    seed: int | None = None  # the seed that reproduces this result (None with explicit noise)
    parts: tuple["SynthesisResult", ...] = field(default=(), repr=False)  # per text part, if split

    @property
    def n_frames(self) -> int:
        return int(self.codes.shape[0])

    @property
    def duration(self) -> float:
        return self.audio.shape[0] / self.sample_rate


class TTS:
    def __init__(self, model: Inference, tokenizer: Tekken, voice_bank: VoiceBank):
        self.model = model
        self.config: ModelConfig = model.config
        self.tokenizer = tokenizer
        self.voice_bank = voice_bank

    @property
    def voices(self) -> list[str]:
        return self.voice_bank.names

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    # --- prompt ------------------------------------------------------------------------------------
    def prompt(self, text: str, voice: Voice) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [P] and embeddings [P, D]: text rows from the table, voice rows at [AUDIO]."""
        text_ids = self.tokenizer.encode(text)
        ids = np.asarray(self.tokenizer.speech_prompt(text_ids, voice.n_audio_tokens), dtype=np.int64)
        embeds = self.model.embed_tokens(ids)
        audio_rows = ids == self.tokenizer.audio_id
        embeds[audio_rows] = voice.embedding  # replacement, in order (spec §4.2)
        return ids, embeds

    # --- generation --------------------------------------------------------------------------------
    def generate(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
                 seed: int | None = None, noise: np.ndarray | None = None) -> SynthesisResult:
        """Synthesise one prompt. ``noise`` [max_frames, 36] fixes x0 per frame; ``seed`` alone also
        makes the output reproducible (row n of ``default_rng(seed).standard_normal``)."""
        text = check_text(text)
        source = self._noise(seed, noise)
        return self._generate(text, self.voice_bank.get(voice), max_frames, source)

    def synthesize(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
                   seed: int | None = None, noise: np.ndarray | None = None,
                   max_chars: int = MAX_CHUNK_CHARS) -> SynthesisResult:
        """Like :meth:`generate`, for text of any length: parts of ≤ ``max_chars`` characters cut at
        sentence ends, each generated with a fresh prompt (``max_frames`` applies per part), the
        audio concatenated. Noise continues across parts."""
        text = check_text(text)
        parts = split_text(text, max_chars)
        source = self._noise(seed, noise)
        chosen = self.voice_bank.get(voice)
        if len(parts) == 1:
            return self._generate(parts[0], chosen, max_frames, source)
        log.info("text of %d characters split into %d parts", len(text), len(parts))
        results = [self._generate(part, chosen, max_frames, source) for part in parts]
        return SynthesisResult(
            text=text, voice=chosen.name,
            prompt_ids=np.concatenate([r.prompt_ids for r in results]),
            codes=np.concatenate([r.codes for r in results]),
            audio=np.concatenate([r.audio for r in results]),
            sample_rate=self.sample_rate, finished=all(r.finished for r in results),
            seed=results[0].seed, parts=tuple(results),
        )

    def stream(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
               seed: int | None = None, noise: np.ndarray | None = None,
               max_chars: int = MAX_CHUNK_CHARS, cancelled: Callable[[], bool] | None = None,
               stats: dict | None = None) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks as frames are produced: the first after 5 frames (400 ms of
        audio), then every 5 frames up to 25, then every 25. Each chunk is decoded with up to 25
        frames of left context, so the chunks concatenate to :meth:`synthesize`'s audio (same
        arguments) up to float rounding. Long text is streamed part by part.

        ``cancelled`` is polled every frame (raising ``Cancelled``); ``stats``, if given,
        receives ``text_tokens`` and ``frames`` as they accumulate."""
        utterance = self.utterance(text, voice, max_frames, seed, noise, max_chars, stats)
        while (seq := utterance.next_sequence()) is not None:
            for codes in generate_frames(self.model, seq.embeds, seq.noise, seq.budget, cancelled):
                if (chunk := utterance.add_frame(codes)) is not None:
                    yield chunk
            if (chunk := utterance.flush()) is not None:
                yield chunk

    def utterance(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
                  seed: int | None = None, noise: np.ndarray | None = None,
                  max_chars: int = MAX_CHUNK_CHARS, stats: dict | None = None) -> "Utterance":
        """A text to stream, checked and split, for a caller that drives the decoding itself
        (:meth:`stream`, or a server batching several utterances in one :class:`BatchDecoder`)."""
        text = check_text(text)
        return Utterance(self, split_text(text, max_chars), self.voice_bank.get(voice), max_frames,
                         self._noise(seed, noise), stats)

    def _noise(self, seed: int | None, noise: np.ndarray | None) -> NoiseSource:
        if seed is not None and noise is not None:
            raise VoxtralError("give either seed or noise, not both")
        return NoiseSource(self.config.audio.n_acoustic_codebook, seed=seed, noise=noise)

    def _generate(self, text: str, voice: Voice, max_frames: int | None, noise: NoiseSource) -> SynthesisResult:
        ids, embeds = self.prompt(text, voice)
        budget = frame_budget(self.model, len(ids), max_frames, noise)
        started = time.perf_counter()
        frames = list(generate_frames(self.model, embeds, noise, budget))
        codes = np.stack(frames) if frames else np.zeros((0, self.config.audio.num_codebooks), np.int64)
        if not frames:
            log.warning("END_AUDIO at the first frame: no audio for %r", text[:60])
        audio = self.decode(codes)
        elapsed = time.perf_counter() - started
        log.info("%d frames (%.2f s of audio) in %.2f s, voice %s", len(frames), audio.shape[0] / self.sample_rate,
                 elapsed, voice.name)
        return SynthesisResult(
            text=text, voice=voice.name, prompt_ids=ids, codes=codes, audio=audio,
            sample_rate=self.sample_rate, finished=len(frames) < budget,
            seed=getattr(noise, "seed", None),
        )

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, 37] (+2 offset) → float32 waveform [T · 1920], chunked with left context."""
        codes = np.asarray(codes, dtype=np.int64)
        n_codebooks = self.config.audio.num_codebooks
        if codes.ndim != 2 or codes.shape[1] != n_codebooks:
            raise VoxtralError(f"codes must be [frames, {n_codebooks}], got shape {list(codes.shape)}")
        return decode_codes(self.model.decode_audio, codes, self.config.samples_per_frame)


class Utterance:
    """One text being synthesised part by part and streamed in chunks: it makes each part's
    :class:`Sequence` (prompt, noise, frame budget) and turns the frames it is given into audio
    chunks — 5 frames at a time up to 25, then 25 — each decoded with left context."""

    def __init__(self, tts: TTS, parts: list[str], voice: Voice, max_frames: int | None, noise: NoiseSource,
                 stats: dict | None = None):
        self.tts, self.parts, self.voice, self.max_frames, self.noise = tts, parts, voice, max_frames, noise
        self.stats = stats if stats is not None else {}
        self.stats.update(text_tokens=0, frames=0)
        self.owner: object = None  # the caller's handle (the server's request)
        self._part = 0
        self._frames: list[np.ndarray] = []
        self._emitted = 0

    def next_sequence(self) -> Sequence | None:
        """The next part's sequence, or None when every part is done."""
        if self._part >= len(self.parts):
            return None
        ids, embeds = self.tts.prompt(self.parts[self._part], self.voice)
        self._part += 1
        budget = frame_budget(self.tts.model, len(ids), self.max_frames, self.noise)
        self.stats["text_tokens"] += len(ids) - self.voice.n_audio_tokens - 5  # [1, 25, AUDIO×N, 36, …, 35, 25]
        self._frames, self._emitted = [], 0
        return Sequence(embeds, self.noise, budget, tag=self)

    def add_frame(self, codes: np.ndarray) -> np.ndarray | None:
        """Take one frame's codes; returns an audio chunk when one is due."""
        self._frames.append(codes)
        self.stats["frames"] += 1
        if len(self._frames) - self._emitted >= stream_chunk_frames(self._emitted):
            return self._chunk()
        return None

    def flush(self) -> np.ndarray | None:
        """The audio of the current part's frames not yet returned (at the end of a part)."""
        return self._chunk() if len(self._frames) > self._emitted else None

    def _chunk(self) -> np.ndarray:
        spf = self.tts.config.samples_per_frame
        audio = decode_span(self.tts.model.decode_audio, self._frames, self._emitted, len(self._frames), spf)
        self._emitted = len(self._frames)
        return audio


def read_model_dir(path: str | Path) -> tuple[ModelConfig, Tekken, VoiceBank]:
    """The light parts of a model or engine directory — config, tokenizer, voices — without weights."""
    path = Path(path)
    if not path.is_dir():
        raise VoxtralError(f"{path}: not a directory (expected a model or engine directory)")
    config = ModelConfig.from_file(path)
    tokenizer = Tekken.from_file(path)
    voices = VoiceBank(path / VOICE_DIR, tokenizer.voice_num_audio_tokens, config.backbone.dim, config.voices)
    return config, tokenizer, voices


def engine_target(path: str | Path) -> str | None:
    """The ``target`` an engine directory's manifest names (onnx, tensorrt, coreml), or None."""
    if not is_engine_dir(path):
        return None
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("target", "onnx")
    except (OSError, ValueError, AttributeError):
        return "onnx"  # open_engine reports the broken manifest


def default_backend(path: str | Path) -> str:
    """torch for a model directory; for an engine directory, the backend of its target."""
    return {None: "torch", "tensorrt": "tensorrt", "coreml": "coreml"}.get(engine_target(path), "onnxruntime")


def backend_options(path: str | Path, backend: str | None, *, progress: bool, capacity: int | None = None,
                    device: str | None = None, threads: int | None = None, max_batch: int = 1,
                    dtype: str | None = None, compile: bool = False) -> tuple[str, dict]:
    """The backend a command line asks for and its options: ``device`` (when given: each backend
    has its own default) and ``max_batch`` for every backend; ``threads`` for onnxruntime;
    ``dtype`` (fp32 | bf16 | fp16) and ``compile`` for torch — an engine's precision is fixed
    when it is exported."""
    backend = backend or default_backend(path)
    options: dict = {"progress": progress, "max_batch": max_batch}
    if device:
        options["device"] = device
    if capacity:
        options["capacity"] = capacity
    if threads and backend != "onnxruntime":
        raise VoxtralError("--threads applies to the onnxruntime backend")
    if (dtype or compile) and backend != "torch":
        raise VoxtralError(f"--{'dtype' if dtype else 'compile'} applies to the torch backend "
                           "(an engine's precision is chosen at export)")
    if backend == "onnxruntime":
        options["threads"] = threads
    if backend == "torch" and dtype:
        options["dtype"] = dtype
    if backend == "torch" and compile:
        options["compile"] = True
    return backend, options


def create_backend(path: str | Path, backend: str | None = None, **options) -> Inference:
    """The backend for a model directory or an engine directory.

    - ``torch`` (model directories): options ``capacity``, ``device`` (cpu | cuda), ``dtype``
      (compute: fp32 on CPU, bf16 on CUDA by default), ``max_batch``, ``cuda_graphs``,
      ``weight_dtype``, ``progress``.
    - ``onnxruntime``: an engine directory, or a model directory exported once to the engine
      cache and reused (see :func:`cached_engine`); options ``capacity``, ``device``
      (cpu | cuda | tensorrt), ``threads``, ``progress``.
    """
    path = Path(path)
    backend = backend or default_backend(path)
    if backend not in BACKENDS:
        raise VoxtralError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    if backend == "torch":
        if is_engine_dir(path):
            raise VoxtralError(f"{path}: is an engine directory; the torch backend needs a model directory")
        from ..model.backend import TorchInference

        return TorchInference.from_model_dir(path, **options)
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTInference

        return TensorRTInference.from_path(path, **options)
    if backend == "coreml":
        from .coreml_backend import CoreMLInference

        return CoreMLInference.from_path(path, **options)
    from .onnx_backend import OnnxInference

    progress = options.pop("progress", True)
    engine = open_engine(path) if is_engine_dir(path) else cached_engine(path, progress=progress)
    return OnnxInference(engine, **options)


def cache_root() -> Path:
    return Path(os.environ.get("VOXTRAL_TTS_CACHE", Path.home() / ".cache" / "voxtral-tts"))


def cached_engine(model_dir: str | Path, precision: str = "fp32", progress: bool = True) -> Engine:
    """The ONNX engine of a model directory, exported on first use into the cache directory
    (``$VOXTRAL_TTS_CACHE``, default ``~/.cache/voxtral-tts``) and reused while the model's
    params.json, checkpoint header and tokenizer are unchanged. Exporting needs torch and onnx."""
    from ..checkpoint import checkpoint_identity
    from ..engine import FORMAT_VERSION, check_engine_matches, sha256_file

    model_dir = Path(model_dir)
    config = ModelConfig.from_file(model_dir)
    identity = {"params_sha256": config.params_sha256, "checkpoint_sha256": checkpoint_identity(model_dir),
                "tekken_sha256": sha256_file(model_dir / "tekken.json")}
    key = "-".join(identity[k][:12] for k in sorted(identity)) + f"-onnx-{precision}-v{FORMAT_VERSION}"
    target = cache_root() / "engines" / key
    if is_engine_dir(target):
        engine = open_engine(target)
        check_engine_matches(engine, identity)
        log.info("using the cached engine %s", target)
        return engine
    try:
        from ..export.build import build_engine
    except ImportError as exc:
        raise VoxtralError(
            f"{model_dir}: exporting a model directory for onnxruntime needs the export extras "
            f"(pip install 'voxtral-tts[export]'): {exc}"
        ) from None
    log.info("first use of %s with onnxruntime: exporting to %s", model_dir, target)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    build_engine(model_dir, staging, precision=precision, progress=progress)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return open_engine(target)


def load(path: str | Path, backend: str | None = None, **options) -> TTS:
    """Load a model directory (params.json, consolidated.safetensors, tekken.json, voice_embedding/)
    or an engine directory (``voxtral-export``). ``backend``: ``torch`` or ``onnxruntime``; by
    default onnxruntime for engine directories and torch for model directories."""
    _, tokenizer, voices = read_model_dir(path)
    return TTS(create_backend(path, backend, **options), tokenizer, voices)
