"""The simulator's images, audio and moderation endpoints, through the official openai SDK."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx2
import openai
import pytest
from openai import OpenAI

from llmobs.sim import SimConfig, create_app
from llmobs.sim.openai_media import PNG_1X1, speech_audio
from servers import ServerThread, serve

WAV_1_5_S = bytes(48_000)  # 1.5 s at 32,000 bytes/s; 15 audio tokens at 3,200 bytes each


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with serve(create_app(SimConfig(output_tokens=4))) as server:
        yield server


@pytest.fixture(scope="module")
def client(srv: ServerThread) -> Iterator[OpenAI]:
    with OpenAI(base_url=srv.url + "/v1", api_key="sk-test", max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture(scope="module")
def http(srv: ServerThread) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=srv.url, timeout=5) as c:
        yield c


# ---------------------------------------------------------------------------- images


def test_gpt_image_generation_reports_token_usage(client: OpenAI) -> None:
    r = client.images.generate(model="gpt-image-1", prompt="a red cat", n=2, size="1024x1536", quality="low")
    assert r.data is not None and [base64.b64decode(d.b64_json or "") for d in r.data] == [PNG_1X1] * 2
    assert (r.size, r.quality, r.output_format, r.background) == ("1024x1536", "low", "png", "opaque")
    assert r.usage is not None
    assert (r.usage.input_tokens_details.text_tokens, r.usage.input_tokens_details.image_tokens) == (3, 0)
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (3, 2 * 408, 3 + 816)


def test_gpt_image_auto_size_and_quality_resolve_to_1024_medium(client: OpenAI) -> None:
    r = client.images.generate(model="gpt-image-1", prompt="a cat")
    assert (r.size, r.quality) == ("1024x1024", "medium") and r.usage is not None and r.usage.output_tokens == 1056


def test_dall_e_answers_urls_and_no_usage(client: OpenAI) -> None:
    r = client.images.generate(model="dall-e-3", prompt="a cat")
    assert r.usage is None and r.data and r.data[0].url and r.data[0].revised_prompt == "a cat"
    b64 = client.images.generate(model="dall-e-2", prompt="a cat", response_format="b64_json")
    assert b64.data and b64.data[0].b64_json and b64.data[0].url is None and b64.data[0].revised_prompt is None


def test_image_edit_multipart_counts_image_tokens_from_uploaded_bytes(client: OpenAI) -> None:
    images = [("a.png", bytes(1000), "image/png"), ("b.png", bytes(150), "image/png")]
    r = client.images.edit(
        model="gpt-image-1", prompt="add a hat", image=images, mask=("m.png", bytes(900), "image/png")
    )
    assert r.usage is not None
    # ceil(1000/100) + ceil(150/100); the mask is not counted.
    assert (r.usage.input_tokens_details.image_tokens, r.usage.input_tokens_details.text_tokens) == (10 + 2, 3)
    assert r.usage.input_tokens == 15 and r.usage.output_tokens == 1056


def test_image_edit_without_image_is_a_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(model="gpt-image-1", prompt="x", image=[])
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "image"


# ---------------------------------------------------------------------------- transcriptions


def test_gpt_4o_transcribe_reports_tokens(client: OpenAI) -> None:
    t = client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", WAV_1_5_S, "audio/wav"), prompt="names: Ada"
    )
    assert t.text == "tok1 tok2 tok3 tok4 "
    assert t.usage is not None and t.usage.type == "tokens"
    assert t.usage.input_token_details is not None
    assert (t.usage.input_token_details.audio_tokens, t.usage.input_token_details.text_tokens) == (15, 2)
    assert (t.usage.input_tokens, t.usage.output_tokens, t.usage.total_tokens) == (17, 4, 21)


def test_transcription_stream_ends_with_usage(client: OpenAI) -> None:
    events = list(
        client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("a.wav", WAV_1_5_S, "audio/wav"), stream=True
        )
    )
    assert [e.type for e in events] == ["transcript.text.delta"] * 4 + ["transcript.text.done"]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.text == "tok1 tok2 tok3 tok4 "
    assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (15, 4)


def test_whisper_reports_duration(client: OpenAI) -> None:
    plain = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV_1_5_S, "audio/wav"))
    assert plain.usage is not None and plain.usage.type == "duration" and plain.usage.seconds == 2  # billed up
    verbose = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", WAV_1_5_S, "audio/wav"), response_format="verbose_json"
    )
    assert verbose.duration == 1.5 and verbose.language == "english" and verbose.text == "tok1 tok2 tok3 tok4 "
    assert verbose.segments and verbose.segments[0].end == 1.5
    assert verbose.usage is not None and verbose.usage.seconds == 2


def test_text_response_format_is_plain_text(client: OpenAI) -> None:
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", WAV_1_5_S, "audio/wav"), response_format="text"
    )
    assert text == "tok1 tok2 tok3 tok4 "


def test_token_models_refuse_verbose_json(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", WAV_1_5_S, "audio/wav"), response_format="verbose_json"
        )
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "response_format"


def test_translations_answer_text_and_verbose_duration(http: httpx2.Client) -> None:
    # openai-python deprecates audio.translations, so this one goes through httpx's own multipart.
    files = {"file": ("a.wav", WAV_1_5_S, "audio/wav")}
    plain = http.post("/v1/audio/translations", files=files, data={"model": "whisper-1"})
    assert plain.json() == {"text": "tok1 tok2 tok3 tok4 "}
    data = {"model": "whisper-1", "response_format": "verbose_json"}
    verbose = http.post("/v1/audio/translations", files=files, data=data).json()
    assert (verbose["task"], verbose["duration"], verbose["text"]) == ("translate", 1.5, "tok1 tok2 tok3 tok4 ")
    assert "usage" not in verbose


# ---------------------------------------------------------------------------- speech


@pytest.mark.parametrize(("fmt", "content_type"), [("mp3", "audio/mpeg"), ("wav", "audio/wav"), ("opus", "audio/opus")])
def test_speech_streams_binary_audio_sized_by_the_input(client: OpenAI, fmt: str, content_type: str) -> None:
    text = "x" * 100  # 10,000 bytes: three 4096-byte chunks
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input=text,
        response_format=fmt,  # type: ignore[arg-type]
    ) as response:
        assert response.headers["content-type"] == content_type
        assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
        assert response.read() == speech_audio(text) and len(speech_audio(text)) == 10_000


def test_speech_sse_sends_audio_deltas_then_usage(http: httpx2.Client) -> None:
    text = "hello there " * 40  # 480 characters: 48,000 bytes, 12 chunks
    body = {
        "model": "gpt-4o-mini-tts",
        "voice": "alloy",
        "input": text,
        "instructions": "be calm",
        "stream_format": "sse",
    }
    r = http.post("/v1/audio/speech", json=body)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8" and r.text.endswith("\n\n")
    events = [json.loads(frame.removeprefix("data: ")) for frame in r.text[:-2].split("\n\n")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) == 12 and b"".join(base64.b64decode(e["audio"]) for e in deltas) == speech_audio(text)
    assert events[-1] == {
        "type": "speech.audio.done",
        "usage": {"input_tokens": 80 + 2, "output_tokens": 480, "total_tokens": 82 + 480},
    }


def test_speech_sse_is_refused_for_tts_1(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", stream_format="sse")


# ---------------------------------------------------------------------------- moderations


def test_moderations_flag_the_marker_and_report_no_usage(client: OpenAI, http: httpx2.Client) -> None:
    r = client.moderations.create(input=["a kind word", "sim-flag this"])
    assert [x.flagged for x in r.results] == [False, True]
    assert r.results[1].categories.violence and r.results[1].category_scores.violence == 0.99
    assert r.model == "omni-moderation-latest"
    raw = http.post("/v1/moderations", json={"input": "hi", "model": "omni-moderation-2024-09-26"}).json()
    assert "usage" not in raw and raw["model"] == "omni-moderation-2024-09-26" and raw["id"].startswith("modr-")
