"""OpenAI-compatible HTTP server pieces: audio encoding for `/v1/audio/speech` responses."""
