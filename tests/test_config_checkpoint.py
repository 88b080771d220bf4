"""params.json parsing and checkpoint validation, against the released files in ../shared/spec."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from voxtral_tts.checkpoint import checkpoint_identity, expected_tensors, validate_checkpoint
from voxtral_tts.config import ModelConfig
from voxtral_tts.errors import CheckpointError, ConfigError, VoxtralError
from voxtral_tts.tensors import write_safetensors


@pytest.fixture(scope="module")
def released(spec_dir):
    return ModelConfig.from_file(spec_dir / "params.json")


def test_released_params(released):
    b, f, a, c = released.backbone, released.flow, released.audio, released.codec
    assert (b.dim, b.n_layers, b.n_heads, b.n_kv_heads, b.head_dim, b.hidden_dim) == (3072, 26, 32, 8, 128, 9216)
    assert b.rope_theta == 1e6 and b.vocab_size == 131072
    assert (f.n_layers, f.n_decoding_steps, f.cfg_alpha, f.norm_eps) == (3, 7, 1.2, 1e-5)  # absent → defaults
    assert c.decoder_transformer_lengths == (2, 2, 2, 2)  # parsed from "*_str" strings
    assert c.decoder_convs_kernels == (3, 4, 4, 4) and c.decoder_convs_strides == (1, 2, 2, 2)
    assert c.encoder_convs_strides == (2, 2, 2, 1) and c.decoder_windows == (2, 4, 8, 16)
    assert c.latent_dim == 292 and c.samples_per_frame == 1920 and c.norm_eps == 0.01
    assert a.semantic_head_rows == 8320 and a.codebook_table_rows == 9088
    assert a.codebook_sizes == (8194,) + (23,) * 36
    assert a.codebook_offsets[:3] == (0, 8194, 8217) and a.codebook_offsets[-1] == 8194 + 23 * 35
    assert len(released.voices) == 20 and released.voices["hi_female"] == 19


def test_expected_tensors_match_the_released_manifest(spec_dir, released):
    manifest = json.loads((spec_dir / "checkpoint-manifest.json").read_text())
    expected = expected_tensors(released)
    assert len(expected) == manifest["tensor_count"] == 386
    assert expected == {k: tuple(v) for k, v in manifest["tensors"].items()}
    assert sum(int(np.prod(s)) for s in expected.values()) == manifest["parameter_count"]


def test_unknown_fields_ignored_and_lists_accepted(spec_dir):
    params = json.loads((spec_dir / "params.json").read_text())
    params["some_future_field"] = {"x": 1}
    codec = params["multimodal"]["audio_tokenizer_args"]
    codec["decoder_convs_strides_str"] = [1, 2, 2, 2]
    assert ModelConfig.from_dict(params).codec.decoder_convs_strides == (1, 2, 2, 2)


@pytest.mark.parametrize(
    "path, message",
    [
        (("dim",), "'dim' is missing"),
        (("multimodal", "audio_tokenizer_args", "decoder_convs_kernels_str"), "decoder_convs_kernels_str' is missing"),
        (("multimodal", "audio_model_args"), "audio_model_args' is missing"),
    ],
)
def test_missing_required_field_is_named(spec_dir, path, message):
    params = json.loads((spec_dir / "params.json").read_text())
    node = params
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(params)


def test_bad_values(spec_dir, tmp_path):
    params = json.loads((spec_dir / "params.json").read_text())
    params["multimodal"]["audio_tokenizer_args"]["decoder_convs_strides_str"] = "1,two"
    with pytest.raises(ConfigError, match="must list integers"):
        ModelConfig.from_dict(params)
    params = json.loads((spec_dir / "params.json").read_text())
    params["n_heads"] = "32"
    with pytest.raises(ConfigError, match="'n_heads' must be int"):
        ModelConfig.from_dict(params)
    (tmp_path / "params.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        ModelConfig.from_file(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        ModelConfig.from_file(tmp_path / "nowhere")


@pytest.mark.parametrize("change, message", [
    (lambda p: p["multimodal"]["audio_model_args"]["audio_encoding_args"].update(frame_rate=25.0),
     r"audio_encoding_args \(24000 Hz, 25.0 frames/s\) do not match the codec \(24000 Hz, 1920 samples per frame\)"),
    (lambda p: p["multimodal"]["audio_tokenizer_args"].update(conv_weight_norm=False), "conv_weight_norm false"),
    (lambda p: p.update(model_type="mistral"), "model_type is 'mistral', not voxtral_tts"),
])
def test_fields_checked_against_each_other(spec_dir, change, message):
    """Every field parsed is used or checked: the audio rates against the codec, the layout flags."""
    params = json.loads((spec_dir / "params.json").read_text())
    change(params)
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(params)


def test_special_token_ids_are_checked_against_tekken(reference_model_dir, tmp_path):
    from voxtral_tts.errors import TokenizerError
    from voxtral_tts.runtime.tts import read_model_dir

    model = shutil.copytree(reference_model_dir, tmp_path / "model")
    params = json.loads((model / "params.json").read_text())
    params["multimodal"]["audio_model_args"]["audio_token_id"] = 30
    (model / "params.json").write_text(json.dumps(params))
    with pytest.raises(TokenizerError, match="params.json says audio_token_id 30, this tokenizer's is 24"):
        read_model_dir(model)


def test_capacity_beyond_max_seq_len_is_refused(spec_dir):
    from voxtral_tts.runtime.backend import Backend

    class Bare(Backend):  # the protocol's shared checks alone
        from_path = _prefill = _step = _flow = _codec = None

    config = ModelConfig.from_file(spec_dir)
    assert Bare(config, 65536).capacity == 65536
    with pytest.raises(VoxtralError, match=r"capacity must be between 2 and the model's max_seq_len \(65536\)"):
        Bare(config, 65537)


# --- checkpoint validation ---------------------------------------------------------------------------

def _model_copy(src, dst):
    shutil.copytree(src, dst)
    (dst / "consolidated.safetensors").chmod(0o644)
    return dst


def _rewrite(model_dir, config, change):
    """Rewrite the checkpoint with zeros after ``change(specs)`` edits the tensor list."""
    specs = {name: ("BF16", shape) for name, shape in expected_tensors(config).items()}
    change(specs)
    write_safetensors(model_dir / "consolidated.safetensors", specs, lambda n: np.zeros(specs[n][1], np.float32))


@pytest.fixture
def tiny_copy(reference_model_dir, tmp_path):
    return _model_copy(reference_model_dir, tmp_path / "model")


def test_reference_checkpoint_is_valid(reference_model_dir):
    config = ModelConfig.from_file(reference_model_dir)
    assert len(validate_checkpoint(reference_model_dir, config)) == 161
    assert len(checkpoint_identity(reference_model_dir)) == 64


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("layers.1.attention.wq.weight"), r"missing: layers\.1\.attention\.wq\.weight"),
        (lambda s: s.__setitem__("output.weight", ("BF16", (4, 4))), r"unexpected: output\.weight"),
        (
            lambda s: s.__setitem__("norm.weight", ("BF16", (65,))),
            r"wrong shape: norm\.weight \[65\] \(expected \[64\]\)",
        ),
    ],
)
def test_checkpoint_mismatch_is_reported_by_name(tiny_copy, change, message):
    config = ModelConfig.from_file(tiny_copy)
    _rewrite(tiny_copy, config, change)
    with pytest.raises(CheckpointError, match=message) as info:
        validate_checkpoint(tiny_copy, config)
    assert "\n" not in str(info.value)


def test_truncated_and_corrupt_checkpoints(tiny_copy):
    config = ModelConfig.from_file(tiny_copy)
    path = tiny_copy / "consolidated.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        validate_checkpoint(tiny_copy, config)
    path.write_bytes(struct.pack("<Q", 40) + b"{this is not json at all..............}" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        validate_checkpoint(tiny_copy, config)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="truncated"):
        validate_checkpoint(tiny_copy, config)
    path.unlink()
    with pytest.raises(CheckpointError, match="not found"):
        validate_checkpoint(tiny_copy, config)


def test_loading_a_bad_checkpoint_fails_before_reading_weights(tiny_copy):
    pytest.importorskip("torch")
    from voxtral_tts.model.loading import load_model

    config = ModelConfig.from_file(tiny_copy)
    _rewrite(tiny_copy, config, lambda s: s.pop("audio_tokenizer.output_proj.conv.parametrizations.weight.original0"))
    with pytest.raises(CheckpointError, match="missing: audio_tokenizer.output_proj"):
        load_model(tiny_copy, progress=False)


# --- what loading says ---------------------------------------------------------------------------

def test_the_checkpoint_is_described_by_its_file(reference_model_dir, tiny_copy):
    """Parameter count and storage dtype come from the file's header: the fixture is all BF16,
    2,208,112 parameters (never "0.00 B parameters", never the dtype it is read into)."""
    from voxtral_tts.checkpoint import CheckpointReader
    from voxtral_tts.tensors import read_safetensors_header

    infos, _ = read_safetensors_header(reference_model_dir / "consolidated.safetensors")
    assert {info.dtype for info in infos.values()} == {"BF16"}
    reader = CheckpointReader(reference_model_dir, ModelConfig.from_file(reference_model_dir))
    assert reader.n_params == 2_208_112 and reader.describe() == "2.2 M parameters stored as BF16"
    config = ModelConfig.from_file(tiny_copy)
    _rewrite(tiny_copy, config, lambda s: s.__setitem__("norm.weight", ("F32", s["norm.weight"][1])))
    assert CheckpointReader(tiny_copy, config).describe() == "2.2 M parameters stored as BF16 (64 of them as F32)"


def test_loading_says_what_it_reads_from_what_into_what_once(reference_model_dir, caplog):
    """One line: the file's count and storage dtype, and the dtype read into — no compute dtype,
    which is the backend's to say. A block read for validation says nothing at INFO."""
    torch = pytest.importorskip("torch")
    import logging

    from voxtral_tts.model.loading import load_model

    path = reference_model_dir / "consolidated.safetensors"
    for dtype, into in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16 (the codec into float32)")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="voxtral_tts"):
            load_model(reference_model_dir, weight_dtype=dtype, progress=False)
        assert [r.getMessage() for r in caplog.records] == [
            f"loading {path}: 2.2 M parameters stored as BF16, read into {into}"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="voxtral_tts"):
        load_model(reference_model_dir, progress=False, blocks=("backbone",))
    assert caplog.records == []
