"""What a caller chooses for one request, typed and checked once: :class:`SpeechOptions` (as
whisper's ``DecodingOptions``). ``TTS.generate`` / ``synthesize`` / ``stream`` / ``request`` take one,
or keyword fields that build one; ``voxtral-run`` builds it from its flags and the speech server
from its request body. A bad field is an :class:`~voxtral_tts.errors.OptionError` naming it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..errors import OptionError, VoxtralError
from ..normalize import resolve_language
from ..text import MAX_CHUNK_CHARS
from ..voices import Voice
from .guidance import check_expressiveness
from .noise import check_temperature

#: the seed's range: numpy's generators take any integer ≥ 0; 2^63 keeps it a signed 64-bit value
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SpeechOptions:
    """``voice``: a preset name, an OpenAI alias, a ``.pt`` / ``.safetensors`` file or a resolved
    :class:`~voxtral_tts.voices.Voice` (None: the default voice). ``seed`` fixes the noise (None: a
    fresh one, reported in the result); ``noise`` [frames, 36] gives x0 per frame instead (rows
    continue across the parts of a long text). ``temperature``: 0 takes the semantic code by argmax,
    as the reference does; above 0 (up to 2) it is sampled, reproducibly for a seed or a noise
    array. ``max_frames``: the cap on frames per part (None: 50 + 4 per character of the part, at
    most 2048). ``normalize``: rewrite numbers, dates, markdown… as words of ``language`` (None: the
    voice's; English for a voice file) before speaking. ``part_chars``: long text is spoken in parts
    of at most this many characters, cut at sentence ends (None: one part, whatever its length).
    ``expressiveness``: the flow head's classifier-free guidance scale, from 1.0 (none) to 100 (None:
    the checkpoint's ``cfg_alpha``, 1.2 for the release); higher pushes each frame further toward
    the prediction conditioned on the voice and text."""

    voice: str | Path | Voice | None = None
    seed: int | None = None
    noise: np.ndarray | None = field(default=None, repr=False, compare=False)
    temperature: float = 0.0
    max_frames: int | None = None
    normalize: bool = True
    language: str | None = None
    part_chars: int | None = MAX_CHUNK_CHARS
    expressiveness: float | None = None

    def __post_init__(self):
        if self.seed is not None and self.noise is not None:
            raise OptionError("seed", "", sentence="give either seed or noise, not both")
        if self.seed is not None and not _whole(self.seed, 0, MAX_SEED):
            raise OptionError("seed", f"must be between 0 and 2^63 - 1, got {self.seed}")
        object.__setattr__(self, "temperature", check_temperature(self.temperature))
        if self.max_frames is not None and not _whole(self.max_frames, 1):
            raise OptionError("max_frames", f"must be at least 1, got {self.max_frames}")
        if self.part_chars is not None and not _whole(self.part_chars, 1):
            raise OptionError("part_chars", f"must be at least 1, got {self.part_chars}")
        if not isinstance(self.normalize, bool):
            raise OptionError("normalize", f"must be true or false, got {self.normalize!r}")
        if self.expressiveness is not None:
            object.__setattr__(self, "expressiveness", check_expressiveness(self.expressiveness))
        if self.language is not None:  # an unknown one: the normaliser's TextError, naming the languages
            object.__setattr__(self, "language", resolve_language(self.language))

    @classmethod
    def build(cls, options: "SpeechOptions | None" = None, **fields_) -> "SpeechOptions":
        """``options``, or options made of the keyword fields (an unknown name is one error line);
        both together: the fields replace those of ``options``."""
        unknown = sorted(set(fields_) - {f.name for f in fields(cls)})
        if unknown:
            raise VoxtralError(f"unknown speech option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                               f"the options are {', '.join(f.name for f in fields(cls))}")
        if options is None:
            return cls(**fields_)
        if not isinstance(options, cls):
            raise VoxtralError(f"options must be SpeechOptions, got {type(options).__name__} (pass the voice as "
                               "voice=…)")
        return replace(options, **fields_) if fields_ else options


def _whole(value, lowest: int, highest: int | None = None) -> bool:
    """An integer (not a bool) within [lowest, highest]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return False
    return lowest <= value and (highest is None or value <= highest)
