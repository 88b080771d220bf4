"""The embedding API: ``voxtral_tts.load(path, backend=...)`` → :class:`TTS`.

:class:`TTS` owns the parts every backend shares — tokenizer, voices, prompt construction, the
decode loop, chunked codec decoding — and drives an :class:`Inference` backend. Torch-free: the
torch backend is imported only when asked for.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import VoxtralError
from ..text import MAX_CHUNK_CHARS, check_text, split_text
from ..tokenizer import Tekken
from ..voices import VOICE_DIR, Voice, VoiceBank
from .decoding import Inference, NoiseSource, decode_codes, frame_budget, generate_frames

log = logging.getLogger(__name__)

BACKENDS = ("torch",)


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


def read_model_dir(path: str | Path) -> tuple[ModelConfig, Tekken, VoiceBank]:
    """The light parts of a model directory — config, tokenizer, voices — without any weights."""
    path = Path(path)
    if not path.is_dir():
        raise VoxtralError(f"{path}: not a directory (expected a model directory)")
    config = ModelConfig.from_file(path)
    tokenizer = Tekken.from_file(path)
    voices = VoiceBank(path / VOICE_DIR, tokenizer.voice_num_audio_tokens, config.backbone.dim, config.voices)
    return config, tokenizer, voices


def create_backend(path: str | Path, backend: str = "torch", **options) -> Inference:
    if backend not in BACKENDS:
        raise VoxtralError(f"unknown backend '{backend}'; available: {', '.join(BACKENDS)}")
    from ..model.backend import TorchInference

    return TorchInference.from_model_dir(path, **options)


def load(path: str | Path, backend: str = "torch", **options) -> TTS:
    """Load a model directory (params.json, consolidated.safetensors, tekken.json, voice_embedding/).

    ``backend="torch"``: the PyTorch reference (options: ``capacity``, ``device``, ``weight_dtype``,
    ``progress``).
    """
    _, tokenizer, voices = read_model_dir(path)
    return TTS(create_backend(path, backend, **options), tokenizer, voices)
