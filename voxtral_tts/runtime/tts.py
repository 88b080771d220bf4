"""The embedding API's object: :class:`TTS`, a backend with its tokenizer, voices and scheduler.

:class:`TTS` owns what every backend shares — tokenizer, voices, prompt construction — and runs
every request through its :class:`.scheduler.Scheduler` (the one request path). Torch-free: a
backend's engine library is imported only when that backend is opened (``voxtral_tts.load``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..config import ModelConfig
from ..engine import check_not_partial_engine
from ..errors import TextError, VoxtralError
from ..normalize import normalize_text, resolve_language
from ..text import MAX_CHUNK_CHARS, check_text, split_text
from ..tokenizer import Tekken
from ..voices import VOICE_DIR, Voice, VoiceBank
from .backend import Backend
from .codec import codec_audio
from .decoding import FINISHED_END, LIMIT_CAPACITY, NoiseSource, frame_budget
from .load_options import TTSOptions
from .prefix_cache import PrefixCache
from .scheduler import AudioChunk, Event, PartFinished, Request, RequestFailed, Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthesisResult:
    text: str
    voice: str
    prompt_ids: np.ndarray  # int64 [P]: ids fed to the backbone ([AUDIO] at the voice rows)
    codes: np.ndarray  # int64 [T, 37]: frames turned into audio, +2 offset
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
    """A backend with its tokenizer and voices, and the scheduler every request runs through.
    ``options``: the TTS's own (:class:`.load_options.TTSOptions`: the voice-prefix cache and its
    budget, the stream schedule); ``prefix_cache``: a :class:`.prefix_cache.PrefixCache` to use
    instead of one made from ``options`` (e.g. one shared by several TTS over one backend)."""

    def __init__(self, backend: Backend, tokenizer: Tekken, voice_bank: VoiceBank, options: TTSOptions | None = None,
                 prefix_cache: PrefixCache | None = None):
        options = options or TTSOptions()
        self.backend = backend
        self.config: ModelConfig = backend.config
        self.tokenizer = tokenizer
        self.voice_bank = voice_bank
        if prefix_cache is None and options.prefix_cache:
            prefix_cache = PrefixCache(options.prefix_cache_mb << 20)
        self.scheduler = Scheduler(backend, self.prompt, prefix_cache, options.stream_chunks)

    @property
    def voices(self) -> list[str]:
        return self.voice_bank.names

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def close(self) -> None:
        self.backend.close()

    # --- prompt ------------------------------------------------------------------------------------
    def prompt(self, text: str, voice: Voice) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [P] and embeddings [P, D]: text rows from the table, voice rows at [AUDIO]."""
        text_ids = self.tokenizer.encode(text)
        ids = np.asarray(self.tokenizer.speech_prompt(text_ids, voice.n_audio_tokens), dtype=np.int64)
        embeds = self.backend.embed_tokens(ids)
        audio_rows = ids == self.tokenizer.audio_id
        embeds[audio_rows] = voice.embedding  # replacement, in order (spec §4.2)
        return ids, embeds

    # --- requests ----------------------------------------------------------------------------------
    def request(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
                seed: int | None = None, noise: np.ndarray | None = None, max_chars: int | None = MAX_CHUNK_CHARS,
                streaming: bool = True, normalize: bool = True, language: str | None = None,
                temperature: float = 0.0) -> Request:
        """A checked :class:`Request` for the scheduler: the text (any length) normalised for speech
        in ``language`` — by default the voice's, English for a voice file (:mod:`..normalize`;
        ``normalize=False``: as given, only stripped of surrounding whitespace) — split into parts
        of ≤ ``max_chars`` characters at sentence ends (None: one part), the voice resolved, the
        noise fixed. ``temperature``: 0 (the default) takes the semantic code by argmax, as the
        reference does; above 0 (up to 2) it is sampled at that temperature, reproducibly for a
        seed or an explicit noise array (see :class:`.decoding.NoiseSource`)."""
        if seed is not None and noise is not None:
            raise VoxtralError("give either seed or noise, not both")
        text = check_text(text, max_chars=None)
        chosen = self.voice_bank.get(voice)
        if normalize:
            said = normalize_text(text, language or chosen.language or "en")
            if said != text:
                log.debug("normalised for speech: %r", said[:200])
            try:
                text = check_text(said, max_chars=None)
            except VoxtralError:
                raise TextError("text is empty once normalised for speech (only symbols or emoji?); "
                                "normalize=False / --no-normalize speaks it as given") from None
        elif language is not None:
            resolve_language(language)  # an unknown language is still an error
        parts = [text] if max_chars is None else split_text(text, max_chars)
        if len(parts) > 1:
            log.info("text of %d characters split into %d parts", len(text), len(parts))
        source = NoiseSource(self.config.audio.n_acoustic_codebook, seed=seed, noise=noise, temperature=temperature,
                             logits=self.config.audio.semantic_head_rows)
        for i, part in enumerate(parts):  # every part must fit the cache before anything is generated
            prompt_len = self.tokenizer.speech_prompt_length(part, chosen.n_audio_tokens)
            try:
                frame_budget(self.backend.capacity, prompt_len, max_frames, source, len(part))
            except VoxtralError as exc:
                if len(parts) == 1:
                    raise
                raise type(exc)(f"part {i + 1} of {len(parts)}: {exc}") from None
        return Request(text, tuple(parts), chosen, source, max_frames, streaming)

    def events(self, request: Request, cancelled: Callable[[], bool] | None = None) -> Iterator[Event]:
        """Run ``request`` through the scheduler and yield its typed events."""
        return self.scheduler.run(request, cancelled)

    # --- generation --------------------------------------------------------------------------------
    def generate(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
                 seed: int | None = None, noise: np.ndarray | None = None, normalize: bool = True,
                 language: str | None = None, temperature: float = 0.0) -> SynthesisResult:
        """Synthesise one prompt. ``noise`` [max_frames, 36] fixes x0 per frame; ``seed`` alone also
        makes the output reproducible (row n of ``default_rng(seed).standard_normal``). ``normalize``
        / ``language`` / ``temperature``: see :meth:`request`."""
        return self._synthesize(self.request(text, voice, max_frames, seed, noise, max_chars=None, streaming=False,
                                             normalize=normalize, language=language, temperature=temperature))

    def synthesize(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
                   seed: int | None = None, noise: np.ndarray | None = None,
                   max_chars: int = MAX_CHUNK_CHARS, normalize: bool = True,
                   language: str | None = None, temperature: float = 0.0) -> SynthesisResult:
        """Like :meth:`generate`, for text of any length: parts of ≤ ``max_chars`` characters cut at
        sentence ends, each generated with a fresh prompt (``max_frames`` applies per part), the
        audio concatenated; progress is logged part by part. Noise continues across parts. (To
        write a long text to a file without holding its audio, iterate :meth:`events`.)"""
        return self._synthesize(self.request(text, voice, max_frames, seed, noise, max_chars, streaming=False,
                                             normalize=normalize, language=language, temperature=temperature))

    def stream(self, text: str, voice: str | Path | None = None, max_frames: int | None = None,
               seed: int | None = None, noise: np.ndarray | None = None,
               max_chars: int = MAX_CHUNK_CHARS, cancelled: Callable[[], bool] | None = None,
               normalize: bool = True, language: str | None = None, temperature: float = 0.0) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks as frames are produced, on the scheduler's stream schedule
        (by default the first after 2 frames — 160 ms of audio — then 3 more, then every 5 frames
        up to 25, then every 25). Each chunk is decoded with up to 25
        frames of left context, so the chunks concatenate to :meth:`synthesize`'s audio (same
        arguments) up to float rounding. Long text is streamed part by part. ``cancelled`` is
        polled every frame; when it returns True, :class:`.scheduler.Cancelled` is raised."""
        request = self.request(text, voice, max_frames, seed, noise, max_chars, streaming=True, normalize=normalize,
                               language=language, temperature=temperature)
        for event in self.events(request, cancelled):
            if isinstance(event, AudioChunk):
                yield event.audio
            elif isinstance(event, RequestFailed):
                raise event.error

    def _synthesize(self, request: Request) -> SynthesisResult:
        started = time.perf_counter()
        audio: dict[int, np.ndarray] = {}
        parts: list[SynthesisResult] = []
        seed = request.noise.seed
        for event in self.events(request):
            if isinstance(event, AudioChunk):
                audio[event.part] = event.audio
            elif isinstance(event, PartFinished):
                self.warn_if_cut(event, len(request.parts))
                parts.append(SynthesisResult(
                    text=event.text, voice=request.voice.name, prompt_ids=event.prompt_ids, codes=event.codes,
                    audio=audio.pop(event.part, np.zeros(0, np.float32)), sample_rate=self.sample_rate,
                    finished=event.finish_reason == FINISHED_END, seed=seed))
                if len(request.parts) > 1:
                    log.info("part %d of %d done: %.1f s of audio so far", len(parts), len(request.parts),
                             sum(r.duration for r in parts))
            elif isinstance(event, RequestFailed):
                raise event.error
        elapsed = time.perf_counter() - started
        if len(parts) == 1:
            result = parts[0]
        else:
            result = SynthesisResult(
                text=request.text, voice=request.voice.name,
                prompt_ids=np.concatenate([r.prompt_ids for r in parts]),
                codes=np.concatenate([r.codes for r in parts]), audio=np.concatenate([r.audio for r in parts]),
                sample_rate=self.sample_rate, finished=all(r.finished for r in parts), seed=seed, parts=tuple(parts))
        log.info("%d frames (%.2f s of audio) in %.2f s, voice %s", result.n_frames, result.duration, elapsed,
                 request.voice.name)
        return result

    @staticmethod
    def warn_if_cut(event: PartFinished, n_parts: int) -> None:
        """A part with no audio, or stopped at its frame budget before END_AUDIO: a warning naming the limit."""
        if event.codes.shape[0] == 0:
            log.warning("END_AUDIO at the first frame: no audio for %r", event.text[:60])
        if event.finish_reason != FINISHED_END:
            log.warning("part %d of %d stopped at its frame budget (%d frames, the %s limit) before END_AUDIO: its "
                        "audio is cut%s", event.part + 1, n_parts, len(event.codes), event.limit,
                        "; raise --max-frames / max_frames to allow more" if event.limit != LIMIT_CAPACITY
                        else "; raise --capacity to allow more")

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [T, 37] (+2 offset) → float32 waveform [T · 1920]: the codec, chunked with left context."""
        codes = np.asarray(codes, dtype=np.int64)
        n_codebooks = self.config.audio.num_codebooks
        if codes.ndim != 2 or codes.shape[1] != n_codebooks:
            raise VoxtralError(f"codes must be [frames, {n_codebooks}], got shape {list(codes.shape)}")
        return codec_audio(self.backend.codec, codes, self.config.samples_per_frame)


def read_model_dir(path: str | Path) -> tuple[ModelConfig, Tekken, VoiceBank]:
    """The light parts of a model or engine directory — config, tokenizer, voices — without weights."""
    path = Path(path)
    if not path.is_dir():
        raise VoxtralError(f"{path}: not a directory (expected a model or engine directory)")
    check_not_partial_engine(path)
    config = ModelConfig.from_file(path)
    tokenizer = Tekken.from_file(path)
    tokenizer.check_config(config.audio)
    voices = VoiceBank(path / VOICE_DIR, tokenizer.voice_num_audio_tokens, config.backbone.dim, config.voices)
    return config, tokenizer, voices
