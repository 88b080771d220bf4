"""voxtral-tts: export and run Mistral's Voxtral-4B-TTS-2603.

    import voxtral_tts
    tts = voxtral_tts.load("path/to/Voxtral-4B-TTS-2603", backend="torch")
    result = tts.generate("Hello world.", voice="neutral_female", seed=0)
    result.audio  # float32, 24 kHz

Importing this package never imports torch; the torch backend is loaded on demand, and so are
``voice_from_codes`` and ``create_voice`` (:mod:`voxtral_tts.voice_create`).
"""

from .api import load
from .errors import VoxtralError
from .runtime.options import SpeechOptions
from .runtime.results import SynthesisResult
from .runtime.tts import TTS

__version__ = "0.1.0"
__all__ = ["load", "TTS", "SpeechOptions", "SynthesisResult", "VoxtralError", "create_voice", "voice_from_codes",
           "__version__"]
_LAZY = {"create_voice", "voice_from_codes"}


def __getattr__(name: str):
    """``create_voice`` and ``voice_from_codes``, imported on first use."""
    if name in _LAZY:
        from . import voice_create

        return getattr(voice_create, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
