"""Test support: random checkpoints in the released format, of any size, for tests, demos and
benchmarks; and helpers that drive a backend one sequence at a time (:func:`step_one`,
:func:`flow_one`) or wrap it (:class:`Forwarding`).

:func:`write_random_model` writes a complete model directory — ``params.json`` with the real
field layout, ``consolidated.safetensors`` with the real key names (BF16, streamed tensor by
tensor so a full-size 8 GB file needs little memory), a v7 ``tekken.json`` and voice embeddings
as ``.pt`` (when torch is importable) and ``.safetensors``. Weights are random: the audio is noise,
but the arithmetic and the cost are those of the real model. Torch-free except for the ``.pt``
voice files.

    python -m voxtral_tts.testing OUT_DIR [--size tiny|full] [--seed 0] [--vocab bytes|tekken]
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import logging
import socket
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT_FILE, expected_tensors
from .config import ModelConfig
from .errors import VoxtralError
from .reporting import STEPS_FORMAT
from .runtime.backend import Backend
from .tensors import float32_to_bf16, write_safetensors
from .voices import VOICE_DIR

log = logging.getLogger(__name__)

#: The released params.json (spec §1.1), the template every generated config starts from.
RELEASED_PARAMS: dict[str, Any] = {
    "dim": 3072, "n_layers": 26, "head_dim": 128, "hidden_dim": 9216, "n_heads": 32, "n_kv_heads": 8,
    "rope_theta": 1000000.0, "norm_eps": 1e-05, "vocab_size": 131072,
    "multimodal": {
        "bos_token_id": 1,
        "audio_model_args": {
            "semantic_codebook_size": 8192, "acoustic_codebook_size": 21, "n_acoustic_codebook": 36,
            "audio_encoding_args": {
                "codebook_pattern": "parallel", "interleave_audio_tokens_per_segment": 8192,
                "interleave_text_tokens_per_segment": 8192, "single_trailing_segment": False,
                "num_codebooks": 37, "sampling_rate": 24000, "frame_rate": 12.5,
            },
            "audio_token_id": 24, "begin_audio_token_id": 25, "input_embedding_concat_type": "sum",
            "acoustic_transformer_args": {
                "input_dim": 3072, "dim": 3072, "n_layers": 3, "head_dim": 128, "hidden_dim": 9216,
                "n_heads": 32, "n_kv_heads": 8, "use_biases": False, "rope_theta": 10000.0,
                "sigma": 1e-05, "sigma_max": 1.0,
            },
            "p_uncond": 0.0, "text_feature_bugged": False, "condition_dropped_token_id": 42,
        },
        "audio_tokenizer_args": {
            "channels": 1, "sampling_rate": 24000, "pretransform_patch_size": 240, "patch_proj_kernel_size": 7,
            "semantic_codebook_size": 8192, "semantic_dim": 256, "acoustic_codebook_size": 21, "acoustic_dim": 36,
            "conv_weight_norm": True, "causal": True, "attn_sliding_window_size": 16,
            "half_attn_window_upon_downsampling": True, "dim": 1024, "hidden_dim": 4096, "head_dim": 128,
            "n_heads": 8, "n_kv_heads": 8, "qk_norm_eps": 1e-06, "qk_norm": True, "use_biases": False,
            "norm_eps": 0.01, "layer_scale": True, "layer_scale_init": 0.01,
            "decoder_transformer_lengths_str": "2,2,2,2", "decoder_convs_kernels_str": "3,4,4,4",
            "decoder_convs_strides_str": "1,2,2,2",
            "voice": {},
        },
    },
    "max_seq_len": 65536, "model_type": "voxtral_tts", "max_position_embeddings": 128000,
}

#: The released voices and their [AUDIO] token counts (spec §4.4).
RELEASED_VOICES: dict[str, int] = {
    "casual_female": 214, "casual_male": 147, "cheerful_female": 132, "neutral_female": 218,
    "neutral_male": 169, "pt_male": 144, "pt_female": 175, "nl_male": 138, "nl_female": 146,
    "it_male": 168, "it_female": 172, "fr_male": 97, "fr_female": 97, "es_male": 208,
    "es_female": 138, "de_male": 163, "de_female": 147, "ar_male": 67, "hi_male": 94, "hi_female": 86,
}

#: Names of the special tokens the speech prompt uses (others are ``<SPECIAL_i>``), ids as released.
SPECIAL_TOKENS = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 24: "[AUDIO]",
                  25: "[BEGIN_AUDIO]", 35: "[REPEAT_AUDIO_TEXT]", 36: "[NEXT_AUDIO_TEXT]"}
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
    r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)


def tiny_params(
    dim: int = 64, n_layers: int = 2, head_dim: int = 16, hidden_dim: int = 128, n_heads: int = 4,
    n_kv_heads: int = 2, vocab_size: int = 2048, flow_layers: int = 2, codec_dim: int = 64,
    codec_heads: int = 4, semantic_dim: int = 32, voices: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A params.json dict in the released layout with small sizes (codebooks keep their real sizes)."""
    params = copy.deepcopy(RELEASED_PARAMS)
    params.update(dim=dim, n_layers=n_layers, head_dim=head_dim, hidden_dim=hidden_dim, n_heads=n_heads,
                  n_kv_heads=n_kv_heads, vocab_size=vocab_size)
    flow = params["multimodal"]["audio_model_args"]["acoustic_transformer_args"]
    flow.update(input_dim=dim, dim=dim, n_layers=flow_layers, head_dim=head_dim, hidden_dim=hidden_dim,
                n_heads=n_heads, n_kv_heads=n_kv_heads)
    codec = params["multimodal"]["audio_tokenizer_args"]
    codec.update(dim=codec_dim, hidden_dim=2 * codec_dim, head_dim=codec_dim // codec_heads, n_heads=codec_heads,
                 n_kv_heads=codec_heads, semantic_dim=semantic_dim)
    codec["voice"] = {name: i for i, name in enumerate(voices or {"neutral_female": 3, "casual_male": 5})}
    return params


def full_params() -> dict[str, Any]:
    params = copy.deepcopy(RELEASED_PARAMS)
    params["multimodal"]["audio_tokenizer_args"]["voice"] = {name: i for i, name in enumerate(RELEASED_VOICES)}
    return params


#: the vocabularies a generated tekken.json can have: every text byte one token, or the Tekken
#: vocabulary that mistral_common bundles (the released tokenizer's text tokens, spec §3: the same ids)
VOCABULARIES = ("bytes", "tekken")


def tekken_vocabulary() -> list[dict[str, Any]]:
    """The Tekken vocabulary bundled with mistral_common (``tekken_240911.json``: 150000 entries, the
    released tokenizer's regular tokens), so that a random model's prompts have the real token counts."""
    try:
        import mistral_common
    except ImportError:
        raise VoxtralError("the Tekken vocabulary comes from mistral_common, which is not installed: pip install "
                           "mistral-common (or --vocab bytes)") from None
    bundled = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    return json.loads(bundled.read_text(encoding="utf-8"))["vocab"]


def tekken_dict(vocab_size: int, voices: Mapping[str, int], n_special: int = 1000,
                vocabulary: str = "bytes") -> dict[str, Any]:
    """A v7 tekken.json with a byte-level vocabulary (256 entries: every text byte is one token) or,
    with ``vocabulary="tekken"``, the released tokenizer's (:func:`tekken_vocabulary`)."""
    if vocabulary not in VOCABULARIES:
        raise VoxtralError(f"unknown vocabulary '{vocabulary}'; choose one of {', '.join(VOCABULARIES)}")
    if vocabulary == "tekken":
        vocab = tekken_vocabulary()
    else:
        vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": chr(i)}
                 for i in range(256)]
    specials = [{"rank": i, "token_str": SPECIAL_TOKENS.get(i, f"<SPECIAL_{i}>"), "is_control": True}
                for i in range(n_special)]
    return {
        "config": {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": len(vocab), "default_vocab_size": vocab_size,
                   "default_num_special_tokens": n_special, "version": "v7"},
        "vocab": vocab,
        "special_tokens": specials,
        "audio": {"sampling_rate": 24000, "frame_rate": 12.5,
                  "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
                  "chunk_length_s": 30.0, "voice_num_audio_tokens": dict(voices)},
    }


def _random_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values of a plausible scale per kind of tensor, so activations stay finite through the model."""
    if name.endswith("original0") or name.endswith("norm.weight") or name.endswith("_norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if name.endswith(("attention_scale", "ffn_scale")):
        return np.full(shape, 0.1, np.float32) + 0.01 * rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("cluster_usage"):
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    fan_in = shape[1] if len(shape) == 2 else int(np.prod(shape[1:])) if len(shape) > 1 else 1
    scale = 1.0 if "embeddings" in name or name.endswith("embedding_sum") else 1.0 / np.sqrt(fan_in)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)


def write_random_model(out_dir: str | Path, params: Mapping[str, Any] | None = None,
                       voices: Mapping[str, int] | None = None, seed: int = 0, progress: bool = False,
                       checkpoint: bool = True, vocabulary: str = "bytes") -> Path:
    """Write a model directory with random weights; returns its path. ``checkpoint=False`` leaves
    out ``consolidated.safetensors`` (config, tokenizer and voices only: for a benchmark that makes
    its random weights in place, see ``model.loading.random_model``). ``vocabulary``: the
    tokenizer's text tokens (:data:`VOCABULARIES`).

    ``voices`` maps name → [AUDIO] token count (default: those listed in params' voice table, or two
    small voices). Each tensor gets its own generator seeded from (seed, name): the file is
    deterministic and independent of the write order.
    """
    out = Path(out_dir)
    (out / VOICE_DIR).mkdir(parents=True, exist_ok=True)
    params = dict(params or tiny_params())
    if voices is None:
        listed = params["multimodal"]["audio_tokenizer_args"].get("voice") or {"neutral_female": 0, "casual_male": 1}
        voices = {name: RELEASED_VOICES.get(name, 4) if params["dim"] == 3072 else 3 + i % 4
                  for i, name in enumerate(listed)}
    raw = json.dumps(params, indent=2).encode()
    (out / "params.json").write_bytes(raw)
    config = ModelConfig.from_dict(params)

    specs = {name: ("BF16", shape) for name, shape in expected_tensors(config).items()}

    def produce(name: str) -> np.ndarray:
        rng = np.random.default_rng([seed, *name.encode()])
        return float32_to_bf16(_random_tensor(name, specs[name][1], rng))

    if checkpoint:
        bar = tqdm(total=len(specs), desc="writing checkpoint", unit="tensor", disable=not progress,
                   bar_format=STEPS_FORMAT)
        write_safetensors(out / CHECKPOINT_FILE, specs, produce, metadata={"format": "pt"},
                          progress=lambda _: bar.update())
        bar.close()

    tekken = tekken_dict(config.backbone.vocab_size, voices, vocabulary=vocabulary)
    (out / "tekken.json").write_text(json.dumps(tekken))
    for i, (name, rows) in enumerate(sorted(voices.items())):
        rng = np.random.default_rng([seed, 7, i])
        bits = float32_to_bf16(rng.standard_normal((rows, config.backbone.dim), dtype=np.float32) * 0.5)
        write_safetensors(out / VOICE_DIR / f"{name}.safetensors", {"embedding": ("BF16", bits.shape)},
                          lambda _, bits=bits: bits)
        _write_pt_voice(out / VOICE_DIR / f"{name}.pt", bits)
    log.info("wrote a random model to %s (%d tensors, %d voices)", out, len(specs), len(voices))
    return out


def _write_pt_voice(path: Path, bits: np.ndarray) -> None:
    try:
        import torch
    except ImportError:  # the .safetensors copy serves the same voice
        return
    tensor = torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
    torch.save(tensor, path)


# --- driving a backend by hand ------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test's or a benchmark's server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_one(backend: Backend, embed: np.ndarray, position: int, slot: int = 0) -> np.ndarray:
    """One backbone step of the sequence in ``slot``: embedding [D] at ``position`` → hidden [D]."""
    return backend.step(np.asarray(embed)[None], [position], [slot])[0]


def flow_one(backend: Backend, hidden: np.ndarray, noise: np.ndarray,
             semantic: np.ndarray | None = None) -> np.ndarray:
    """One frame: hidden [D], noise [36] (, semantic sampling noise [8320]) → codes [37]."""
    return backend.flow(np.asarray(hidden)[None], np.asarray(noise)[None],
                        None if semantic is None else np.asarray(semantic)[None])[0]


class Forwarding(Backend):
    """A backend that forwards every call to ``inner``: the base of wrappers that change one call
    (tests, benchmarks), which override the public method they change. Prefills are passed on whole:
    the inner backend decides whether to batch them."""

    can_batch_prefill = True

    def __init__(self, inner: Backend):
        self.inner = inner
        super().__init__(inner.config, inner.capacity, inner.max_batch, inner.embeddings)
        self.name = inner.name
        self.batch_prefill = True

    @classmethod
    def from_path(cls, path, options=None):
        raise VoxtralError("a forwarding backend wraps another backend")

    def embed_tokens(self, ids):
        return self.inner.embed_tokens(ids)

    def embed_codes(self, codes):
        return self.inner.embed_codes(codes)

    @property
    def prefix_identity(self):
        return self.inner.prefix_identity

    def compute_prefix(self, embeds):
        return self.inner.compute_prefix(embeds)

    def _prefill(self, items):
        return self.inner.prefill_many(items)

    def _step(self, embeds, positions, slots):
        return self.inner.step(embeds, positions, slots)

    def _flow(self, hidden, noise, semantic, expressiveness):
        return self.inner.flow(hidden, noise, semantic, expressiveness)

    def _codec(self, codes):
        return self.inner.codec(codes)

    def close(self) -> None:
        self.inner.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m voxtral_tts.testing", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny",
                        help="tiny (dim 64, seconds) or full (the released sizes, 8 GB of random BF16 weights)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", choices=VOCABULARIES,
                        help="the tokenizer's text tokens: bytes (every byte a token) or tekken (the released "
                             "tokenizer's, from mistral_common, so prompts have the real token counts; the default "
                             "for --size full)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = full_params() if args.size == "full" else tiny_params()
    voices = RELEASED_VOICES if args.size == "full" else None
    vocabulary = args.vocab or ("tekken" if args.size == "full" else "bytes")
    try:
        write_random_model(args.out_dir, params, voices=voices, seed=args.seed, progress=True, vocabulary=vocabulary)
    except VoxtralError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main()
