"""Azure OpenAI through the proxy: the deployment names the request's model, the served model prices it."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from conftest import Proxied
from llmobs.apis.table import azure_deployment
from llmobs.records import Usage
from llmobs.telemetry.pricing import PriceTable
from servers import ServerThread

MESSAGES = [{"role": "user", "content": "hello there azure"}]
KEY = "azure-key-0123456789abcdef"


def azure(proxy: Proxied) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=proxy.url, api_key=KEY, api_version="2024-10-21", max_retries=0)


@pytest.fixture
def proxy(upstream: ServerThread, make_proxy: Callable[..., Proxied]) -> Proxied:
    return make_proxy(upstream.url, provider="azure")


def test_the_deployment_is_the_model_label_and_the_served_model_sets_the_price(proxy: Proxied) -> None:
    client = azure(proxy)
    answer = client.chat.completions.create(model="my-gpt4o", messages=MESSAGES)  # model only routes the path
    streamed = list(client.chat.completions.create(model="my-gpt4o", messages=MESSAGES, stream=True))
    client.close()
    assert answer.model == "gpt-4o-2024-08-06" and answer.usage is not None
    assert proxy.total("llmobs_requests_total", model="my-gpt4o", endpoint="chat_completions") == 2
    assert proxy.total("llmobs_tokens_total", model="my-gpt4o", type="output") == 2 * answer.usage.completion_tokens
    usage = Usage(input_tokens=answer.usage.prompt_tokens, output_tokens=answer.usage.completion_tokens)
    each = PriceTable.load(provider="azure", price_file=None).price("gpt-4o-2024-08-06", usage)
    assert each is not None and each > 0
    assert proxy.total("llmobs_cost_usd_total", model="my-gpt4o") == pytest.approx(2 * float(each), rel=1e-12)
    assert len(streamed) > 2  # the stream was relayed (Azure's leading filter-results chunk included)
    assert streamed[0].choices == [] and streamed[0].prompt_filter_results is not None  # type: ignore[attr-defined]


def test_a_deployment_with_a_model_in_the_body_keeps_the_bodys_model(proxy: Proxied) -> None:
    import httpx2 as httpx

    url = proxy.url + "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    body = {"model": "gpt-4o", "messages": MESSAGES}
    assert httpx.post(url, json=body, headers={"api-key": KEY}, timeout=10).status_code == 200
    assert proxy.total("llmobs_requests_total", model="gpt-4o") == 1


@pytest.mark.parametrize(
    ("path", "deployment"),
    [
        ("/openai/deployments/my-gpt4o/chat/completions", "my-gpt4o"),
        ("/openai/deployments/a%20b/embeddings", "a b"),
        ("/v1/chat/completions", None),
        ("/openai/deployments//chat/completions", None),
    ],
)
def test_the_deployment_is_read_off_the_path(path: str, deployment: str | None) -> None:
    assert azure_deployment(path) == deployment
