"""The embedding API's object: :class:`TTS`, a backend with its tokenizer, voices and scheduler.

:class:`TTS` owns what every backend shares — tokenizer, voices, prompt construction — and runs
every request through its :class:`.scheduler.Scheduler` (the one request path). Torch-free: a
backend's engine library is imported only when that backend is opened (``voxtral_tts.load``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Union

import numpy as np

from ..config import ModelConfig
from ..engine import check_not_partial_engine
from ..errors import NormalisedToNothing, VoxtralError
from ..normalize import normalize_text
from ..segmenter import RESPONSIVE
from ..text import CheckedText, check_text, split_text
from ..tokenizer import Tekken
from ..voices import VOICE_DIR, Voice, VoiceBank
from .backend import Backend
from .codec import codec_audio
from .decoding import frame_budget
from .load_options import TTSOptions
from .noise import NoiseSource
from .options import SpeechOptions
from .prefix_cache import PrefixCache
from .request import Event, Request, RequestDone, RequestFailed
from .results import Collector, SynthesisResult
from .scheduler import Scheduler
from .text_stream import TextStream

log = logging.getLogger(__name__)

#: what :meth:`TTS.synthesize_many` takes: a text, or a text and its own options
Item = Union[str, "tuple[str, SpeechOptions]"]
#: what :meth:`TTS.stream_text` takes: pieces of text, as they are written
Pieces = Union[Iterable[str], AsyncIterable[str]]


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
    def request(self, text: str, options: SpeechOptions | None = None, /, *, streaming: bool = True,
                **fields) -> Request:
        """A checked :class:`Request` for the scheduler, from ``text`` (any length) and the
        :class:`.options.SpeechOptions` (or keyword fields that build them): the text normalised
        for speech in the options' language — by default the voice's, English for a voice file
        (:mod:`..normalize`; ``normalize=False``: as given, only stripped of surrounding
        whitespace) —, split into parts of ≤ ``part_chars`` characters at sentence ends, the voice
        resolved, the noise fixed, every part checked against the KV cache before anything is
        generated. ``streaming``: audio in chunks as frames arrive rather than one piece per part."""
        options = SpeechOptions.build(options, **fields)
        text = text if isinstance(text, CheckedText) else check_text(text, max_chars=None)
        voice = self.resolve_voice(options)
        text = self.said(text, options, voice)
        parts = [text] if options.part_chars is None else split_text(text, options.part_chars)
        if len(parts) > 1:
            log.info("text of %d characters split into %d parts", len(text), len(parts))
        source = self.noise_source(options)
        for i, part in enumerate(parts):  # every part must fit the cache before anything is generated
            try:
                self.check_part(part, voice, options, source)
            except VoxtralError as exc:
                if len(parts) == 1:
                    raise
                raise type(exc)(f"part {i + 1} of {len(parts)}: {exc}") from None
        self.check_expressiveness(options)
        return Request(text, tuple(parts), voice, source, options.max_frames, streaming, options.expressiveness)

    # the steps of a request, each once (also for an open request: :class:`.text_stream.TextStream`)
    def resolve_voice(self, options: SpeechOptions) -> Voice:
        """The options' voice, resolved (a name, an alias, a file or a :class:`Voice`)."""
        return options.voice if isinstance(options.voice, Voice) else self.voice_bank.get(options.voice)

    def said(self, text: str, options: SpeechOptions, voice: Voice) -> CheckedText:
        """``text`` as it is spoken: normalised in the options' language (else the voice's, else
        English) unless ``normalize`` is off; NormalisedToNothing when nothing is left to say."""
        if not options.normalize:
            return check_text(text, max_chars=None)
        said = normalize_text(text, self.language_of(options, voice))
        if said != text:
            log.debug("normalised for speech: %r", said[:200])
        try:
            return check_text(said, max_chars=None)
        except VoxtralError:
            raise NormalisedToNothing("text is empty once normalised for speech (only symbols or emoji?); "
                            "normalize=False / --no-normalize speaks it as given") from None

    @staticmethod
    def language_of(options: SpeechOptions, voice: Voice) -> str:
        return options.language or voice.language or "en"

    def noise_source(self, options: SpeechOptions) -> NoiseSource:
        """The request's noise source (its parts draw from it: :meth:`.noise.NoiseSource.for_part`)."""
        return NoiseSource(self.config.audio.n_acoustic_codebook, seed=options.seed, noise=options.noise,
                           temperature=options.temperature, logits=self.config.audio.semantic_head_rows)

    def check_expressiveness(self, options: SpeechOptions) -> None:
        """The engine can run the options' guidance scale, or the OptionError (before anything is generated)."""
        if options.expressiveness is not None and options.expressiveness != self.config.flow.cfg_alpha:
            self.backend.check_guidance(options.expressiveness)

    def check_part(self, part: str, voice: Voice, options: SpeechOptions, source: NoiseSource) -> None:
        """A part fits the KV cache (and the noise rows) with the options' frame cap, or the error."""
        prompt_len = self.tokenizer.speech_prompt_length(part, voice.n_audio_tokens)
        frame_budget(self.backend.capacity, prompt_len, options.max_frames, source, len(part))

    def events(self, request: Request, cancelled: Callable[[], bool] | None = None) -> Iterator[Event]:
        """Run ``request`` through the scheduler and yield its typed events."""
        return self.scheduler.run(request, cancelled)

    def collector(self, request: Request, keep_audio: bool = False, log_parts: bool = False) -> Collector:
        """The one consumer of ``request``'s events (:class:`.results.Collector`)."""
        return Collector(request, self.sample_rate, keep_audio, log_parts)

    # --- generation --------------------------------------------------------------------------------
    def generate(self, text: str, options: SpeechOptions | None = None, /, **fields) -> SynthesisResult:
        """Synthesise ``text`` from one prompt, whatever its length (``part_chars`` does not apply).
        ``noise`` [max_frames, 36] fixes x0 per frame; ``seed`` alone also makes the output
        reproducible (row n of ``default_rng(seed).standard_normal``). The options:
        :class:`.options.SpeechOptions`, given whole or as keyword fields."""
        options = SpeechOptions.build(options, **fields)
        return self._synthesize(self.request(text, replace(options, part_chars=None), streaming=False))

    def synthesize(self, text: str, options: SpeechOptions | None = None, /, **fields) -> SynthesisResult:
        """Like :meth:`generate`, for text of any length: parts of ≤ ``part_chars`` characters cut at
        sentence ends, each generated with a fresh prompt (``max_frames`` applies per part), the
        audio concatenated; progress is logged part by part. The parts run side by side in free
        decoding slots, each with noise of its own from the seed and its index (explicit ``noise``
        rows: the parts one after another, each taking the next rows). (To
        write a long text to a file without holding its audio, see ``voxtral-run``: a
        :meth:`collector` over :meth:`events`.)"""
        return self._synthesize(self.request(text, options, streaming=False, **fields))

    def stream(self, text: str, options: SpeechOptions | None = None, /,
               cancelled: Callable[[], bool] | None = None, **fields) -> Iterator[np.ndarray]:
        """Yield float32 audio chunks as frames are produced, on the scheduler's stream schedule
        (by default the first after 2 frames — 160 ms of audio — then 3 more, then every 5 frames
        up to 25, then every 25). Each chunk is decoded with up to 25
        frames of left context, so the chunks concatenate to :meth:`synthesize`'s audio (same
        options) up to float rounding. Long text is streamed part by part. ``cancelled`` is
        polled every frame; when it returns True, :class:`.request.Cancelled` is raised."""
        request = self.request(text, options, streaming=True, **fields)
        yield from self.collector(request).audio(self.events(request, cancelled))

    def stream_text(self, pieces: Pieces, options: SpeechOptions | None = None, /, *, mode: str = RESPONSIVE,
                    cancelled: Callable[[], bool] | None = None,
                    **fields) -> Iterator[np.ndarray] | AsyncIterator[np.ndarray]:
        """Speak text while it is still being written: ``pieces`` (an iterable, or an async
        iterable, of text pieces — an LLM's tokens) are cut into segments as soon as each is
        complete (:mod:`voxtral_tts.segmenter`, ``mode`` ``responsive`` or ``long_form``), and
        each segment becomes the next part of ONE request in the scheduler while later text is
        still arriving; float32 audio chunks are yielded as they are made, part after part, as
        :meth:`stream` yields them. The end of ``pieces`` speaks what is left. An iterable is read
        on a thread of its own (a slow producer never stalls the audio) and an iterator is
        returned; an async iterable is read on the caller's event loop and an async iterator is
        returned. The segments do not depend on how the text is split into pieces or when they
        arrive, and each part's noise comes from the seed and the part's index, so for a fixed
        ``seed`` the audio does not depend on the timing either. An error in ``pieces`` (or a
        segment that cannot be spoken) ends the stream with that error; stopping the iteration
        early (or ``cancelled``) takes the request out."""
        stream = TextStream(self, SpeechOptions.build(options, **fields), mode)
        if isinstance(pieces, str):
            pieces = (pieces,)
        if hasattr(pieces, "__aiter__"):
            return stream.audio_async(pieces, cancelled)
        return stream.audio(pieces, cancelled)

    def synthesize_many(self, items: Iterable[Item], options: SpeechOptions | None = None, *,
                        return_exceptions: bool = False) -> Iterator[tuple[int, SynthesisResult | Exception]]:
        """Synthesise many texts through the one scheduler, the decode batch kept full, and yield
        ``(index, result)`` as each finishes (not in order). ``items``: texts (spoken with
        ``options``) or ``(text, SpeechOptions)`` pairs (their own options, whole). Items are read
        lazily, a few more than the backend has decoding slots ahead, so a long iterable is fine.
        A bad item (unknown voice, empty text, a part over the cache…) raises its error, the other
        requests taken out — or with ``return_exceptions`` is yielded as ``(index, error)`` and the
        rest go on. Stopping the iteration early takes the unfinished requests out."""
        default = SpeechOptions.build(options)
        pending = enumerate(items)
        ahead = 2 * self.backend.max_batch
        live: dict[Request, tuple[int, Collector]] = {}
        try:
            while True:
                while len(live) < ahead and (nxt := next(pending, None)) is not None:
                    index, item = nxt
                    text, item_options = item if isinstance(item, tuple) else (item, default)
                    try:
                        request = self.request(text, item_options, streaming=False)
                    except VoxtralError as exc:
                        if not return_exceptions:
                            raise
                        yield index, exc
                        continue
                    live[request] = (index, self.collector(request, keep_audio=True))
                    self.scheduler.submit(request)
                if not live:
                    return
                for event in self.scheduler.step():
                    if event.request not in live:  # another caller's request on this scheduler
                        continue
                    index, collector = live[event.request]
                    collector.take(event)
                    if isinstance(event, RequestDone):
                        del live[event.request]
                        yield index, collector.result()
                    elif isinstance(event, RequestFailed):
                        del live[event.request]
                        if not return_exceptions:
                            raise event.error
                        yield index, event.error
        finally:
            for request in live:
                self.scheduler.abort(request)

    def _synthesize(self, request: Request) -> SynthesisResult:
        started = time.perf_counter()
        collector = self.collector(request, keep_audio=True, log_parts=True)
        for _ in collector.audio(self.events(request)):
            pass
        result = collector.result()
        log.info("%d frames (%.2f s of audio) in %.2f s, voice %s", result.n_frames, result.duration,
                 time.perf_counter() - started, request.voice.name)
        return result

    def codes_to_audio(self, codes: np.ndarray) -> np.ndarray:
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
