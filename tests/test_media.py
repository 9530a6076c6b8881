"""OpenAI images, audio and moderations: the multipart scanner, the accumulators, and the proxy end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator, MutableMapping
from decimal import Decimal
from typing import Any

import genai_prices
import httpx2 as httpx
import openai
import pytest
from genai_prices import Usage as GenaiUsage
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GenAiOperationNameValues
from prometheus_client import CollectorRegistry

from conftest import Proxied, sdk_client
from llmobs.apis import openai_media as media
from llmobs.apis.multipart import MAX_VALUE, boundary, form_fields
from llmobs.apis.table import classify
from llmobs.app import create_app
from llmobs.config import Settings
from llmobs.dev.harness import ServerThread, serve
from llmobs.observe import ResponseObserver
from llmobs.records import Observation, Outcome, RequestInfo, Usage, UsageSource
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator
from llmobs.sim.openai_media import PNG_1X1, speech_audio
from llmobs.sse import Event
from observing import sse_observer

WAV_1_5_S = bytes(48_000)  # the simulator: 1.5 s at 32,000 bytes/s; 15 audio tokens at 3,200 bytes each
CT = b"multipart/form-data; boundary=XyZ"


def part(name: str, value: bytes, *, filename: str | None = None, mark: bytes = b"XyZ") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"Content-Disposition: {disposition}\r\n" + ("Content-Type: audio/wav\r\n" if filename else "")
    return b"--" + mark + b"\r\n" + head.encode() + b"\r\n" + value + b"\r\n"


def form(*parts: bytes, mark: bytes = b"XyZ") -> bytes:
    return b"".join(parts) + b"--" + mark + b"--\r\n"


def encoded(data: dict[str, str], files: dict[str, Any]) -> tuple[bytes, bytes]:
    """A body and content type as httpx (the openai SDK's transport) encodes a form."""
    request = httpx.Request("POST", "http://x/", data=data, files=files)
    return request.read(), request.headers["content-type"].encode()


# ==== the multipart scanner ==================================================================


def test_scanner_reads_the_fields_httpx_encodes_around_the_file() -> None:
    body, content_type = encoded({"model": "whisper-1", "response_format": "srt"}, {"file": ("a.wav", WAV_1_5_S)})
    assert form_fields(content_type, body) == {"model": "whisper-1", "response_format": "srt"}


def test_scanner_finds_fields_after_a_large_file_part() -> None:
    audio = bytes(range(256)) * 40_000  # 10 MB, every byte value, CRs and LFs included
    body = form(part("file", audio, filename="a.wav"), part("model", b"gpt-4o-transcribe"), part("stream", b"true"))
    assert form_fields(CT, body) == {"model": "gpt-4o-transcribe", "stream": "true"}


def test_a_file_whose_bytes_look_like_a_model_field_is_not_read() -> None:
    bait = b'\r\n--XyZ-not\r\nContent-Disposition: form-data; name="model"\r\n\r\nevil\r\n--XyZx\r\n'
    body = form(part("file", bait + b'name="model"', filename="a.wav"), part("model", b"whisper-1"))
    assert form_fields(CT, body) == {"model": "whisper-1"}
    # A file part named `model` is a file, not the field.
    assert form_fields(CT, form(part("model", b"whisper-1", filename="m.txt"))) == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (form(part("model", b"m\r")), {"model": "m\r"}),  # a CR that is the value's, not the delimiter's
        (form(part("model", b"a\r\nb")), {"model": "a\r\nb"}),  # a CRLF inside a value
        (form(part("model", b"")), {"model": ""}),
        (b"preamble\r\n" + form(part("model", b"m")) + b"epilogue", {"model": "m"}),
        (form(part("model", b"m").replace(b"--XyZ\r\n", b"--XyZ  \t\r\n", 1)), {"model": "m"}),  # padding
        (b'--XyZ\r\ncontent-disposition: FORM-DATA; NAME="model"\r\n\r\nm\r\n--XyZ--', {"model": "m"}),
        (b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\n--XyZ--', {"model": ""}),  # no body
        (b"--XyZ\r\n\r\nanonymous\r\n" + form(part("model", b"m")), {"model": "m"}),  # a part without headers
        (form(part("model", b"first"), part("model", b"second")), {"model": "first"}),
        (form(part("model", b"x" * MAX_VALUE)), {"model": "x" * MAX_VALUE}),
        (form(part("model", b"x" * (MAX_VALUE + 1)), part("stream", b"true")), {"stream": "true"}),
        (form(part("model", b"\xff\xfe")), {}),  # not UTF-8: ignored
        (form(part("prompt", b"a cat"), part("n", b"2")), {}),  # fields nobody asked for
    ],
)
def test_scanner_crlf_and_value_edges(body: bytes, expected: dict[str, str]) -> None:
    assert form_fields(CT, body) == expected


@pytest.mark.parametrize(
    "body",
    [
        form(part("model", b"m")).replace(b"\r\n", b"\n"),  # bare LF line ends
        b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n--XyZ--',  # no blank line after headers
        b"--XyZ\r\n--XyZ--",  # an empty part
        b"no delimiter at all",
        b"",
    ],
)
def test_malformed_bodies_give_nothing(body: bytes) -> None:
    assert form_fields(CT, body) == {}


def test_every_truncation_of_a_body_gives_nothing() -> None:
    body = form(part("model", b"gpt-4o-transcribe"), part("file", b"\r\n--XyZ\r" * 3, filename="a.wav"))
    close = body.index(b"--XyZ--") + len(b"--XyZ--")
    assert form_fields(CT, body[:close]) == {"model": "gpt-4o-transcribe"}
    assert [cut for cut in range(close) if form_fields(CT, body[:cut])] == []


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"multipart/form-data; boundary=abc", b"abc"),
        (b'Multipart/Form-Data;charset=utf-8; BOUNDARY="a b;c"', b"a b;c"),
        (b'multipart/form-data; boundary="q\\"uote"', b'q"uote'),
        (b"multipart/form-data; boundary=" + b"b" * 70, b"b" * 70),
        (b"multipart/form-data; boundary=" + b"b" * 71, None),  # RFC 2046: at most 70
        (b"multipart/form-data; boundary=", None),
        (b"multipart/form-data", None),
        (b"multipart/mixed; boundary=abc", None),
        (b"application/json", None),
    ],
)
def test_boundary_of_the_content_type(content_type: bytes, expected: bytes | None) -> None:
    assert boundary(content_type) == expected


def test_a_quoted_boundary_delimits_the_body() -> None:
    mark = b"a b;c"
    body = form(part("model", b"whisper-1", mark=mark), mark=mark)
    assert form_fields(b'multipart/form-data; boundary="a b;c"', body) == {"model": "whisper-1"}
    assert form_fields(b"multipart/form-data; boundary=other", body) == {}


# ==== reading requests =======================================================================


def test_request_readers() -> None:
    images = media.read_images(b'{"model": "gpt-image-1", "prompt": "a cat", "n": 3, "stream": true}', b"")
    assert (images.model, images.stream, images.params) == (
        "gpt-image-1",
        True,
        {"gen_ai.output.type": "image", "gen_ai.request.choice.count": 3},
    )
    body, content_type = encoded({"model": "gpt-4o-transcribe", "stream": "true"}, {"file": ("a.wav", b"RIFF")})
    audio = media.read_audio_text(body, content_type)
    assert (audio.model, audio.stream, audio.params, audio.body) == (
        "gpt-4o-transcribe",
        True,
        {"gen_ai.output.type": "json"},
        body,
    )
    body, content_type = encoded({"model": "whisper-1", "response_format": "vtt"}, {"file": ("a.wav", b"RIFF")})
    assert media.read_audio_text(body, content_type).params == {"gen_ai.output.type": "text"}
    speech = media.read_speech('{"model": "tts-1", "input": "héllo 👋"}'.encode(), b"application/json")
    assert (speech.model, speech.stream, speech.params[media.INPUT_CHARACTERS]) == ("tts-1", False, 7)
    assert media.read_speech(b'{"model": "gpt-4o-mini-tts", "input": "x", "stream_format": "sse"}', b"").stream
    assert media.read_model(b'{"input": "hi"}', b"").model is None
    for reader in (media.read_images, media.read_audio_text, media.read_speech, media.read_model):
        unread = reader(b"not json", b"")
        assert (unread.model, unread.stream, unread.params, unread.body) == (None, False, {}, b"not json")


@pytest.mark.parametrize(
    ("path", "endpoint", "operation"),
    [
        ("/v1/images/generations", "images_generations", "generate_content"),
        ("/v1/images/edits", "images_edits", "generate_content"),
        ("/v1/audio/transcriptions", "audio_transcriptions", "generate_content"),
        ("/v1/audio/translations", "audio_translations", "generate_content"),
        ("/v1/audio/speech", "audio_speech", "generate_content"),
        ("/v1/moderations", "moderations", "moderation"),
        ("/openai/deployments/img/images/generations/", "images_generations", "generate_content"),
        ("/v1/edits", "other", None),  # the retired edits API is not images/edits
        ("/v1/images/variations", "other", None),
        ("/v1/speech", "other", None),
    ],
)
def test_classify_media_paths(path: str, endpoint: str, operation: str | None) -> None:
    adapter = classify("POST", path)
    assert (adapter.name, adapter.operation) == (endpoint, operation)


def test_generate_content_is_the_semconv_operation() -> None:
    assert GenAiOperationNameValues.GENERATE_CONTENT.value == "generate_content"
    assert "moderation" not in {v.value for v in GenAiOperationNameValues}  # so a name of our own


def test_azure_media_request_without_a_model_goes_by_its_deployment() -> None:
    body, content_type = encoded({"response_format": "json"}, {"file": ("a.wav", b"RIFF")})
    path = "/openai/deployments/my-whisper/audio/transcriptions"
    parsed = classify("POST", path).parse(body, path=path, content_type=content_type)
    assert parsed.model == "my-whisper"


# ==== accumulators ===========================================================================


def info(
    endpoint: str, model: str | None = None, *, stream: bool = False, params: dict[str, Any] | None = None
) -> RequestInfo:
    return RequestInfo(endpoint=endpoint, operation="generate_content", model=model, stream=stream, params=params or {})


SPEECH_42 = {media.INPUT_CHARACTERS: 42}  # the request's `input` had 42 characters


def observe_body(acc: Any, body: bytes, status: int = 200) -> Observation:
    acc.on_first_byte(1.0)
    acc.on_body(body)
    return acc.finish(Outcome.COMPLETED if status < 400 else Outcome.UPSTREAM_ERROR, status, 2.0)  # type: ignore[no-any-return]


def feed_stream(acc: Any, stream: bytes, splits: list[int] | None = None) -> Observation:
    """Feed `stream` through the real ResponseObserver, cut at `splits`, one clock tick per chunk."""
    observer = sse_observer(acc, body_limit=1 << 24)
    cuts = [0, *(splits or []), len(stream)]
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        observer.feed(stream[a:b], 10.0 + i)
    observer.close()
    return acc.finish(Outcome.COMPLETED, 200, 100.0)  # type: ignore[no-any-return]


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def genai_pricing(obj: dict[str, Any], flavor: str) -> tuple[tuple[str, int | float], ...]:
    """What genai-prices' own (public) extract_usage reads, in its keys."""
    extracted = genai_prices.extract_usage(obj, provider_id="openai", api_flavor=flavor)
    return tuple(vars(extracted.usage).items())


IMAGE_USAGE = {
    "input_tokens": 15,
    "input_tokens_details": {"text_tokens": 3, "image_tokens": 12},
    "output_tokens": 1056,
    "output_tokens_details": {"text_tokens": 0, "image_tokens": 1056},
    "total_tokens": 1071,
}


def test_gpt_image_body_tokens_images_and_genai_prices_keys() -> None:
    obj = {"created": 1, "data": [{"b64_json": "x"}, {"b64_json": "y"}], "usage": IMAGE_USAGE}
    obs = observe_body(media.ImagesAccumulator(info("images_edits", "gpt-image-1"), 0.0), json.dumps(obj).encode())
    usage = obs.usage
    assert (usage.input_tokens, usage.output_tokens, usage.input_image_tokens, usage.output_image_tokens) == (
        15,
        1056,
        12,
        1056,
    )
    assert usage.images == 2 and obs.usage_source is UsageSource.REPORTED
    assert dict(usage.pricing) == dict(genai_pricing(obj, "images"))
    assert dict(usage.pricing)["input_text_tokens"] == 3


def test_image_usage_genai_prices_cannot_read_is_still_counted_as_tokens() -> None:
    obj = {"data": [{"b64_json": "x"}], "usage": {"input_tokens": 4, "output_tokens": 272, "total_tokens": 276}}
    usage = observe_body(media.ImagesAccumulator(info("images_generations", "m"), 0.0), json.dumps(obj).encode()).usage
    assert (usage.input_tokens, usage.output_tokens, usage.images, usage.pricing) == (4, 272, 1, ())


def test_dall_e_reports_images_only_and_an_error_body_reports_its_code() -> None:
    obs = observe_body(
        media.ImagesAccumulator(info("images_generations", "dall-e-3"), 0.0), b'{"data": [{"url": "u"}]}'
    )
    assert obs.usage == Usage(images=1) and obs.usage_source is UsageSource.REPORTED
    error = b'{"error": {"message": "no", "type": "invalid_request_error", "code": "content_policy_violation"}}'
    obs = observe_body(media.ImagesAccumulator(info("images_generations", "dall-e-3"), 0.0), error, 400)
    assert obs.error_type == "content_policy_violation" and obs.usage_source is UsageSource.NOT_APPLICABLE


def test_image_stream_first_partial_is_ttft_completed_events_add_up() -> None:
    partial = {"type": "image_edit.partial_image", "b64_json": "x" * 1000, "partial_image_index": 0}
    done = {"type": "image_edit.completed", "b64_json": "y", "usage": IMAGE_USAGE}
    stream = sse(partial, done, done)
    obs = feed_stream(media.ImagesAccumulator(info("images_edits", "gpt-image-1", stream=True), 0.0), stream, [5, 1100])
    assert obs.timings.first_token == 11.0  # the chunk that completed the partial image event
    assert obs.outcome is Outcome.COMPLETED and obs.usage.images == 2
    assert (obs.usage.input_tokens, obs.usage.output_tokens) == (30, 2112)
    assert dict(obs.usage.pricing)["input_image_tokens"] == 24
    cut = feed_stream(media.ImagesAccumulator(info("images_edits", "gpt-image-1", stream=True), 0.0), sse(partial))
    assert cut.outcome is Outcome.STREAM_INTERRUPTED and cut.usage_source is UsageSource.MISSING


def test_media_chunk_instants_are_partial_images_and_finished_images() -> None:
    partial = {"type": "image_generation.partial_image", "b64_json": "x", "partial_image_index": 0}
    done = {"type": "image_generation.completed", "b64_json": "y", "usage": IMAGE_USAGE}
    timed = dataclasses.replace(info("images_generations", "gpt-image-1", stream=True), chunk_times=True)
    stream = sse(partial, partial, done)
    first, second = len(sse(partial)), len(sse(partial, partial))
    obs = feed_stream(media.ImagesAccumulator(timed, 0.0), stream, [first, second])
    assert obs.timings.chunks == (10.0, 11.0, 12.0)
    # A transcript's done event repeats the text: no chunk of its own.
    delta = {"type": "transcript.text.delta", "delta": "tok "}
    text_done = {"type": "transcript.text.done", "text": "tok tok ", "usage": {"type": "tokens", "input_tokens": 1}}
    transcript = dataclasses.replace(info("audio_transcriptions", "gpt-4o-transcribe", stream=True), chunk_times=True)
    obs = feed_stream(media.TranscriptionAccumulator(transcript, 0.0), sse(delta, delta, text_done), [58, 116])
    assert obs.timings.chunks == (10.0, 11.0)


def test_stream_error_event_is_the_error_type() -> None:
    error = {"type": "error", "error": {"type": "server_error", "code": "image_generation_failed", "message": "x"}}
    obs = feed_stream(media.ImagesAccumulator(info("images_generations", "gpt-image-1", stream=True), 0.0), sse(error))
    assert obs.outcome is Outcome.UPSTREAM_ERROR and obs.error_type == "image_generation_failed"


def test_transcription_tokens_and_whisper_seconds() -> None:
    tokens = {
        "text": "hi",
        "usage": {
            "type": "tokens",
            "input_tokens": 17,
            "input_token_details": {"text_tokens": 2, "audio_tokens": 15},
            "output_tokens": 4,
            "total_tokens": 21,
        },
    }
    usage = observe_body(
        media.TranscriptionAccumulator(info("audio_transcriptions"), 0.0), json.dumps(tokens).encode()
    ).usage
    assert (usage.input_tokens, usage.output_tokens, usage.input_audio_tokens) == (17, 4, 15)
    assert dict(usage.pricing) == {
        "input_tokens": 17,
        "input_text_tokens": 2,
        "input_audio_tokens": 15,
        "output_tokens": 4,
    }
    whisper = {"text": "hi", "duration": 1.5, "usage": {"type": "duration", "seconds": 2}}
    usage = observe_body(
        media.TranscriptionAccumulator(info("audio_transcriptions"), 0.0), json.dumps(whisper).encode()
    ).usage
    assert usage.audio_seconds == 2 and usage.pricing == genai_pricing(whisper, "live") == (("audio_seconds", 2),)
    assert usage.input_tokens is None


def test_transcription_formats_that_cannot_carry_usage_are_not_missing() -> None:
    text = observe_body(
        media.TranscriptionAccumulator(info("audio_transcriptions", params={media.OUTPUT_TYPE: "text"}), 0.0), b"hi"
    )
    assert text.usage_source is UsageSource.NOT_APPLICABLE
    json_without = observe_body(media.TranscriptionAccumulator(info("audio_transcriptions"), 0.0), b'{"text": "hi"}')
    assert json_without.usage_source is UsageSource.MISSING  # json can carry it: its absence is news


def test_translations_report_only_a_verbose_duration() -> None:
    plain = observe_body(media.TranslationAccumulator(info("audio_translations"), 0.0), b'{"text": "hi"}')
    assert plain.usage_source is UsageSource.NOT_APPLICABLE
    verbose = b'{"task": "translate", "duration": 1.5, "text": "hi"}'
    obs = observe_body(media.TranslationAccumulator(info("audio_translations"), 0.0), verbose)
    assert obs.usage == Usage(audio_seconds=1.5, pricing=(("audio_seconds", 1.5),))


TRANSCRIPT_STREAM = sse(
    {"type": "transcript.text.delta", "delta": "tok1 ", "logprobs": None},
    {"delta": "tok2 ", "type": "transcript.text.delta"},  # the type not first: decoded, same result
    {
        "usage": {
            "type": "tokens",
            "input_tokens": 15,
            "input_token_details": {"audio_tokens": 15},
            "output_tokens": 2,
        },
        "type": "transcript.text.done",
        "text": "tok1 tok2 ",
    },
)


def test_transcription_stream_at_every_split_gives_the_same_observation() -> None:
    def key(obs: Observation) -> tuple[Any, ...]:
        return (
            obs.usage,
            obs.outcome,
            obs.usage_source,
            obs.timings.first_token is not None,
            obs.estimated_output_tokens,
        )

    whole = feed_stream(
        media.TranscriptionAccumulator(info("audio_transcriptions", "m", stream=True), 0.0), TRANSCRIPT_STREAM
    )
    assert whole.timings.first_token == 10.0 and whole.outcome is Outcome.COMPLETED
    assert (whole.usage.input_tokens, whole.usage.input_audio_tokens, whole.usage.output_tokens) == (15, 15, 2)
    for cut in range(1, len(TRANSCRIPT_STREAM)):
        acc = media.TranscriptionAccumulator(info("audio_transcriptions", "m", stream=True), 0.0)
        assert key(feed_stream(acc, TRANSCRIPT_STREAM, [cut])) == key(whole), cut


def test_transcription_stream_without_its_done_event_estimates_from_the_deltas() -> None:
    stream = TRANSCRIPT_STREAM[: TRANSCRIPT_STREAM.index(b'data: {"usage"')]
    obs = feed_stream(media.TranscriptionAccumulator(info("audio_transcriptions", "m", stream=True), 0.0), stream)
    assert obs.outcome is Outcome.STREAM_INTERRUPTED and obs.usage_source is UsageSource.MISSING
    assert obs.estimated_output_tokens == 2


def test_speech_never_buffers_and_bills_tts_1_by_the_requests_characters() -> None:
    tts = media.SpeechAccumulator(info("audio_speech", "tts-1-hd", params=SPEECH_42), 0.0)
    assert tts.reads_body is False
    observer = ResponseObserver(
        tts, content_type=b"audio/mpeg", content_encoding=b"", cut_usage=False, body_limit=10, on_failure=pytest.fail
    )
    observer.feed(b"\xff" * 100, 1.0)
    assert observer.body is None
    assert tts.finish(Outcome.COMPLETED, 200, 2.0).usage == Usage(pricing=(("input_characters", 42),))
    for outcome, status in (
        (Outcome.UPSTREAM_ERROR, 400),
        (Outcome.CLIENT_CLOSED, 200),
        (Outcome.STREAM_INTERRUPTED, 200),
    ):
        acc = media.SpeechAccumulator(info("audio_speech", "tts-1", params=SPEECH_42), 0.0)
        assert acc.finish(outcome, status, 2.0).usage == Usage(), outcome
    mini = media.SpeechAccumulator(info("audio_speech", "gpt-4o-mini-tts", params=SPEECH_42), 0.0)
    obs = mini.finish(Outcome.COMPLETED, 200, 2.0)
    assert obs.usage == Usage() and obs.usage_source is UsageSource.NOT_APPLICABLE  # binary: cannot carry usage


def test_speech_sse_usage_and_ttft() -> None:
    stream = sse(
        {"type": "speech.audio.delta", "audio": "AAAA"},
        {"type": "speech.audio.delta", "audio": "AAAA"},
        {"type": "speech.audio.done", "usage": {"input_tokens": 3, "output_tokens": 40, "total_tokens": 43}},
    )
    acc = media.SpeechAccumulator(
        info("audio_speech", "gpt-4o-mini-tts", stream=True, params={media.INPUT_CHARACTERS: 7}), 0.0
    )
    obs = feed_stream(acc, stream, [10, 60])
    assert (obs.usage.input_tokens, obs.usage.output_tokens, obs.usage.pricing) == (3, 40, ())
    assert obs.timings.first_token == 11.0 and obs.outcome is Outcome.COMPLETED and obs.estimated_output_tokens is None
    cut = feed_stream(media.SpeechAccumulator(info("audio_speech", "gpt-4o-mini-tts", stream=True), 0.0), stream[:60])
    assert cut.outcome is Outcome.STREAM_INTERRUPTED and cut.usage_source is UsageSource.MISSING


def test_moderations_name_the_model_and_report_no_usage() -> None:
    body = b'{"id": "modr-1", "model": "omni-moderation-2024-09-26", "results": []}'
    obs = observe_body(media.ModerationsAccumulator(info("moderations"), 0.0), body)
    assert (obs.response_model, obs.response_id, obs.usage_source) == (
        "omni-moderation-2024-09-26",
        "modr-1",
        UsageSource.NOT_APPLICABLE,
    )


def test_plus_adds_field_by_field() -> None:
    a = Usage(input_tokens=1, images=1, pricing=(("input_tokens", 1),))
    b = Usage(input_tokens=2, output_tokens=5, images=1, pricing=(("input_tokens", 2), ("output_tokens", 5)))
    assert media.plus(a, b) == Usage(
        input_tokens=3, output_tokens=5, images=2, pricing=(("input_tokens", 3), ("output_tokens", 5))
    )
    assert media.plus(None, b) is b and media.plus(a, None) is a


# ==== end to end: the openai SDK, the proxy, the simulator ==================================


def price(model: str, **usage: int | float) -> Decimal:
    """genai-prices' own figure, through its public API (not llmobs' price table)."""
    return genai_prices.calc_price(GenaiUsage(**usage), model, provider_id="openai").total_price


def normalise(body: bytes) -> bytes:
    body = re.sub(rb'"(id)":"[^"]*"', rb'"\1":"-"', body)
    body = re.sub(rb'"(created|created_at)":\d+', rb'"\1":0', body)
    return re.sub(rb"/sim-images/[^\"]+", b"/sim-images/-", body)


def once(proxy: Proxied, labels: dict[str, str], *, calls: int = 1, **more: str) -> None:
    """Each call counted exactly once, under its endpoint and model (`labels`)."""
    assert proxy.total("llmobs_requests_total") == calls
    assert proxy.total("llmobs_requests_total", **labels, **more) == calls


def series(proxy: Proxied, name: str, **labels: str) -> bool:
    """Whether any sample of `name` with these labels exists (a $0 cost is a series; unpriced is none)."""
    proxy.settle()
    return any(
        sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        for family in proxy.registry.collect()
        for sample in family.samples
    )


@pytest.fixture
def captured() -> Iterator[tuple[str, list[bytes]]]:
    """The simulator, keeping each request body it receives: (base URL, bodies)."""
    bodies: list[bytes] = []
    sim = create_simulator(SimConfig())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await sim(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        bodies.append(b"".join(chunks))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bodies[-1], "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await sim(scope, replay, send)

    with serve(app) as server:
        yield server.url + "/v1", bodies


def test_gpt_image_generation_tokens_images_cost_and_bytes(proxy: Proxied, upstream: ServerThread) -> None:
    sdk = sdk_client(proxy.base_url)
    result = sdk.images.generate(model="gpt-image-1", prompt="a red cat", n=2, size="1024x1536", quality="low")
    assert result.data is not None and len(result.data) == 2 and result.usage is not None
    u = result.usage
    assert (u.input_tokens, u.input_tokens_details.image_tokens, u.output_tokens) == (3, 0, 2 * 408)  # the sim's rule
    labels = {"endpoint": "images_generations", "model": "gpt-image-1"}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == u.input_tokens
    assert proxy.total("llmobs_tokens_total", **labels, type="input_image") == u.input_tokens_details.image_tokens
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == u.output_tokens
    assert proxy.total("llmobs_images_total", **labels) == 2
    expected = price(
        "gpt-image-1",
        input_tokens=u.input_tokens,
        input_text_tokens=u.input_tokens_details.text_tokens,
        input_image_tokens=u.input_tokens_details.image_tokens,
        output_tokens=u.output_tokens,
    )
    assert expected > 0
    assert proxy.total("llmobs_cost_usd_total", model="gpt-image-1") == pytest.approx(float(expected), rel=1e-12)
    once(proxy, labels)
    body = {"model": "gpt-image-1", "prompt": "a red cat"}
    with httpx.Client(timeout=10) as http:
        direct = http.post(upstream.url + "/v1/images/generations", json=body)
        proxied = http.post(proxy.base_url + "/images/generations", json=body)
    assert proxied.status_code == 200 and normalise(proxied.content) == normalise(direct.content)
    assert proxy.total("llmobs_images_total", **labels) == 3


def test_dall_e_images_are_counted_and_unpriced(proxy: Proxied) -> None:
    sdk = sdk_client(proxy.base_url)
    result = sdk.images.generate(model="dall-e-3", prompt="a cat")
    assert result.usage is None and result.data and result.data[0].url
    labels = {"endpoint": "images_generations", "model": "dall-e-3"}
    assert proxy.total("llmobs_images_total", **labels) == 1
    assert proxy.total("llmobs_unpriced_requests_total", model="dall-e-3") == 1
    assert not series(proxy, "llmobs_cost_usd_total") and proxy.total("llmobs_tokens_total") == 0
    assert proxy.total("llmobs_usage_missing_total") == 0
    once(proxy, labels)


def test_image_edit_multipart_is_forwarded_unchanged_and_counted(
    make_proxy: Callable[..., Proxied], captured: tuple[str, list[bytes]]
) -> None:
    url, bodies = captured
    proxy = make_proxy(url, provider="openai")
    images = [("a.png", PNG_1X1 + bytes(1000), "image/png"), ("b.png", b'name="model"\r\n' * 10, "image/png")]
    result = sdk_client(proxy.base_url).images.edit(model="gpt-image-1", prompt="add a hat", image=images)
    assert result.usage is not None
    u = result.usage
    assert u.input_tokens_details.image_tokens == math.ceil((len(PNG_1X1) + 1000) / 100) + math.ceil(140 / 100)
    labels = {"endpoint": "images_edits", "model": "gpt-image-1"}
    assert (
        proxy.total("llmobs_tokens_total", **labels, type="input")
        == u.input_tokens
        == 3 + u.input_tokens_details.image_tokens
    )
    assert proxy.total("llmobs_tokens_total", **labels, type="input_image") == u.input_tokens_details.image_tokens
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == u.output_tokens == 1056
    assert proxy.total("llmobs_images_total", **labels) == 1
    expected = price(
        "gpt-image-1",
        input_tokens=u.input_tokens,
        input_text_tokens=u.input_tokens_details.text_tokens,
        input_image_tokens=u.input_tokens_details.image_tokens,
        output_tokens=u.output_tokens,
    )
    assert proxy.total("llmobs_cost_usd_total", model="gpt-image-1") == pytest.approx(float(expected), rel=1e-12)
    once(proxy, labels)
    assert len(bodies) == 1 and bodies[0].count(b"\x89PNG") == 1  # forwarded (byte for byte: the next test)


def test_multipart_body_reaches_the_upstream_byte_for_byte(
    make_proxy: Callable[..., Proxied], captured: tuple[str, list[bytes]]
) -> None:
    url, bodies = captured
    proxy = make_proxy(url, provider="openai")
    body, content_type = encoded({"model": "whisper-1"}, {"file": ("a.wav", WAV_1_5_S + b"\r\n--x\r\n")})
    with httpx.Client(timeout=10) as http:
        response = http.post(
            proxy.base_url + "/audio/transcriptions", content=body, headers={"content-type": content_type.decode()}
        )
    assert response.status_code == 200 and bodies == [body]
    assert proxy.total("llmobs_audio_seconds_total", endpoint="audio_transcriptions", model="whisper-1") == 2


def test_gpt_4o_transcribe_tokens_and_cost(proxy: Proxied) -> None:
    sdk = sdk_client(proxy.base_url)
    result = sdk.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", WAV_1_5_S, "audio/wav"), prompt="names: Ada"
    )
    assert result.usage is not None and result.usage.type == "tokens" and result.usage.input_token_details
    u, details = result.usage, result.usage.input_token_details
    assert (details.audio_tokens, details.text_tokens, u.output_tokens) == (15, 2, 20)  # the sim's rule
    labels = {"endpoint": "audio_transcriptions", "model": "gpt-4o-transcribe"}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == u.input_tokens == 17
    assert proxy.total("llmobs_tokens_total", **labels, type="input_audio") == details.audio_tokens
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == u.output_tokens
    assert details.audio_tokens is not None and details.text_tokens is not None
    expected = price(
        "gpt-4o-transcribe",
        input_tokens=u.input_tokens,
        input_audio_tokens=details.audio_tokens,
        input_text_tokens=details.text_tokens,
        output_tokens=u.output_tokens,
    )
    # Audio input is priced at its own rate: more than the same tokens as text.
    assert expected > price("gpt-4o-transcribe", input_tokens=u.input_tokens, output_tokens=u.output_tokens)
    assert proxy.total("llmobs_cost_usd_total", model="gpt-4o-transcribe") == pytest.approx(float(expected), rel=1e-12)
    assert proxy.total("llmobs_audio_seconds_total") == 0
    once(proxy, labels, stream="false")


def test_whisper_seconds_verbose_and_text(proxy: Proxied) -> None:
    sdk = sdk_client(proxy.base_url)
    plain = sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV_1_5_S, "audio/wav"))
    verbose = sdk.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", WAV_1_5_S, "audio/wav"), response_format="verbose_json"
    )
    text = sdk.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", WAV_1_5_S, "audio/wav"), response_format="text"
    )
    assert isinstance(text, str) and text.startswith("tok1")
    assert plain.usage is not None and plain.usage.type == "duration" and verbose.usage is not None
    seconds = plain.usage.seconds + verbose.usage.seconds
    assert seconds == 4  # ceil(1.5) each: the sim bills whole seconds
    labels = {"endpoint": "audio_transcriptions", "model": "whisper-1"}
    assert proxy.total("llmobs_audio_seconds_total", **labels) == seconds
    expected = 2 * price("whisper-1", audio_seconds=plain.usage.seconds)
    assert proxy.total("llmobs_cost_usd_total", model="whisper-1") == pytest.approx(float(expected), rel=1e-12)
    assert proxy.total("llmobs_usage_missing_total") == 0  # the text answer cannot carry usage
    assert proxy.total("llmobs_unpriced_requests_total") == 0
    assert proxy.total("llmobs_tokens_total") == 0
    once(proxy, labels, calls=3)


def test_streamed_transcription_tokens_ttft_and_events(proxy: Proxied, upstream: ServerThread) -> None:
    def events(base_url: str) -> list[Any]:
        stream = sdk_client(base_url).audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("a.wav", WAV_1_5_S, "audio/wav"), stream=True
        )
        return [e.model_dump() for e in stream]

    proxied = events(proxy.base_url)
    assert proxied == events(upstream.url + "/v1")
    done = proxied[-1]
    assert (
        done["type"] == "transcript.text.done" and [e["type"] for e in proxied[:-1]] == ["transcript.text.delta"] * 20
    )
    usage = done["usage"]
    labels = {"endpoint": "audio_transcriptions", "model": "gpt-4o-mini-transcribe"}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == usage["input_tokens"] == 15
    assert (
        proxy.total("llmobs_tokens_total", **labels, type="input_audio") == usage["input_token_details"]["audio_tokens"]
    )
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == usage["output_tokens"] == 20
    assert proxy.total("llmobs_time_to_first_token_seconds_count", **labels) == 1
    expected = price(
        "gpt-4o-mini-transcribe",
        input_tokens=15,
        input_audio_tokens=15,
        input_text_tokens=usage["input_token_details"]["text_tokens"],
        output_tokens=20,
    )
    assert proxy.total("llmobs_cost_usd_total", model="gpt-4o-mini-transcribe") == pytest.approx(
        float(expected), rel=1e-12
    )
    assert proxy.total("llmobs_estimated_tokens_total") == 0
    once(proxy, labels, stream="true", outcome="completed")


def test_translations_through_httpx_multipart(proxy: Proxied) -> None:
    # openai-python deprecates audio.translations; httpx is the SDK's own transport.
    files = {"file": ("a.wav", WAV_1_5_S, "audio/wav")}
    with httpx.Client(timeout=10) as http:
        plain = http.post(proxy.base_url + "/audio/translations", files=files, data={"model": "whisper-1"})
        verbose = http.post(
            proxy.base_url + "/audio/translations",
            files=files,
            data={"model": "whisper-1", "response_format": "verbose_json"},
        )
    assert set(plain.json()) == {"text"} and "usage" not in verbose.json()
    duration = verbose.json()["duration"]
    assert duration == 1.5
    labels = {"endpoint": "audio_translations", "model": "whisper-1"}
    assert proxy.total("llmobs_audio_seconds_total", **labels) == duration
    expected = price("whisper-1", audio_seconds=duration)
    assert proxy.total("llmobs_cost_usd_total", model="whisper-1") == pytest.approx(float(expected), rel=1e-12)
    assert proxy.total("llmobs_usage_missing_total") == 0
    once(proxy, labels, calls=2)


def test_binary_speech_bytes_and_per_character_cost(proxy: Proxied, upstream: ServerThread) -> None:
    text = "Bonjour à tous " * 20  # 300 characters: 30,000 bytes of audio in 8 chunks

    def speak(base_url: str, model: str) -> bytes:
        with sdk_client(base_url).audio.speech.with_streaming_response.create(
            model=model, voice="alloy", input=text
        ) as response:
            assert response.headers["content-type"] == "audio/mpeg"
            return bytes(response.read())

    proxied = speak(proxy.base_url, "tts-1")
    assert proxied == speak(upstream.url + "/v1", "tts-1") == speech_audio(text)
    labels = {"endpoint": "audio_speech", "model": "tts-1"}
    expected = price("tts-1", input_characters=len(text))
    assert expected == Decimal(15) * len(text) / 1_000_000
    assert proxy.total("llmobs_cost_usd_total", model="tts-1") == pytest.approx(float(expected), rel=1e-12)
    assert proxy.total("llmobs_tokens_total") == 0 and proxy.total("llmobs_usage_missing_total") == 0
    once(proxy, labels, stream="false")
    # gpt-4o-mini-tts bills tokens, which binary audio cannot report: no cost, and not "missing".
    assert speak(proxy.base_url, "gpt-4o-mini-tts") == speech_audio(text)
    assert proxy.total("llmobs_requests_total", model="gpt-4o-mini-tts") == 1
    assert not series(proxy, "llmobs_cost_usd_total", model="gpt-4o-mini-tts")  # not even a $0 one
    assert proxy.total("llmobs_unpriced_requests_total") == 0 and proxy.total("llmobs_usage_missing_total") == 0


def test_sse_speech_usage_cost_ttft_and_bytes(proxy: Proxied, upstream: ServerThread) -> None:
    text = "hello there " * 40
    body = {
        "model": "gpt-4o-mini-tts",
        "voice": "alloy",
        "input": text,
        "instructions": "be calm",
        "stream_format": "sse",
    }

    def speak(base_url: str) -> bytes:
        with sdk_client(base_url).audio.speech.with_streaming_response.create(**body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            return bytes(response.read())

    proxied = speak(proxy.base_url)
    assert proxied == speak(upstream.url + "/v1")
    done = json.loads(proxied.rstrip(b"\n").rsplit(b"\n\n", 1)[1].removeprefix(b"data: "))
    usage = done["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (82, 480)  # the sim's rule
    labels = {"endpoint": "audio_speech", "model": "gpt-4o-mini-tts"}
    assert proxy.total("llmobs_tokens_total", **labels, type="input") == usage["input_tokens"]
    assert proxy.total("llmobs_tokens_total", **labels, type="output") == usage["output_tokens"]
    assert proxy.total("llmobs_time_to_first_token_seconds_count", **labels) == 1
    expected = price("gpt-4o-mini-tts", input_tokens=82, output_tokens=480)
    assert proxy.total("llmobs_cost_usd_total", model="gpt-4o-mini-tts") == pytest.approx(float(expected), rel=1e-12)
    once(proxy, labels, stream="true", outcome="completed")


def test_moderations_counted_under_the_served_model(proxy: Proxied, upstream: ServerThread) -> None:
    result = sdk_client(proxy.base_url).moderations.create(input=["a kind word", "sim-flag this"])
    assert [r.flagged for r in result.results] == [False, True]
    labels = {"endpoint": "moderations", "model": "omni-moderation-latest"}
    once(proxy, labels)
    assert proxy.total("llmobs_usage_missing_total") == 0 and proxy.total("llmobs_unpriced_requests_total") == 0
    assert not series(proxy, "llmobs_cost_usd_total") and proxy.total("llmobs_tokens_total") == 0
    body = {"input": "hi", "model": "omni-moderation-2024-09-26"}
    with httpx.Client(timeout=10) as http:
        direct = http.post(upstream.url + "/v1/moderations", json=body)
        proxied = http.post(proxy.base_url + "/moderations", json=body)
    assert normalise(proxied.content) == normalise(direct.content)
    assert proxy.total("llmobs_requests_total", endpoint="moderations", model="omni-moderation-2024-09-26") == 1


def test_multipart_over_the_body_limit_is_a_413_never_forwarded(
    make_proxy: Callable[..., Proxied], captured: tuple[str, list[bytes]]
) -> None:
    url, bodies = captured
    proxy = make_proxy(url, provider="openai", max_body_bytes=50_000)
    sdk = sdk_client(proxy.base_url)
    with pytest.raises(openai.APIStatusError) as rejected:
        sdk.images.edit(model="gpt-image-1", prompt="x", image=("a.png", bytes(60_000), "image/png"))
    assert rejected.value.status_code == 413
    assert bodies == []
    assert proxy.total("llmobs_requests_total", endpoint="images_edits", status_code="413", outcome="rejected") == 1
    sdk.audio.transcriptions.create(model="whisper-1", file=("a.wav", bytes(32_000), "audio/wav"))  # within: served
    assert len(bodies) == 1 and proxy.total("llmobs_audio_seconds_total") == 1


def test_a_multipart_body_is_never_read_past_the_limit() -> None:
    app = create_app(
        Settings(upstream_url="http://127.0.0.1:9/v1", max_body_bytes=1000),
        registry=CollectorRegistry(),
        otel_from_env=False,
        strict=True,
    )
    pulled = 0
    chunk = part("file", b"\x00" * 80, filename="a.wav")
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}  # a client that never stops

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/audio/transcriptions",
        "raw_path": b"/v1/audio/transcriptions",
        "query_string": b"",
        "headers": [(b"content-type", CT)],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert (pulled - 1) * len(chunk) <= 1000 < pulled * len(chunk)  # stopped at the first chunk past the limit


def test_an_unreadable_multipart_body_is_forwarded_as_it_came(
    make_proxy: Callable[..., Proxied], captured: tuple[str, list[bytes]]
) -> None:
    url, bodies = captured
    proxy = make_proxy(url, provider="openai")
    body = b"--XyZ\r\ntruncated"
    with httpx.Client(timeout=10) as http:
        response = http.post(
            proxy.base_url + "/audio/transcriptions", content=body, headers={"content-type": CT.decode()}
        )
    assert response.status_code == 400 and bodies == [body]
    once(proxy, {"endpoint": "audio_transcriptions", "model": ""}, outcome="upstream_error")
    assert proxy.total("llmobs_telemetry_errors_total") == 0


def test_event_type_sniffing_only_trusts_a_leading_type() -> None:
    nested_first = Event(
        data=b'{"usage": {"type": "tokens", "input_tokens": 1, "output_tokens": 2}, "type": "transcript.text.done"}'
    )
    assert media._typed(nested_first)[0] == "transcript.text.done"
    assert media._typed(Event(data=b' {"type" : "speech.audio.delta", "audio": "x"}')) == ("speech.audio.delta", None)
    assert media._typed(Event(data=b"{}", event="image_generation.completed"))[0] == "image_generation.completed"


def test_spans_name_the_operation_and_output_type(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exported))
    proxy = make_proxy(upstream.url + "/v1", provider="openai", tracer_provider=tracer_provider)
    sdk = sdk_client(proxy.base_url)
    with sdk.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="hello") as response:
        response.read()
    sdk.moderations.create(input="hi")
    proxy.settle()
    spans = {span.name: dict(span.attributes or {}) for span in exported.get_finished_spans()}
    speech = spans["generate_content tts-1"]
    assert (speech["gen_ai.operation.name"], speech["gen_ai.output.type"]) == ("generate_content", "speech")
    assert speech["llmobs.cost_usd"] == pytest.approx(float(price("tts-1", input_characters=5)), rel=1e-12)
    assert not [key for key in speech if key.startswith("llmobs.request")]  # the character count stays inside
    moderation = spans["moderation"]
    assert moderation["gen_ai.operation.name"] == "moderation" and "gen_ai.output.type" not in moderation
    assert moderation["gen_ai.response.model"] == "omni-moderation-latest"
