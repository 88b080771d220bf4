"""The torch-free runtime: decode loop, backends interface, the TTS API and ``voxtral-run``."""
