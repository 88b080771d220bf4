"""``expressiveness`` — the flow head's classifier-free guidance scale — as an input of the flow frame
on the backends that run here (torch, ONNX Runtime; Core ML's host logic is in test_coreml.py,
TensorRT's profiles, bindings and plan key in test_tensorrt.py): the default's codes bit-identical
to the scale the graphs held as a constant, another scale other audio, each row of a batch at its
own, the voice-prefix cache shared across scales, and an engine exported before the scale was an
input (format 3) still speaking at its own scale and refusing others in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import voxtral_tts
from voxtral_tts import SpeechOptions
from voxtral_tts.config import ModelConfig
from voxtral_tts.errors import OptionError
from voxtral_tts.runtime.guidance import check_expressiveness, guidance_weights

torch = pytest.importorskip("torch")

TEXT = "Hello there, how are you today?"


def test_the_default_weights_are_the_constants_the_graphs_held():
    weights = guidance_weights([1.2, 2.0])
    assert weights.dtype == np.float32 and weights.shape == (2, 2)
    assert weights[0, 0] == np.float32(1.2) and weights[0, 1] == np.float32(1.0 - 1.2)  # −0.2, rounded once
    assert weights[0, 1] != np.float32(1.0) - np.float32(1.2)  # float32 arithmetic gives −0.20000005
    assert weights[1].tolist() == [2.0, -1.0]
    assert check_expressiveness(1) == 1.0 and check_expressiveness(100) == 100.0
    assert SpeechOptions(expressiveness=2).expressiveness == 2.0 and SpeechOptions().expressiveness is None


def test_the_reference_at_its_default_is_the_loop_with_the_constant(reference_model_dir, golden):
    """FlowHead.solve, without guidance or with the default's weights, equals bit for bit the Euler
    loop with α a Python constant (how every flow graph held it before it was an input)."""
    from voxtral_tts.model.loading import load_model

    flow = load_model(reference_model_dir, weight_dtype=torch.float32, progress=False).acoustic_transformer
    h = torch.from_numpy(golden["frame_hidden"])
    noise = torch.from_numpy(golden["noise"][: len(h)])
    with torch.no_grad():
        alpha, batch = flow.args.cfg_alpha, len(h)
        h_cond = flow.llm_projection(h)
        h_pair = torch.cat((h_cond, torch.zeros_like(h_cond)))
        x = noise.clone()
        for k in range(flow.args.n_decoding_steps):
            t, dt = flow.time_grid[k], flow.time_grid[k + 1] - flow.time_grid[k]
            v = flow.velocity(torch.cat((x, x)), flow.time_token(t), h_pair)
            x = x + (alpha * v[:batch] + (1.0 - alpha) * v[batch:]) * dt
        assert torch.equal(flow.solve(h, noise), x)
        assert torch.equal(flow.solve(h, noise, guidance=flow.guidance(batch)), x)
        other = flow.solve(h, noise, guidance=torch.from_numpy(guidance_weights([2.0] * batch)))
        assert not torch.equal(other, x)


@pytest.fixture(scope="module", params=["torch", pytest.param("onnxruntime", marks=pytest.mark.slow)])  # an export
def tts(request, tiny_model_dir):
    if request.param == "torch":
        return voxtral_tts.load(tiny_model_dir, backend="torch", dtype="fp32", max_batch=2, progress=False)
    pytest.importorskip("onnxruntime")
    return voxtral_tts.load(request.getfixturevalue("tiny_engine_dir"), max_batch=2)


def test_the_default_is_unchanged_and_another_scale_changes_the_audio(tts):
    default = tts.config.flow.cfg_alpha
    plain = tts.generate(TEXT, seed=3, max_frames=8)
    same = tts.generate(TEXT, seed=3, max_frames=8, expressiveness=default)
    np.testing.assert_array_equal(plain.codes, same.codes)
    np.testing.assert_array_equal(plain.audio, same.audio)
    guided = tts.generate(TEXT, seed=3, max_frames=8, expressiveness=2.5)
    assert (guided.codes[:, 1:] != plain.codes[:, 1:]).any() and not np.array_equal(guided.audio, plain.audio)
    np.testing.assert_array_equal(guided.codes, tts.generate(TEXT, seed=3, max_frames=8, expressiveness=2.5).codes)


def test_each_row_of_a_flow_call_has_its_own_scale(tts):
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((2, tts.config.backbone.dim)).astype(np.float32)
    noise = rng.standard_normal((2, 36)).astype(np.float32)
    together = tts.backend.flow(hidden, noise, None, np.array([1.0, 3.0]))
    for row, scale in enumerate((1.0, 3.0)):
        alone = tts.backend.flow(hidden[row : row + 1], noise[row : row + 1], None, np.array([scale]))
        np.testing.assert_array_equal(together[row], alone[0])
    assert (together != tts.backend.flow(hidden, noise)).any()


def test_requests_at_other_scales_share_a_batch_and_the_voice_prefix(tts):
    """Two requests decoded together, each at its own scale, give what each gives alone; the voice's
    prefix keys/values (which the scale does not touch) are reused across scales."""
    items = [(TEXT, SpeechOptions(voice="casual_male", seed=4, max_frames=6, expressiveness=1.0)),
             (TEXT, SpeechOptions(voice="casual_male", seed=4, max_frames=6, expressiveness=3.0))]
    cache = tts.scheduler.prefix_cache
    hits = cache.stats.hits
    together = dict(tts.synthesize_many(items))
    assert cache.stats.hits > hits  # the second request's prefix came from the cache
    for index, (text, options) in enumerate(items):
        alone = tts.synthesize(text, options)
        np.testing.assert_array_equal(together[index].codes, alone.codes)
    assert not np.array_equal(together[0].codes, together[1].codes)


def test_the_export_validates_the_guided_flow_graph(tiny_engine_dir):
    record = json.loads((tiny_engine_dir / "manifest.json").read_text())["validation"]["flow_frame guided codes"]
    assert record["mismatches"] == 0 and record["count"] == 4 * 37


@pytest.fixture(scope="module")
def format3_engine(tiny_engine_dir, tmp_path_factory):
    """The tiny engine made what an engine exported before the scale was an input is: format 3, its
    flow graph holding the default's weights as a constant instead of the ``guidance`` input."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    out = shutil.copytree(tiny_engine_dir, tmp_path_factory.mktemp("format3") / "engine")
    path = out / "flow_frame.onnx"
    graph_proto = onnx.load(str(path), load_external_data=False)
    graph = graph_proto.graph
    (guidance,) = [i for i in graph.input if i.name == "guidance"]
    graph.input.remove(guidance)
    alpha = ModelConfig.from_file(out / "params.json").flow.cfg_alpha
    graph.initializer.append(numpy_helper.from_array(guidance_weights([alpha]), "guidance"))
    onnx.save(graph_proto, str(path))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 3
    flow = manifest["graphs"]["flow_frame"]
    flow["inputs"] = [i for i in flow["inputs"] if i["name"] != "guidance"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_an_engine_of_format_3_speaks_at_its_own_scale_only(format3_engine, tiny_engine_dir):
    old, new = voxtral_tts.load(format3_engine), voxtral_tts.load(tiny_engine_dir)
    assert not old.backend.engine.flow_guidance and new.backend.engine.flow_guidance
    expected = new.generate(TEXT, seed=5, max_frames=6)
    for options in ({}, {"expressiveness": old.config.flow.cfg_alpha}):
        result = old.generate(TEXT, seed=5, max_frames=6, **options)
        np.testing.assert_array_equal(result.codes, expected.codes)
        np.testing.assert_array_equal(result.audio, expected.audio)
    with pytest.raises(OptionError) as caught:  # refused before anything is generated
        old.request(TEXT, expressiveness=2.0)
    message = str(caught.value)
    assert caught.value.field == "expressiveness" and "\n" not in message
    assert "2 cannot be used" in message and "re-export it" in message
    with pytest.raises(OptionError, match="re-export"):
        old.backend.flow(np.zeros((1, old.config.backbone.dim), np.float32), np.zeros((1, 36), np.float32), None,
                         np.array([2.0]))
