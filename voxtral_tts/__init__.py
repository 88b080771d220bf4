"""voxtral-tts: export and run Mistral's Voxtral-4B-TTS-2603.

    import voxtral_tts
    tts = voxtral_tts.load("path/to/Voxtral-4B-TTS-2603", backend="torch")
    result = tts.generate("Hello world.", voice="neutral_female", seed=0)
    result.audio  # float32, 24 kHz

Importing this package never imports torch; the torch backend is loaded on demand.
"""

from .api import load
from .errors import VoxtralError
from .runtime.options import SpeechOptions
from .runtime.results import SynthesisResult
from .runtime.tts import TTS

__version__ = "0.1.0"
__all__ = ["load", "TTS", "SpeechOptions", "SynthesisResult", "VoxtralError", "__version__"]
