"""Mistral's shape of ``POST /v1/audio/speech``, live: the official ``mistralai`` SDK against the
server on the tiny engine — whole (JSON ``audio_data``) and streamed (its events, validated by the
SDK), voices by name and alias, errors as the SDK's exceptions — and the rule that tells the two
shapes apart (OpenAI's answers stay as they were: ``test_server.py``)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("av")
pytest.importorskip("onnxruntime")
mistralai_client = pytest.importorskip("mistralai.client")

import voxtral_tts  # noqa: E402
from voxtral_tts.server.app import create_app  # noqa: E402
from voxtral_tts.server.mistral import accepts_mistral, is_mistral  # noqa: E402
from voxtral_tts.server.schemas import ServerOptions  # noqa: E402

from test_server import FRAMES, SECONDS, Live, assert_pcm_equal, decode, expected_audio  # noqa: E402

errors = mistralai_client.errors
models = mistralai_client.models


@pytest.fixture(scope="module")
def reference(tiny_engine_dir):
    return voxtral_tts.load(tiny_engine_dir)


@pytest.fixture(scope="module")
def server(tiny_engine_dir):
    live = Live(create_app(lambda: voxtral_tts.load(tiny_engine_dir), ServerOptions(max_frames=FRAMES)))
    live.wait_ready()
    yield live
    live.close()


# --- the rule that picks the shape --------------------------------------------------------------------

@pytest.mark.parametrize("body, accept, expected", [
    ({"input": "x", "voice": "alloy"}, "application/json", False),  # voice: OpenAI's, whatever else
    ({"input": "x", "voice": "alloy", "voice_id": "echo"}, None, False),
    ({"input": "x", "voice_id": "echo"}, "*/*", True),
    ({"input": "x", "metadata": {}}, None, True),
    ({"input": "x", "expressiveness": 1.2}, None, False),  # in both shapes (OpenAI's extra field): decides nothing
    ({"input": "x", "expressiveness": 1.2}, "application/json", True),
    ({"input": "x", "speed": 1.0}, "application/json", False),
    ({"input": "x", "speed": None}, "application/json", True),  # a null field of OpenAI's decides nothing
    ({"input": "x"}, "application/json", True),  # the SDK's Accept, without a voice_id
    ({"input": "x", "stream": True}, "text/event-stream", True),
    ({"input": "x"}, "application/octet-stream", False),  # the openai SDK's
    ({"input": "x"}, "*/*", False),  # curl's, httpx's
    ({"input": "x"}, None, False),
    ({"input": "x", "model": None}, None, True),  # only Mistral's schema takes it
    ({"input": "x", "model": 5}, None, False),  # neither: OpenAI's error
    ({"input": "x"}, "application/json, audio/mpeg", False),
    ({"input": "x"}, "application/json;q=0, */*", False),
])
def test_the_shape_rule(body, accept, expected):
    assert is_mistral(body, accept) is expected


def test_accept_parsing():
    assert accepts_mistral("text/event-stream") and accepts_mistral("Application/JSON; charset=utf-8")
    assert not accepts_mistral("") and not accepts_mistral("audio/*, application/json")


# --- the SDK, whole and streamed ----------------------------------------------------------------------

def test_sdk_whole_file_by_name_and_alias(mistral, reference):
    by_name = mistral.audio.speech.complete(input="Hello there.", voice_id="neutral_female", response_format="wav",
                                            additional_properties={"seed": 1})
    by_alias = mistral.audio.speech.complete(input="Hello there.", voice_id="alloy", response_format="wav",
                                             model="voxtral-4b-tts-2603", additional_properties={"seed": 1})
    assert isinstance(by_name, models.SpeechResponse)
    assert by_name.audio_data == by_alias.audio_data
    audio, rate = decode(base64.b64decode(by_name.audio_data), "wav")
    assert rate == 24000 and abs(len(audio) / rate - SECONDS) < 0.01
    assert_pcm_equal(np.round(audio * 32767), expected_audio(reference))


def test_sdk_pcm_is_float32(mistral, reference):
    """Mistral's pcm is raw little-endian float32 (OpenAI's is 16-bit)."""
    response = mistral.audio.speech.complete(input="Hello there.", voice_id="neutral_female", response_format="pcm",
                                             additional_properties={"seed": 1})
    audio = np.frombuffer(base64.b64decode(response.audio_data), "<f4")
    expected = np.clip(expected_audio(reference), -1, 1)
    assert audio.shape == expected.shape and np.abs(audio - expected).max() < 1e-5


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus"])
def test_sdk_compressed_formats_decode(mistral, fmt):
    response = mistral.audio.speech.complete(input="Hello there.", voice_id="echo", response_format=fmt)
    audio, rate = decode(base64.b64decode(response.audio_data), fmt)
    assert abs(len(audio) / rate - SECONDS) < 0.1


def test_sdk_stream_events(mistral, reference):
    """stream=True: speech.audio.delta events the SDK validates (audio_data), then speech.audio.done
    with the usage in Mistral's names."""
    with mistral.audio.speech.complete(input="Hello there.", voice_id="neutral_female", response_format="pcm",
                                       stream=True, additional_properties={"seed": 1}) as events:
        received = list(events)
    assert [e.event for e in received[:-1]] == ["speech.audio.delta"] * (len(received) - 1) and len(received) >= 3
    assert all(isinstance(e.data, models.SpeechStreamAudioDelta) for e in received[:-1])
    done = received[-1]
    assert done.event == "speech.audio.done" and isinstance(done.data, models.SpeechStreamDone)
    usage = done.data.usage
    assert usage.completion_tokens == FRAMES and usage.prompt_tokens == len(b"Hello there.")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    pcm = b"".join(base64.b64decode(e.data.audio_data) for e in received[:-1])
    expected = np.clip(expected_audio(reference), -1, 1)
    assert np.abs(np.frombuffer(pcm, "<f4") - expected).max() < 1e-5


def test_sdk_default_voice_and_accept_rule(mistral, server):
    """Without voice_id the SDK's Accept header makes the request Mistral's (default voice); the same
    body with curl's Accept is OpenAI's and answers audio bytes."""
    response = mistral.audio.speech.complete(input="Hi.", response_format="wav")
    assert len(base64.b64decode(response.audio_data)) == 44 + FRAMES * 1920 * 2
    plain = httpx.post(server.url + "/v1/audio/speech", json={"input": "Hi.", "response_format": "wav"}, timeout=60)
    assert plain.headers["content-type"] == "audio/wav" and len(plain.content) == 44 + FRAMES * 1920 * 2


def test_expressiveness_is_the_flow_heads_guidance_scale(mistral, server):
    """Mistral's expressiveness reaches the flow head: its default (1.2) is the audio of a request
    without it, another value other audio; OpenAI's request takes it as this server's extra field."""
    def mistral_audio(**kwargs):
        response = mistral.audio.speech.complete(input="Hi.", voice_id="echo", response_format="pcm",
                                                 additional_properties={"seed": 3}, **kwargs)
        return base64.b64decode(response.audio_data)

    plain = mistral_audio()
    assert len(plain) == FRAMES * 1920 * 4 and mistral_audio(expressiveness=1.2) == plain
    assert mistral_audio(expressiveness=2.0) != plain

    def openai_audio(**fields):
        response = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                              json={"input": "Hi.", "voice": "echo", "response_format": "pcm", "seed": 3, **fields})
        assert response.status_code == 200, response.text
        return response.content

    assert openai_audio(expressiveness=1.2) == openai_audio() != openai_audio(expressiveness=2.0)
    bad = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                     json={"input": "Hi.", "voice": "echo", "expressiveness": 0.5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "expressiveness"
    assert "expressiveness must be a number from 1.0 to 100" in bad.json()["error"]["message"]


# --- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, status, fragment", [
    ({"voice_id": "darth"}, 400, "unknown voice 'darth'"),
    ({"ref_audio": "aGVsbG8="}, 400, "ref_audio: creating a voice needs the model directory"),
    ({"input": ""}, 400, "text is empty"),
    ({"additional_properties": {"speed": 2.0}}, 400, "speed is a field of OpenAI's request"),
    ({"additional_properties": {"temperature": 7.0}}, 400, "from 0 (greedy) to 2, got 7.0"),
])
def test_errors_reach_the_sdk_in_mistral_shape(mistral, server, kwargs, status, fragment):
    """The SDK raises SDKError for a 4xx other than 422, its message showing the status and the
    body; the body has Mistral's error shape."""
    with pytest.raises(errors.SDKError) as caught:
        mistral.audio.speech.complete(**{"input": "Hi.", "voice_id": "echo", **kwargs})
    assert caught.value.status_code == status and f"Status {status}" in str(caught.value)
    body = json.loads(caught.value.body)
    assert set(body) == {"object", "message", "type", "param", "code"} and body["object"] == "error"
    assert fragment in body["message"] and body["type"] == "invalid_request_error"


@pytest.mark.parametrize("kwargs, loc", [
    ({"expressiveness": 0.5}, ["body", "expressiveness"]),
    ({"expressiveness": 101.0}, ["body", "expressiveness"]),
    ({"additional_properties": {"normalize": "yes"}}, ["body", "normalize"]),
    ({"additional_properties": {"seed": "one"}}, ["body", "seed"]),
])
def test_invalid_fields_are_the_sdks_validation_error(mistral, kwargs, loc):
    """An invalid field is a 422 with FastAPI's detail list, which the SDK parses into HTTPValidationError."""
    with pytest.raises(errors.HTTPValidationError) as caught:
        mistral.audio.speech.complete(**{"input": "Hi.", "voice_id": "echo", **kwargs})
    detail = caught.value.data.detail
    assert caught.value.status_code == 422 and detail and detail[0].loc == loc and detail[0].msg


def test_a_bad_format_is_refused_before_the_request_is_sent_or_as_422(server):
    """The SDK checks response_format itself; over plain HTTP the server answers 422."""
    response = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                          json={"input": "Hi.", "voice_id": "echo", "response_format": "m4a"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "response_format"]


def test_a_malformed_body_with_the_sdks_accept_is_in_mistral_shape(server):
    response = httpx.post(server.url + "/v1/audio/speech", content=b'{"input": ', timeout=60,
                          headers={"content-type": "application/json", "accept": "application/json"})
    assert response.status_code == 400 and response.json()["object"] == "error"
    assert response.json()["message"] == "the request body is not valid JSON"


def test_openai_requests_keep_their_answers(server):
    """OpenAI's request next to Mistral's on the same server: audio bytes and OpenAI's error shape."""
    ok = httpx.post(server.url + "/v1/audio/speech", timeout=60,
                    json={"input": "Hi.", "voice": "echo", "response_format": "pcm", "voice_id": "ignored"})
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/pcm" and len(ok.content) == FRAMES * 3840
    bad = httpx.post(server.url + "/v1/audio/speech", timeout=60, json={"input": "Hi.", "voice": "darth"})
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
