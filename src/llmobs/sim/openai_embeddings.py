"""OpenAI embeddings (``CreateEmbeddingResponse``).

Prompt tokens = the words of ``input`` (a string, a list of strings, or token arrays where
each integer is one token); ``usage`` is ``{prompt_tokens, total_tokens}`` with both equal.
Vector ``i`` has ``dimensions`` (default ``SimConfig.embedding_dims``) values
``((i * 7 + j * 13) % 64 - 32) / 64``, exact in float32, so ``float`` and ``base64``
encodings decode to equal lists. The answer waits ``ttft``.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from array import array
from typing import Any

from llmobs.proxy.asgi import Send
from llmobs.sim.common import BadRequest, Call, int_field, send_json, words


def _vector(index: int, dims: int) -> list[float]:
    # Multiples of 1/64 are exact in float32, so "float" and "base64" decode to equal lists.
    return [((index * 7 + j * 13) % 64 - 32) / 64 for j in range(dims)]


def _base64_vector(values: list[float]) -> str:
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [value]  # a single token array
        if all(isinstance(v, str | list) for v in value):
            return value
    raise BadRequest("'input' must be a string, a list of strings or a list of token arrays.", "input")


async def embeddings(call: Call, send: Send, fault: str | None) -> None:
    """POST embeddings."""
    inputs = _embedding_inputs(call.body.get("input"))
    dims = int_field(call.body, "dimensions", 1) or call.config.embedding_dims
    encoding = call.body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest(
            f"Invalid 'encoding_format': expected 'float' or 'base64', got {encoding!r}.", "encoding_format"
        )
    data = []
    for i in range(len(inputs)):
        vec = _vector(i, dims)
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": _base64_vector(vec) if encoding == "base64" else vec,
            }
        )
    prompt = sum(words(v) for v in inputs)
    call.charge(prompt, 0)
    obj: dict[str, Any] = {"object": "list", "data": data, "model": call.model}
    await asyncio.sleep(call.config.ttft)
    if fault != "sim-no-usage":
        obj["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    await send_json(send, 200, obj, call)
