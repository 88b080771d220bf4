"""The runtime's numbers, in one place: every backend, the scheduler, export and the CLIs read them here."""

from __future__ import annotations

#: Sequences decoded together at most (cache slots); the exported graphs' largest batch.
MAX_BATCH = 64
#: KV-cache positions (prompt + frames) when none is given.
DEFAULT_CAPACITY = 4096
#: Generated-frame cap per text part when none is given (the reference deploy config's max_tokens).
DEFAULT_MAX_FRAMES = 2048
#: Without an explicit cap a part may also run to FRAME_FLOOR + FRAMES_PER_CHARACTER × its length in
#: characters (code points, not bytes): published measurements of this model are 0.76–1.17 frames
#: per character across voices, so this is 3.4× the slowest speech plus 4 s — a model that never
#: emits END_AUDIO stops there instead of holding a decoding slot for 164 s of audio.
FRAMES_PER_CHARACTER = 4
FRAME_FLOOR = 50
#: Codec calls: new frames per chunk and frames of left context (≥ the codec's ~21-frame receptive
#: field, spec §7.7), so that chunked audio equals a one-shot codec call.
CODEC_CHUNK_FRAMES = 50
CODEC_CONTEXT_FRAMES = 25
#: The longest codec call the runtime makes: the fixed input of a fixed-shape codec (TensorRT, Core ML).
CODEC_FRAMES = CODEC_CHUNK_FRAMES + CODEC_CONTEXT_FRAMES
#: Streaming: new frames in each streamed chunk, the last repeating — audio after the first 2
#: frames (160 ms), 3 more, then every 5 frames up to 25, then every 25.
STREAM_CHUNKS = (2, 3, 5, 5, 5, 5, 25)
#: The voice-prefix KV cache's default budget in MiB: room for every preset — the 20 voices'
#: prefixes (70 to 221 positions) of the full-size model take 605 MiB in float32, half in bf16.
DEFAULT_PREFIX_CACHE_MB = 1024
#: Sampling of the semantic code: 0 is the reference's argmax (greedy); above 0 a draw from
#: softmax(logits / temperature), up to this.
MAX_TEMPERATURE = 2.0
