"""Conformance to the pinned GenAI semantic conventions, on real OTLP exports.

A live proxy exports over OTLP/HTTP (protobuf) to the test receiver, in front of the simulator.
The official openai and anthropic SDKs call every endpoint llmobs accounts for (chat,
completions, embeddings, Responses, Anthropic messages, images, audio, Realtime), streamed,
not, and failing, each request in a trace of its own. Every span and metric point received
is then checked against the pinned opentelemetry-semantic-conventions package: each name
exists there (or is llmobs's own), each unit and description is the pinned helper's, each
histogram has the conventions' buckets, and each requirement level holds (required always,
conditionally required exactly when its condition holds, recommended when the response told
it, opt-in never without content capture).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import pkgutil
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes, openai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from websockets.sync.client import connect

from llmobs import __version__
from llmobs.app import create_app
from llmobs.config import Settings
from llmobs.dev.harness import serve
from llmobs.records import Outcome
from llmobs.sim import SimConfig
from llmobs.sim import create_app as create_simulator
from llmobs.telemetry import semconv as sc
from otlp_receiver import OTLPReceiver, ReceivedPoint, ReceivedSpan

# openai-python's sync Realtime client opens its websockets connection without a context
# manager, which websockets >= 17.1 deprecates; the warning is the SDK's.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

KEY = "sk-conformance-0123456789abcdef"
TOKENS = 12  # output tokens of every answer (SimConfig.output_tokens): 12 chunks, 11 intervals
MESSAGES = [{"role": "user", "content": "tell me a story"}]
WAV = b"RIFF" + bytes(32_000)  # one second of 16 kHz 16-bit mono, as the simulator measures it
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
SEMCONV_PREFIXES = ("gen_ai.", "server.", "error.", "http.", "openai.")
OPT_IN = {
    sc.GEN_AI_INPUT_MESSAGES,
    sc.GEN_AI_OUTPUT_MESSAGES,
    sc.GEN_AI_SYSTEM_INSTRUCTIONS,
    sc.GEN_AI_TOOL_DEFINITIONS,
}
# The buckets the GenAI metric conventions ask for, as their docs write them.
DOC_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DOC_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


@dataclass
class Case:
    """One request: how to make it, and what its span and points must say."""

    name: str
    endpoint: str  # llmobs's endpoint label (Prometheus)
    operation: str
    model: str
    run: Callable[[Clients, dict[str, str]], int]  # returns the output chunks the client saw
    stream: bool = False
    error: str | None = None  # the error.type expected; None: completed
    provider: str = "openai"
    output_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # request attributes the span must carry
    input_tokens: bool = True  # the response reports token counts (tts-1 bills characters)
    output_tokens: bool = True  # the response reports an output count (embeddings: none)
    response_id: bool = True
    response_model: bool = True  # the response names its model (image and audio answers do not)
    finish_reasons: bool = True
    chunks_exact: bool = True  # the client saw every output chunk the proxy saw (not when it left early)
    trace_id: str = ""
    chunks_seen: int = 0


@dataclass
class Clients:
    openai: openai.OpenAI
    anthropic: anthropic.Anthropic
    proxy_url: str


# -- the requests -----------------------------------------------------------------------------------


def _count(stream: Any, has_output: Callable[[Any], bool]) -> int:
    return sum(1 for event in stream if has_output(event))


def chat(c: Clients, h: dict[str, str]) -> int:
    c.openai.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        temperature=0.5,
        max_tokens=30,
        seed=7,
        n=2,
        response_format={"type": "json_object"},
        tools=[TOOL],
        prompt_cache_key="conv-42",
        extra_headers=h,
    )
    return 0


def chat_stream(c: Clients, h: dict[str, str]) -> int:
    stream = c.openai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={**h, "x-llmobs-tenant": "team-a"}
    )
    return _count(stream, lambda chunk: bool(chunk.choices and chunk.choices[0].delta.content))


def chat_failing(model: str, stream: bool = False) -> Callable[[Clients, dict[str, str]], int]:
    def run(c: Clients, h: dict[str, str]) -> int:
        seen = 0
        with contextlib.suppress(openai.APIError, openai.APIConnectionError):
            response = c.openai.chat.completions.create(model=model, messages=MESSAGES, stream=stream, extra_headers=h)
            if stream:
                for chunk in response:
                    seen += bool(chunk.choices and chunk.choices[0].delta.content)
        return seen

    return run


def completions(stream: bool, model: str) -> Callable[[Clients, dict[str, str]], int]:
    def run(c: Clients, h: dict[str, str]) -> int:
        response = c.openai.completions.create(
            model=model, prompt="once upon", max_tokens=50, stream=stream, extra_headers=h
        )
        return _count(response, lambda chunk: bool(chunk.choices and chunk.choices[0].text)) if stream else 0

    return run


def completions_failing(c: Clients, h: dict[str, str]) -> int:
    with pytest.raises(openai.InternalServerError):
        c.openai.completions.create(model="sim-error-500", prompt="x", extra_headers=h)
    return 0


def embeddings(c: Clients, h: dict[str, str]) -> int:
    result = c.openai.embeddings.create(
        model="text-embedding-3-small", input="two words", dimensions=8, extra_headers=h
    )
    assert len(result.data[0].embedding) == 8
    return 0


def embeddings_failing(c: Clients, h: dict[str, str]) -> int:
    with pytest.raises(openai.BadRequestError):
        c.openai.embeddings.create(model="sim-error-400", input="x", extra_headers=h)
    return 0


def responses(stream: bool, model: str) -> Callable[[Clients, dict[str, str]], int]:
    def run(c: Clients, h: dict[str, str]) -> int:
        response = c.openai.responses.create(
            model=model, input="hello", temperature=0.2, stream=stream, extra_headers=h
        )
        if not stream:
            return 0
        return _count(response, lambda event: event.type == "response.output_text.delta")

    return run


def responses_failing(c: Clients, h: dict[str, str]) -> int:
    stream = c.openai.responses.create(model="sim-stream-error", input="hello", stream=True, extra_headers=h)
    return _count(stream, lambda event: event.type == "response.output_text.delta")


def messages(stream: bool, model: str) -> Callable[[Clients, dict[str, str]], int]:
    def run(c: Clients, h: dict[str, str]) -> int:
        response = c.anthropic.messages.create(
            model=model,
            max_tokens=100,
            messages=MESSAGES,
            stream=stream,
            extra_headers=h,
            extra_body={"temperature": 0.3},  # this SDK version has no `temperature` argument
        )
        if not stream:
            return 0
        return _count(response, lambda event: event.type == "content_block_delta")

    return run


def messages_overloaded(c: Clients, h: dict[str, str]) -> int:
    seen = 0
    with pytest.raises(anthropic.APIStatusError):
        for event in c.anthropic.messages.create(
            model="sim-overloaded",
            max_tokens=100,
            messages=MESSAGES,
            stream=True,
            extra_headers=h,
        ):
            seen += event.type == "content_block_delta"
    return seen


def images(c: Clients, h: dict[str, str]) -> int:
    c.openai.images.generate(model="gpt-image-1", prompt="a red fox", size="1024x1024", extra_headers=h)
    return 0


def images_stream(c: Clients, h: dict[str, str]) -> int:
    stream = c.openai.images.generate(
        model="gpt-image-1-mini", prompt="a red fox", stream=True, partial_images=2, extra_headers=h
    )
    return _count(stream, lambda event: event.type in ("image_generation.partial_image", "image_generation.completed"))


def images_failing(c: Clients, h: dict[str, str]) -> int:
    with pytest.raises(openai.BadRequestError):
        c.openai.images.generate(model="sim-error-400", prompt="x", extra_headers=h)
    return 0


def transcription(c: Clients, h: dict[str, str]) -> int:
    c.openai.audio.transcriptions.create(model="gpt-4o-mini-transcribe", file=("a.wav", WAV), extra_headers=h)
    return 0


def transcription_stream(c: Clients, h: dict[str, str]) -> int:
    stream = c.openai.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", WAV), stream=True, extra_headers=h
    )
    return _count(stream, lambda event: event.type == "transcript.text.delta")


def transcription_failing(c: Clients, h: dict[str, str]) -> int:
    with pytest.raises(openai.InternalServerError):
        c.openai.audio.transcriptions.create(model="sim-error-500", file=("a.wav", WAV), extra_headers=h)
    return 0


def speech(c: Clients, h: dict[str, str]) -> int:
    audio = c.openai.audio.speech.create(model="tts-1", voice="alloy", input="hello there", extra_headers=h)
    assert audio.content
    return 0


def realtime(c: Clients, h: dict[str, str]) -> int:
    seen = 0
    with c.openai.realtime.connect(model="gpt-realtime", extra_headers=h) as conn:
        assert conn.recv().type == "session.created"
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        )
        conn.response.create(response={"output_modalities": ["text"]})
        for event in conn:
            seen += event.type == "response.output_text.delta"
            if event.type == "response.done":
                break
    return seen


def realtime_dropped(c: Clients, h: dict[str, str]) -> int:
    """The client leaves mid-response (a reset, no close frame): the response ends client_closed."""
    url = c.proxy_url.replace("http", "ws", 1) + "/v1/realtime?model=gpt-realtime-mini"
    ws = connect(url, additional_headers={**h, "authorization": f"Bearer {KEY}", "x-sim-output-tokens": "2000"})
    while json.loads(ws.recv())["type"] != "session.created":
        pass
    ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
    while json.loads(ws.recv())["type"] != "response.output_text.delta":
        pass
    ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    ws.socket.close()
    return 1


def cases() -> list[Case]:
    """Every endpoint, streamed (where the API streams), not, and failing."""
    json_out, image, speech_out = sc.OUTPUT_TYPE_JSON, sc.OUTPUT_TYPE_IMAGE, sc.OUTPUT_TYPE_SPEECH
    chat_params = {
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 30,
        "gen_ai.request.seed": 7,
        "gen_ai.request.choice.count": 2,
        "gen_ai.conversation.id": "conv-42",
        "openai.api.type": "chat_completions",
        "llmobs.request.tool_definitions": 1,
    }
    return [
        Case("chat", "chat_completions", "chat", "gpt-4o", chat, output_type=json_out, params=chat_params),
        Case("chat stream", "chat_completions", "chat", "gpt-4o-mini", chat_stream, stream=True),
        Case("chat 429", "chat_completions", "chat", "sim-error-429", chat_failing("sim-error-429"),
             error="rate_limit_exceeded"),
        Case("chat 503 no body", "chat_completions", "chat", "sim-error-503-empty",
             chat_failing("sim-error-503-empty"), error="503"),
        Case("chat stream cut", "chat_completions", "chat", "sim-reset", chat_failing("sim-reset", stream=True),
             stream=True, error="stream_interrupted"),
        Case("completions", "completions", "text_completion", "gpt-3.5-turbo-instruct",
             completions(False, "gpt-3.5-turbo-instruct"), params={"gen_ai.request.max_tokens": 50}),
        Case("completions stream", "completions", "text_completion", "davinci-002", completions(True, "davinci-002"),
             stream=True),
        Case("completions 500", "completions", "text_completion", "sim-error-500", completions_failing,
             error="server_error"),
        Case("embeddings", "embeddings", "embeddings", "text-embedding-3-small", embeddings, output_tokens=False,
             response_id=False, finish_reasons=False,
             params={"gen_ai.embeddings.dimension.count": 8, "gen_ai.request.encoding_formats": ["base64"]}),
        Case("embeddings 400", "embeddings", "embeddings", "sim-error-400", embeddings_failing,
             error="invalid_request_error"),
        Case("responses", "responses", "chat", "gpt-4.1", responses(False, "gpt-4.1"),
             params={"gen_ai.request.temperature": 0.2, "openai.api.type": "responses"}),
        Case("responses stream", "responses", "chat", "gpt-4.1-mini", responses(True, "gpt-4.1-mini"), stream=True),
        Case("responses failed", "responses", "chat", "sim-stream-error", responses_failing, stream=True,
             error="server_error"),
        Case("messages", "messages", "chat", "claude-sonnet-4-6", messages(False, "claude-sonnet-4-6"),
             provider="anthropic", params={"gen_ai.request.max_tokens": 100, "gen_ai.request.temperature": 0.3}),
        Case("messages stream", "messages", "chat", "claude-haiku-4-5", messages(True, "claude-haiku-4-5"),
             stream=True, provider="anthropic"),
        Case("messages overloaded", "messages", "chat", "sim-overloaded", messages_overloaded, stream=True,
             provider="anthropic", error="overloaded_error"),
        Case("images", "images_generations", "generate_content", "gpt-image-1", images, output_type=image,
             response_id=False, response_model=False, finish_reasons=False),
        Case("images stream", "images_generations", "generate_content", "gpt-image-1-mini", images_stream,
             stream=True, output_type=image, response_id=False, response_model=False, finish_reasons=False),
        Case("images 400", "images_generations", "generate_content", "sim-error-400", images_failing,
             output_type=image, error="invalid_request_error"),
        Case("transcription", "audio_transcriptions", "generate_content", "gpt-4o-mini-transcribe", transcription,
             output_type=json_out, response_id=False, response_model=False, finish_reasons=False),
        Case("transcription stream", "audio_transcriptions", "generate_content", "gpt-4o-transcribe",
             transcription_stream, stream=True, output_type=json_out, response_id=False, response_model=False,
             finish_reasons=False),
        Case("transcription 500", "audio_transcriptions", "generate_content", "sim-error-500", transcription_failing,
             output_type=json_out, error="server_error"),
        Case("speech", "audio_speech", "generate_content", "tts-1", speech, output_type=speech_out,
             input_tokens=False, output_tokens=False, response_id=False, response_model=False, finish_reasons=False),
        Case("realtime", "realtime", "chat", "gpt-realtime", realtime, stream=True, response_id=True),
        Case("realtime dropped", "realtime", "chat", "gpt-realtime-mini", realtime_dropped, stream=True,
             error="client_closed", chunks_exact=False),
    ]  # fmt: skip


# -- one run, real exports ----------------------------------------------------------------------------


@dataclass
class Exports:
    cases: list[Case]
    spans: dict[str, ReceivedSpan]  # by the trace id of its case
    points: list[ReceivedPoint]  # every point of every export
    registry: CollectorRegistry

    def of(self, metric: str, case: Case, **attributes: Any) -> list[ReceivedPoint]:
        """The last exported point of each attribute set of `metric` that is `case`'s."""
        return self.latest(metric, **{OP: case.operation, MODEL: case.model}, **attributes)

    def latest(self, metric: str, **attributes: Any) -> list[ReceivedPoint]:
        """The last exported point of each attribute set of `metric` that has `attributes`."""
        found: dict[str, ReceivedPoint] = {}
        for point in self.points:
            if point.metric == metric and all(point.attributes.get(k) == v for k, v in attributes.items()):
                found[repr(sorted(point.attributes.items()))] = point
        return list(found.values())


@pytest.fixture(scope="module")
def exports() -> Iterator[Exports]:
    all_cases = cases()
    with (
        OTLPReceiver() as receiver,
        pytest.MonkeyPatch.context() as env,
        serve(create_simulator(SimConfig(chunk_gap=0.002, output_tokens=TOKENS))) as upstream,
    ):
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        env.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
        env.delenv("OTEL_SERVICE_NAME", raising=False)
        env.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        registry = CollectorRegistry()
        app = create_app(Settings(upstream_url=upstream.url + "/v1"), registry=registry, strict=True)
        assert app.tracer_provider is not None and app.meter_provider is not None
        with serve(app) as proxy:
            clients = Clients(
                openai.OpenAI(base_url=proxy.url + "/v1", api_key=KEY, max_retries=0),
                anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0),
                proxy.url,
            )
            for number, case in enumerate(all_cases, start=1):
                case.trace_id = f"c0f0{number:028x}"
                headers = {"traceparent": f"00-{case.trace_id}-{number:016x}-01"}
                case.chunks_seen = case.run(clients, headers)
            _settle(app)
            clients.openai.close()
            clients.anthropic.close()
        # Leaving serve() shut the app down, which flushed both providers.
        spans = {span.trace_id: span for span in receiver.spans}
        yield Exports(all_cases, spans, receiver.points, registry)


def _settle(app: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while app.proxy.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)


def span_of(exports: Exports, case: Case) -> ReceivedSpan:
    assert case.trace_id in exports.spans, f"{case.name}: no span exported"
    return exports.spans[case.trace_id]


# -- the pinned package ---------------------------------------------------------------------------------


def pinned_names() -> set[str]:
    """Every attribute and metric name the installed semantic-conventions package defines."""
    names: set[str] = set()
    for family in ("attributes", "metrics", "_incubating.attributes", "_incubating.metrics"):
        package = importlib.import_module(f"opentelemetry.semconv.{family}")
        modules = [package] + [
            importlib.import_module(f"{package.__name__}.{info.name}")
            for info in pkgutil.iter_modules(package.__path__)
        ]
        for module in modules:
            names.update(v for k, v in vars(module).items() if k.isupper() and isinstance(v, str) and "." in v)
    return names


class _Recording:
    """A Meter stand-in of the test's own: what a pinned create_* helper asks for."""

    def create_histogram(self, name: str, unit: str = "", description: str = "", **_: Any) -> tuple[str, str, str]:
        return name, unit, description


def pinned_metric(create: Callable[[Meter], Histogram]) -> tuple[str, str, str]:
    return create(_Recording())


PINNED_METRICS = {
    name: (unit, description)
    for name, unit, description in (
        pinned_metric(gen_ai_metrics.create_gen_ai_client_token_usage),
        pinned_metric(gen_ai_metrics.create_gen_ai_client_operation_duration),
        pinned_metric(gen_ai_metrics.create_gen_ai_client_operation_time_to_first_chunk),
        pinned_metric(gen_ai_metrics.create_gen_ai_client_operation_time_per_output_chunk),
    )
}
OP, PROVIDER, MODEL, RESPONSE_MODEL = (
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model"
)  # fmt: skip
# Attributes each metric may carry: the conventions' list, and llmobs.tenant on cost.
COMMON = {OP, PROVIDER, MODEL, RESPONSE_MODEL, "server.address", "server.port"}
METRIC_ATTRIBUTES = {
    "gen_ai.client.token.usage": COMMON | {"gen_ai.token.type"},
    "gen_ai.client.operation.duration": COMMON | {"error.type"},
    "gen_ai.client.operation.time_to_first_chunk": COMMON,
    "gen_ai.client.operation.time_per_output_chunk": COMMON,
    "llmobs.cost": {OP, PROVIDER, MODEL, "llmobs.tenant"},
}


def test_the_installed_package_is_the_pinned_version() -> None:
    assert importlib.metadata.version("opentelemetry-semantic-conventions") == sc.VERSION
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"opentelemetry-semantic-conventions=={sc.VERSION}"' in pyproject


def test_names_ahead_of_the_pin_are_not_in_it_yet() -> None:
    """Once a bump of the pin brings them, they must be imported from the package instead."""
    pinned = pinned_names()
    assert sc.AHEAD_OF_PIN and not sc.AHEAD_OF_PIN & pinned
    assert {sc.GEN_AI_OPERATION_NAME, sc.ERROR_TYPE, sc.GEN_AI_CLIENT_TOKEN_USAGE} <= pinned  # the scan works


# -- the exports --------------------------------------------------------------------------------------


def test_every_endpoint_streamed_not_and_errored_was_exported(exports: Exports) -> None:
    covered: dict[str, set[str]] = {}
    for case in exports.cases:
        span_of(exports, case)
        kind = "errored" if case.error else "streamed" if case.stream else "not streamed"
        covered.setdefault(case.endpoint, set()).add(kind)
    assert len(exports.spans) == len(exports.cases)  # one span per request, no stray ones
    for endpoint in ("chat_completions", "completions", "responses", "messages", "images_generations"):
        assert covered[endpoint] == {"streamed", "not streamed", "errored"}, endpoint
    assert covered["embeddings"] == {"not streamed", "errored"}  # the API has no streaming
    assert covered["audio_transcriptions"] == {"streamed", "not streamed", "errored"}
    assert covered["audio_speech"] == {"not streamed"} and covered["realtime"] == {"streamed", "errored"}


def test_every_name_is_the_pinned_packages_or_llmobs_own(exports: Exports) -> None:
    """Names collected from the exports themselves, not from a list: a rename fails here."""
    pinned = pinned_names()
    emitted = {key for span in exports.spans.values() for key in span.attributes}
    emitted |= {key for point in exports.points for key in point.attributes}
    metrics = {point.metric for point in exports.points}
    for name in emitted | metrics:
        if name.startswith(SEMCONV_PREFIXES):
            assert name in pinned or name in sc.AHEAD_OF_PIN, f"{name} is not in semconv {sc.VERSION}"
        else:
            assert name.startswith(sc.PREFIX), f"{name}: llmobs's own names start with {sc.PREFIX}"
    assert metrics == set(PINNED_METRICS) | {sc.COST_METRIC}
    ahead = emitted & sc.AHEAD_OF_PIN
    assert ahead == sc.AHEAD_OF_PIN, ahead  # audio: transcriptions, Realtime; image: images


def test_well_known_values_are_the_pinned_ones(exports: Exports) -> None:
    operations = {v.value for v in gen_ai_attributes.GenAiOperationNameValues}
    providers = {v.value for v in gen_ai_attributes.GenAiProviderNameValues}
    output_types = {v.value for v in gen_ai_attributes.GenAiOutputTypeValues}
    api_types = {v.value for v in openai_attributes.OpenaiApiTypeValues}
    for span in exports.spans.values():
        attrs = span.attributes
        assert attrs[OP] in operations and attrs[PROVIDER] in providers
        assert attrs.get("gen_ai.output.type", "text") in output_types
        assert attrs.get("openai.api.type", "responses") in api_types
    token_types = {v.value for v in gen_ai_attributes.GenAiTokenTypeValues}
    assert {p.attributes["gen_ai.token.type"] for p in exports.points if p.metric == sc.GEN_AI_CLIENT_TOKEN_USAGE} == (
        token_types
    )


def test_resource_names_the_service_and_its_version(exports: Exports) -> None:
    for span in exports.spans.values():
        assert span.resource[sc.SERVICE_NAME] == "llmobs" and span.resource[sc.SERVICE_VERSION] == __version__
    assert all(point.resource[sc.SERVICE_VERSION] == __version__ for point in exports.points)


@pytest.mark.parametrize("name", [case.name for case in cases()])
def test_span_requirement_levels(exports: Exports, name: str) -> None:
    case = next(c for c in exports.cases if c.name == name)
    span = span_of(exports, case)
    attrs = span.attributes
    assert span.kind is SpanKind.CLIENT and span.name == f"{case.operation} {case.model}"
    # Required.
    assert attrs[OP] == case.operation and attrs[PROVIDER] == case.provider
    # Conditionally required: each exactly when its condition holds.
    assert attrs.get("error.type") == case.error
    assert span.status is (StatusCode.ERROR if case.error else StatusCode.UNSET)
    assert attrs[MODEL] == case.model
    assert isinstance(attrs["server.port"], int) and attrs["server.address"] == "127.0.0.1"
    assert attrs.get("gen_ai.request.stream") is (True if case.stream else None)  # streamed requests only
    assert attrs.get("gen_ai.output.type") == case.output_type  # only when the request asks for a type
    for key in ("gen_ai.request.choice.count", "gen_ai.request.seed", "gen_ai.conversation.id"):
        assert attrs.get(key) == case.params.get(key), key  # when in the request (choice.count: when not 1)
    # Recommended: what the request said, and what the response told.
    for key, value in case.params.items():
        assert attrs[key] == value, key
    if case.error is None:
        assert bool(attrs.get(RESPONSE_MODEL)) is case.response_model
        assert ("gen_ai.usage.input_tokens" in attrs) is case.input_tokens
        assert ("gen_ai.usage.output_tokens" in attrs) is case.output_tokens  # absent, never 0, without one
        assert ("gen_ai.response.id" in attrs) is case.response_id
        assert bool(attrs.get("gen_ai.response.finish_reasons")) is case.finish_reasons
    ttfc = attrs.get("gen_ai.response.time_to_first_chunk")
    assert (ttfc is not None) is (case.stream and case.chunks_seen > 0)  # streams that produced content
    # Opt-in: never without content capture.
    assert not OPT_IN & set(attrs)


def test_metric_units_descriptions_and_buckets_are_the_pinned_ones(exports: Exports) -> None:
    for point in exports.points:
        if point.metric == sc.COST_METRIC:
            assert point.type == "sum" and point.unit == "{USD}"
            continue
        unit, description = PINNED_METRICS[point.metric]
        assert (point.type, point.unit, point.description) == ("histogram", unit, description), point.metric
        buckets = DOC_TOKEN_BUCKETS if point.metric == sc.GEN_AI_CLIENT_TOKEN_USAGE else DOC_DURATION_BUCKETS
        assert point.explicit_bounds == pytest.approx(buckets, rel=1e-12), point.metric


def test_metric_attribute_requirement_levels(exports: Exports) -> None:
    for point in exports.points:
        attrs = point.attributes
        assert set(attrs) <= METRIC_ATTRIBUTES[point.metric], point.metric
        assert attrs[OP] and attrs[PROVIDER] and attrs[MODEL]  # required; request.model: when available
        if point.metric != sc.COST_METRIC:
            assert isinstance(attrs["server.port"], int) and attrs["server.address"]
    for case in exports.cases:
        (duration,) = exports.of(sc.GEN_AI_CLIENT_OPERATION_DURATION, case)
        assert duration.attributes.get("error.type") == case.error, case.name  # exactly when it failed
        assert duration.count == 1


@pytest.mark.parametrize("name", [case.name for case in cases()])
def test_token_usage_points_only_for_reported_counts(exports: Exports, name: str) -> None:
    case = next(c for c in exports.cases if c.name == name)
    span = span_of(exports, case).attributes
    for kind, key in (("input", "gen_ai.usage.input_tokens"), ("output", "gen_ai.usage.output_tokens")):
        points = exports.of(sc.GEN_AI_CLIENT_TOKEN_USAGE, case, **{"gen_ai.token.type": kind})
        if key in span:
            (point,) = points
            assert (point.count, point.sum) == (1, span[key]), (case.name, kind)
        else:
            assert points == [], (case.name, kind)  # embeddings: no output point at all, not 0


def test_time_per_output_chunk_for_streams_one_point_per_chunk_after_the_first(exports: Exports) -> None:
    for case in exports.cases:
        points = exports.of(sc.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK, case)
        if not case.stream:
            assert points == [], case.name  # the conventions: streaming calls only
            continue
        if case.chunks_exact:
            assert sum(p.count for p in points) == max(case.chunks_seen - 1, 0), case.name
        span = span_of(exports, case)
        for point in points:  # the intervals fit between the first chunk and the end
            ttfc = span.attributes["gen_ai.response.time_to_first_chunk"]
            assert 0 <= point.sum <= (span.end_ns - span.start_ns) / 1e9 - ttfc + 1e-6, case.name
    chat_stream = next(c for c in exports.cases if c.name == "chat stream")
    assert exports.of(sc.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK, chat_stream)[0].count == TOKENS - 1


@pytest.mark.parametrize("name", ["chat stream", "responses stream", "messages stream"])
def test_time_to_first_chunk_agrees_with_prometheus_ttft(exports: Exports, name: str) -> None:
    case = next(c for c in exports.cases if c.name == name)
    ttfc = span_of(exports, case).attributes["gen_ai.response.time_to_first_chunk"]
    labels = {"endpoint": case.endpoint, "model": case.model}
    ttft = exports.registry.get_sample_value("llmobs_time_to_first_token_seconds_sum", labels)
    assert ttft == pytest.approx(ttfc, abs=1e-9)
    (point,) = exports.of(sc.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK, case)
    assert point.count == 1 and point.sum == pytest.approx(ttfc, abs=1e-9)


def test_exemplars_carry_the_trace_of_each_request(exports: Exports) -> None:
    traces: dict[tuple[str, str], set[str]] = {}
    for point in exports.points:
        if point.metric == sc.GEN_AI_CLIENT_OPERATION_DURATION:
            key = (point.attributes[OP], point.attributes[MODEL])
            traces.setdefault(key, set()).update(e.trace_id for e in point.exemplars)
    for case in exports.cases:
        assert traces.get((case.operation, case.model)) == {case.trace_id}, case.name
        assert any(e.span_id == span_of(exports, case).span_id for p in exports.points for e in p.exemplars)


def test_cost_is_in_usd_per_tenant(exports: Exports) -> None:
    (tenant,) = exports.latest(sc.COST_METRIC, **{MODEL: "gpt-4o-mini"})
    assert tenant.attributes["llmobs.tenant"] == "team-a" and tenant.value == pytest.approx(
        span_of(exports, next(c for c in exports.cases if c.model == "gpt-4o-mini")).attributes["llmobs.cost_usd"]
    )
    (fingerprint,) = exports.latest(sc.COST_METRIC, **{MODEL: "gpt-4o"})
    assert fingerprint.attributes["llmobs.tenant"].startswith("key-")  # no header: the key's fingerprint


def test_the_readme_documents_every_error_type_llmobs_sets(exports: Exports) -> None:
    """The conventions ask instrumentations to document the error.type values they report."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### `error.type` values", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    outcomes = {outcome.value for outcome in Outcome} - {"completed"}  # upstream_error: Realtime only
    fallbacks = {"stream_error", "api_error", "response_failed"}  # error_type()'s defaults, Realtime's
    assert outcomes | fallbacks == listed
    for case in exports.cases:  # what the run set: a listed value, a provider's code or type, a status
        if case.error is not None and case.error not in listed:
            assert case.error.isdigit() or case.error.endswith(("_error", "_exceeded")), case.error
