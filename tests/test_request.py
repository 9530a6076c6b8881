"""Request parsing: the fields we account for, and the one change we make to a body."""

from __future__ import annotations

import json

import pytest

from llmobs.apis.table import ENDPOINTS, OTHER
from llmobs.attribution import fingerprint, tenant_of

CHAT = ENDPOINTS["chat/completions"]


def injected(body: bytes) -> bytes:
    parsed = CHAT.parse(body, inject_usage=True)
    assert parsed.usage_injected
    return parsed.body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"m","stream":true}', b'{"stream_options":{"include_usage":true},"model":"m","stream":true}'),
        (b'  {\n "stream": true }', b'  {"stream_options":{"include_usage":true},\n "stream": true }'),
    ],
)
def test_usage_option_is_spliced_in_and_every_other_byte_kept(body: bytes, expected: bytes) -> None:
    assert injected(body) == expected


def test_existing_stream_options_keep_their_other_fields() -> None:
    body = json.dumps({"model": "m", "stream": True, "stream_options": {"include_obfuscation": False}}).encode()
    assert json.loads(injected(body))["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    body = json.dumps({"model": "m", "stream": True, "stream_options": {"include_usage": False}}).encode()
    assert json.loads(injected(body))["stream_options"] == {"include_usage": True}
    body = json.dumps({"model": "m", "stream": True, "stream_options": None}).encode()  # asks for nothing
    assert json.loads(injected(body))["stream_options"] == {"include_usage": True}
    lone = b'{"model":"m","stream":true,"stream_options":null,"messages":[{"content":"hi \\ud83d"}]}'
    assert json.loads(injected(lone))["messages"][0]["content"] == "hi \ud83d"  # escaped as the client sent it
    huge = b'{"model":"m","stream":true,"stream_options":null,"temperature":1e400}'
    parsed = CHAT.parse(huge, inject_usage=True)
    assert parsed.body == huge and not parsed.usage_injected  # no JSON can say 1e400 back: left alone


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}',  # asked already
        b'{"model":"m","stream":false}',  # not a stream
        b'{"model":"m"}',
        b'{"model":"m","stream":"true"}',  # not a boolean: the upstream judges
        b'{"model":"m","stream":true,"stream_options":"yes"}',
        b'{"model":"m","stream":true,"stream_options":{"include_usage":"yes"}}',
        b"[1,2]",
        b"not json",
    ],
)
def test_bodies_left_alone(body: bytes) -> None:
    parsed = CHAT.parse(body, inject_usage=True)
    assert parsed.body == body and not parsed.usage_injected


def test_injection_off_and_endpoints_without_the_option() -> None:
    body = b'{"model":"m","stream":true}'
    assert CHAT.parse(body, inject_usage=False).body == body
    assert ENDPOINTS["responses"].parse(body, inject_usage=True).body == body
    assert OTHER.parse(body, inject_usage=True).model is None


def test_model_stream_and_parameters() -> None:
    body = json.dumps(
        {
            "model": "gpt-4o",
            "stream": True,
            "temperature": 0.2,
            "top_p": 1,
            "max_completion_tokens": 99,
            "stop": "END",
            "seed": 7,
            "n": 2,
            "presence_penalty": True,
            "service_tier": "flex",
        }
    ).encode()
    parsed = CHAT.parse(body, inject_usage=False)
    assert (parsed.model, parsed.stream) == ("gpt-4o", True)
    assert parsed.params == {
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 1,
        "gen_ai.request.max_tokens": 99,
        "gen_ai.request.seed": 7,
        "gen_ai.request.choice.count": 2,
        "gen_ai.request.stop_sequences": ["END"],
        "openai.request.service_tier": "flex",
    }  # a boolean is not a penalty
    assert CHAT.parse(b'{"model": 5}', inject_usage=False).model is None


def test_embeddings_dimensions_and_encoding_format() -> None:
    embeddings = ENDPOINTS["embeddings"]
    body = b'{"model":"text-embedding-3-small","input":"x","dimensions":256,"encoding_format":"base64"}'
    assert embeddings.parse(body).params == {
        "gen_ai.embeddings.dimension.count": 256,
        "gen_ai.request.encoding_formats": ["base64"],  # semconv: a list, though OpenAI takes one
    }
    assert embeddings.parse(b'{"model":"m","input":"x","dimensions":true,"encoding_format":7}').params == {}
    # Only an embeddings request has them: chat's own fields of those names are not read.
    assert CHAT.parse(b'{"model":"m","dimensions":8,"encoding_format":"float"}').params == {}


def test_tenant_from_header_then_key_fingerprint_then_empty() -> None:
    header = b"x-llmobs-tenant"
    assert tenant_of({header: b" team-a "}, header) == "team-a"
    by_key = tenant_of({b"authorization": b"Bearer sk-abc"}, header)
    assert by_key == fingerprint("sk-abc") and by_key.startswith("key-") and "sk-abc" not in by_key
    assert tenant_of({b"api-key": b"sk-abc"}, header) == by_key  # Azure's header, same key, same tenant
    assert tenant_of({b"x-api-key": b" sk-abc"}, header) == by_key  # Anthropic's header
    assert tenant_of({}, header) == ""
