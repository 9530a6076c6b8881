"""Azure OpenAI deployment paths on the simulator, through openai.AzureOpenAI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import openai
import pytest

from llmobs.sim import SimConfig, create_app
from servers import ServerThread, serve

API_VERSION = "2024-10-21"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    seen: list[dict[bytes, bytes]] = []
    app = create_app(SimConfig(output_tokens=3))

    async def recording(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]))
        await app(scope, receive, send)

    with serve(recording) as server:
        server.seen = seen  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def client(srv: ServerThread) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        azure_endpoint=srv.url, api_version=API_VERSION, api_key="azure-key", max_retries=0, timeout=5
    ) as c:
        yield c


def test_chat_model_comes_from_the_deployment_table(client: openai.AzureOpenAI, srv: ServerThread) -> None:
    r = client.chat.completions.create(model="my-gpt4o", messages=MESSAGES)
    assert r.model == "gpt-4o-2024-08-06"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (2 + 3, 3)
    assert r.model_extra is not None and r.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert srv.seen[-1][b"api-key"] == b"azure-key"  # type: ignore[attr-defined]


def test_unknown_deployment_serves_its_own_name(client: openai.AzureOpenAI) -> None:
    assert client.chat.completions.create(model="team-x-gpt", messages=MESSAGES).model == "team-x-gpt"


def test_stream_starts_with_azures_filter_results_chunk(client: openai.AzureOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="my-gpt4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    first = chunks[0]
    assert first.choices == [] and first.id == "" and first.model == "" and first.usage is None
    assert first.model_extra is not None and "prompt_filter_results" in first.model_extra
    assert {c.model for c in chunks[1:]} == {"gpt-4o-2024-08-06"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_embeddings_images_and_audio_are_served_per_deployment(client: openai.AzureOpenAI) -> None:
    e = client.embeddings.create(model="my-embedding", input="a b c")
    assert e.model == "text-embedding-3-small" and e.usage.prompt_tokens == 3
    i = client.images.generate(model="my-image", prompt="a cat")
    assert i.usage is not None and i.usage.output_tokens == 1056
    t = client.audio.transcriptions.create(model="my-whisper", file=("a.wav", bytes(64_000), "audio/wav"))
    assert t.usage is not None and t.usage.type == "duration" and t.usage.seconds == 2


def test_deployment_fault_models_work(client: openai.AzureOpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="sim-error-429", messages=MESSAGES)


def test_missing_api_version_is_azures_404(srv: ServerThread) -> None:
    r = httpx2.post(srv.url + "/openai/deployments/my-gpt4o/chat/completions", json={"messages": MESSAGES})
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}


def test_body_without_model_is_fine_and_responses_is_not_a_deployment_route(srv: ServerThread) -> None:
    url = srv.url + "/openai/deployments/my-gpt4o-mini/chat/completions?api-version=" + API_VERSION
    r = httpx2.post(url, json={"messages": MESSAGES})
    assert r.status_code == 200 and json.loads(r.content)["model"] == "gpt-4o-mini-2024-07-18"
    url = srv.url + "/openai/deployments/my-gpt4o/responses?api-version=" + API_VERSION
    assert httpx2.post(url, json={"input": "hi"}).status_code == 404
