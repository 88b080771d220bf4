"""Errors a user can cause: each carries one clear line, shown without a traceback by the CLIs."""


class VoxtralError(Exception):
    """Base class for every error caused by input (files, text, voices, options)."""


class ConfigError(VoxtralError):
    """params.json is missing, unreadable or lacks a required field."""


class CheckpointError(VoxtralError):
    """consolidated.safetensors is missing, truncated, or does not match params.json."""


class TokenizerError(VoxtralError):
    """tekken.json is missing or malformed."""


class VoiceError(VoxtralError):
    """Unknown voice, unreadable voice file, or a voice that does not fit the model."""


class TextError(VoxtralError):
    """Empty or too-long input text."""


class CapacityError(VoxtralError):
    """A request needs more positions than the KV cache was built for."""


class EngineError(VoxtralError):
    """An engine directory is incomplete, from another version, or built for another model."""
