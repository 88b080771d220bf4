"""The model's configuration, parsed from the released ``params.json``.

Three blocks, each a frozen dataclass read from its own section of the file (spec §1):

- :class:`BackboneArgs` — the top level: a 26-layer Mistral decoder;
- :class:`FlowArgs` — ``multimodal.audio_model_args.acoustic_transformer_args``: the flow-matching head;
- :class:`CodecArgs` — ``multimodal.audio_tokenizer_args``: the codec decoder;

plus :class:`AudioArgs` (the codebooks and audio token ids) and the derived constants
(codebook offsets, semantic-head rows, codec windows, samples per frame).

Unknown fields are ignored; a missing required field raises :class:`ConfigError` naming it.
Absent optional fields take the spec's defaults (7 Euler steps, CFG 1.2, flow eps 1e-5,
encoder strides 2,2,2,1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, read_json

#: Special values of every audio codebook (codes are stored with a +2 offset).
EMPTY_AUDIO = 0
END_AUDIO = 1
N_AUDIO_SPECIAL = 2


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class _Section:
    """Reads fields of one JSON object, naming the path of a missing or mistyped one."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, Mapping):
            raise ConfigError(f"params.json: '{path}' must be an object, got {type(data).__name__}")
        self.data, self.path = data, path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"params.json: required field '{self._where(key)}' is missing")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = "/".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
            raise ConfigError(f"params.json: field '{self._where(key)}' must be {names}, got {value!r}")
        return value

    def int_list(self, key: str, default: str | None = None) -> tuple[int, ...]:
        """A comma-separated ``*_str`` field (a string, not a JSON array: spec §1.1 pitfall)."""
        raw = self.get(key, (str, list), ... if default is None else default)
        items = raw.split(",") if isinstance(raw, str) else raw
        try:
            values = tuple(int(str(v).strip()) for v in items if str(v).strip())
        except ValueError:
            raise ConfigError(f"params.json: field '{self._where(key)}' must list integers, got {raw!r}") from None
        if not values:
            raise ConfigError(f"params.json: field '{self._where(key)}' is empty")
        return values

    def section(self, key: str) -> "_Section":
        return _Section(self.get(key, Mapping), self._where(key))


@dataclass(frozen=True)
class BackboneArgs:
    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    rope_theta: float = 1e6
    norm_eps: float = 1e-5
    max_seq_len: int = 65536


@dataclass(frozen=True)
class FlowArgs:
    input_dim: int
    dim: int
    n_layers: int
    head_dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    norm_eps: float = 1e-5
    n_decoding_steps: int = 7
    cfg_alpha: float = 1.2


@dataclass(frozen=True)
class AudioArgs:
    semantic_codebook_size: int
    acoustic_codebook_size: int
    n_acoustic_codebook: int
    sampling_rate: int
    frame_rate: float
    audio_token_id: int = 24
    begin_audio_token_id: int = 25
    bos_token_id: int = 1

    @property
    def num_codebooks(self) -> int:
        return 1 + self.n_acoustic_codebook

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Sizes including the two special values: [8194, 23 × 36]."""
        return (self.semantic_codebook_size + N_AUDIO_SPECIAL,) + (
            self.acoustic_codebook_size + N_AUDIO_SPECIAL,
        ) * self.n_acoustic_codebook

    @property
    def codebook_offsets(self) -> tuple[int, ...]:
        """First row of each codebook in the summed code-embedding table: 0, 8194, 8217, ..."""
        offsets, total = [], 0
        for size in self.codebook_sizes:
            offsets.append(total)
            total += size
        return tuple(offsets)

    @property
    def codebook_table_rows(self) -> int:
        return round_up(sum(self.codebook_sizes), 128)

    @property
    def semantic_head_rows(self) -> int:
        return round_up(self.semantic_codebook_size + N_AUDIO_SPECIAL, 128)


@dataclass(frozen=True)
class CodecArgs:
    sampling_rate: int
    patch_size: int
    patch_proj_kernel_size: int
    semantic_codebook_size: int
    semantic_dim: int
    acoustic_codebook_size: int
    acoustic_dim: int
    dim: int
    hidden_dim: int
    head_dim: int
    n_heads: int
    n_kv_heads: int
    decoder_transformer_lengths: tuple[int, ...]
    decoder_convs_kernels: tuple[int, ...]
    decoder_convs_strides: tuple[int, ...]
    encoder_convs_strides: tuple[int, ...] = (2, 2, 2, 1)
    attn_sliding_window_size: int = 16
    half_attn_window_upon_downsampling: bool = True
    norm_eps: float = 0.01
    qk_norm_eps: float = 1e-6
    qk_norm: bool = True
    layer_scale: bool = True
    conv_weight_norm: bool = True

    @property
    def latent_dim(self) -> int:
        return self.semantic_dim + self.acoustic_dim

    @property
    def upsample(self) -> int:
        out = 1
        for s in self.decoder_convs_strides:
            out *= s
        return out

    @property
    def samples_per_frame(self) -> int:
        return self.patch_size * self.upsample

    @property
    def decoder_windows(self) -> tuple[int, ...]:
        """Attention window of each decoder transformer stage (spec §7.4): 2, 4, 8, 16.

        The base window is halved at each encoder downsampling; the decoder starts from there
        and doubles it after each upsampling transposed convolution.
        """
        window = self.attn_sliding_window_size
        if self.half_attn_window_upon_downsampling:
            for stride in self.encoder_convs_strides:
                if stride > 1:
                    window //= 2
        windows = []
        for stride in self.decoder_convs_strides:
            if self.half_attn_window_upon_downsampling and stride > 1:
                window *= 2
            windows.append(window)
        return tuple(windows)


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneArgs
    flow: FlowArgs
    audio: AudioArgs
    codec: CodecArgs
    voices: Mapping[str, int] = field(default_factory=dict)
    model_type: str = "voxtral_tts"
    params_sha256: str = ""

    @property
    def sample_rate(self) -> int:
        return self.codec.sampling_rate

    @property
    def samples_per_frame(self) -> int:
        return self.codec.samples_per_frame

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], sha256: str = "") -> "ModelConfig":
        top = _Section(params, "")
        mm = top.section("multimodal")
        am = mm.section("audio_model_args")
        enc = am.section("audio_encoding_args") if "audio_encoding_args" in am.data else None
        fa = am.section("acoustic_transformer_args")
        ca = mm.section("audio_tokenizer_args")

        backbone = BackboneArgs(
            dim=top.get("dim", int),
            n_layers=top.get("n_layers", int),
            head_dim=top.get("head_dim", int),
            hidden_dim=top.get("hidden_dim", int),
            n_heads=top.get("n_heads", int),
            n_kv_heads=top.get("n_kv_heads", int),
            vocab_size=top.get("vocab_size", int),
            rope_theta=top.get("rope_theta", float, 1e6),
            norm_eps=top.get("norm_eps", float, 1e-5),
            max_seq_len=top.get("max_seq_len", int, 65536),
        )
        flow = FlowArgs(
            input_dim=fa.get("input_dim", int, backbone.dim),
            dim=fa.get("dim", int),
            n_layers=fa.get("n_layers", int),
            head_dim=fa.get("head_dim", int),
            hidden_dim=fa.get("hidden_dim", int),
            n_heads=fa.get("n_heads", int),
            n_kv_heads=fa.get("n_kv_heads", int),
            norm_eps=fa.get("norm_eps", float, 1e-5),
            n_decoding_steps=fa.get("n_decoding_steps", int, 7),
            cfg_alpha=fa.get("cfg_alpha", float, 1.2),
        )
        sampling_rate = ca.get("sampling_rate", int, 24000)
        audio = AudioArgs(
            semantic_codebook_size=am.get("semantic_codebook_size", int),
            acoustic_codebook_size=am.get("acoustic_codebook_size", int),
            n_acoustic_codebook=am.get("n_acoustic_codebook", int),
            sampling_rate=enc.get("sampling_rate", int, sampling_rate) if enc else sampling_rate,
            frame_rate=enc.get("frame_rate", float, 12.5) if enc else 12.5,
            audio_token_id=am.get("audio_token_id", int, 24),
            begin_audio_token_id=am.get("begin_audio_token_id", int, 25),
            bos_token_id=mm.get("bos_token_id", int, 1),
        )
        codec = CodecArgs(
            sampling_rate=sampling_rate,
            patch_size=ca.get("pretransform_patch_size", int),
            patch_proj_kernel_size=ca.get("patch_proj_kernel_size", int),
            semantic_codebook_size=ca.get("semantic_codebook_size", int),
            semantic_dim=ca.get("semantic_dim", int),
            acoustic_codebook_size=ca.get("acoustic_codebook_size", int),
            acoustic_dim=ca.get("acoustic_dim", int),
            dim=ca.get("dim", int),
            hidden_dim=ca.get("hidden_dim", int),
            head_dim=ca.get("head_dim", int),
            n_heads=ca.get("n_heads", int),
            n_kv_heads=ca.get("n_kv_heads", int),
            decoder_transformer_lengths=ca.int_list("decoder_transformer_lengths_str"),
            decoder_convs_kernels=ca.int_list("decoder_convs_kernels_str"),
            decoder_convs_strides=ca.int_list("decoder_convs_strides_str"),
            encoder_convs_strides=ca.int_list("encoder_convs_strides_str", "2,2,2,1"),
            attn_sliding_window_size=ca.get("attn_sliding_window_size", int, 16),
            half_attn_window_upon_downsampling=ca.get("half_attn_window_upon_downsampling", bool, True),
            norm_eps=ca.get("norm_eps", float, 0.01),
            qk_norm_eps=ca.get("qk_norm_eps", float, 1e-6),
            qk_norm=ca.get("qk_norm", bool, True),
            layer_scale=ca.get("layer_scale", bool, True),
            conv_weight_norm=ca.get("conv_weight_norm", bool, True),
        )
        voices = ca.get("voice", Mapping, {})
        config = cls(
            backbone=backbone,
            flow=flow,
            audio=audio,
            codec=codec,
            voices=dict(voices),
            model_type=top.get("model_type", str, "voxtral_tts"),
            params_sha256=sha256,
        )
        config.check()
        return config

    def check(self) -> None:
        """Cross-field consistency; a violation would otherwise surface as a shape error deep inside."""
        b, f, a, c = self.backbone, self.flow, self.audio, self.codec
        problems = []
        for name, args in (("backbone", b), ("flow", f), ("codec", c)):
            if args.n_heads % args.n_kv_heads:
                problems.append(f"{name} n_heads {args.n_heads} is not a multiple of n_kv_heads {args.n_kv_heads}")
        if f.input_dim != b.dim:
            problems.append(f"flow input_dim {f.input_dim} != backbone dim {b.dim}")
        if a.n_acoustic_codebook != c.acoustic_dim:
            problems.append(f"n_acoustic_codebook {a.n_acoustic_codebook} != codec acoustic_dim {c.acoustic_dim}")
        if a.semantic_codebook_size != c.semantic_codebook_size:
            problems.append("semantic_codebook_size differs between audio_model_args and audio_tokenizer_args")
        if a.acoustic_codebook_size != c.acoustic_codebook_size:
            problems.append("acoustic_codebook_size differs between audio_model_args and audio_tokenizer_args")
        lengths = {len(c.decoder_transformer_lengths), len(c.decoder_convs_kernels), len(c.decoder_convs_strides)}
        if len(lengths) != 1:
            problems.append("decoder_*_str fields must list the same number of stages")
        if f.n_decoding_steps < 1:
            problems.append("n_decoding_steps must be >= 1")
        if a.sampling_rate != c.sampling_rate or a.frame_rate * c.samples_per_frame != c.sampling_rate:
            problems.append(f"audio_encoding_args ({a.sampling_rate} Hz, {a.frame_rate} frames/s) do not match the "
                            f"codec ({c.sampling_rate} Hz, {c.samples_per_frame} samples per frame)")
        if not c.conv_weight_norm:
            problems.append("conv_weight_norm false is not supported (the checkpoint layout has weight-normed convs)")
        if self.model_type != "voxtral_tts":
            problems.append(f"model_type is '{self.model_type}', not voxtral_tts")
        if problems:
            raise ConfigError("params.json: " + "; ".join(problems))

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "params.json"
        params, sha256 = read_json(path, ConfigError)
        return cls.from_dict(params, sha256=sha256)
