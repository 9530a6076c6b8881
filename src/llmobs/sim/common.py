"""What every simulated API shares: the config, the parsed call, the token rule, plans, ids and writers.

The token rule (deterministic, so tests can predict it):

* A *word* is an item of ``str.split()`` (whitespace-separated); an integer in a token
  array (``prompt``/``input`` given as token ids) counts as one token. In a dict, the words
  of its ``text`` and ``content`` count (and a ``function_call_output``'s ``output``).
* Output token ``i`` is the text ``"tok{i} "`` (reasoning/thinking token ``i``: ``"think{i} "``);
  a request makes ``SimConfig.output_tokens`` of them, or ``N`` with the header
  ``x-sim-output-tokens: N``.
* A tool-calling answer streams its arguments ``{"q": "tok1 tok2 ... "}`` in one piece per token.

Each API module documents how it applies the rule.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llmobs.proxy.asgi import Headers, Send
from llmobs.sim.multipart import Upload
from llmobs.sim.ratelimit import Spent

SYSTEM_FINGERPRINT = "fp_llmobs_sim"
_SERVICE_TIERS = ("flex", "priority")  # served as asked; "auto", "default" and the rest: "default"
FAULT_CHUNKS = 3  # content chunks sent before a mid-stream fault

JSON = (b"content-type", b"application/json")
SSE = (b"content-type", b"text/event-stream; charset=utf-8")
NO_CACHE = (b"cache-control", b"no-cache")
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def service_tier(body: dict[str, Any]) -> str:
    """The tier an OpenAI answer reports it was processed with (what prices it)."""
    tier = body.get("service_tier")
    return tier if tier in _SERVICE_TIERS else "default"


@dataclass(frozen=True)
class SimConfig:
    """Timing, size and rate-limit knobs of the simulated upstream."""

    ttft: float = 0.0
    chunk_gap: float = 0.0
    output_tokens: int = 20
    embedding_dims: int = 8
    # Rate-limit headers: per minute, per model, per simulator instance (see sim/ratelimit.py).
    ratelimit_requests: int = 10_000
    ratelimit_tokens: int = 2_000_000
    ratelimit_output_tokens: int = 400_000  # Anthropic's separate output-token limit


class SimulatedReset(Exception):
    """Raised after the response started so the server drops the connection (``sim-reset``)."""


class BadRequest(Exception):
    """A request the simulated API rejects; answered in the API's own error shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


@dataclass
class Call:
    """One parsed request."""

    endpoint: str
    body: dict[str, Any]
    model: str
    stream: bool
    gzip: bool
    request_id: str
    output_tokens: int
    config: SimConfig
    dialect: str = "openai"  # "openai" | "anthropic": error shape and header names
    headers: dict[bytes, bytes] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # path parameters (a batch id)
    files: dict[str, list[Upload]] = field(default_factory=dict)  # multipart uploads by field name
    azure: bool = False  # came in under /openai/deployments/{deployment}/
    base_url: str = ""  # scheme://host of this request, for URLs an answer names
    store: dict[str, Any] = field(default_factory=dict)  # the simulator instance's state (batches)
    spent: Spent | None = None  # this model's rate-limit account
    limit_headers: Callable[[Spent], Headers] | None = None  # the dialect's rate-limit headers

    def charge(self, input_tokens: int, output_tokens: int) -> None:
        """Count this answer's tokens against its model's rate limits (before the answer is sent)."""
        if self.spent is not None:
            self.spent.charge(input_tokens, output_tokens)

    def reply_headers(self) -> Headers:
        """The request id and rate-limit headers every answer to this call carries."""
        name = b"request-id" if self.dialect == "anthropic" else b"x-request-id"
        headers = [(name, self.request_id.encode())]
        if self.spent is not None and self.limit_headers is not None:
            headers.extend(self.limit_headers(self.spent))
        return headers


# ---------------------------------------------------------------------------- counting


def words(value: Any) -> int:
    """Prompt tokens in a piece of request content (see the module docstring)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(v) for v in value)
    if isinstance(value, dict):
        n = words(value.get("text")) + words(value.get("content"))
        if value.get("type") == "function_call_output":
            n += words(value.get("output"))
        return n
    if isinstance(value, int) and not isinstance(value, bool):
        return 1
    return 0


def messages_tokens(messages: Any) -> int:
    """Words of a message list plus 3 per item that has a ``role``."""
    if not isinstance(messages, list):
        return words(messages)
    return sum(words(m) + (3 if isinstance(m, dict) and "role" in m else 0) for m in messages)


@functools.lru_cache(maxsize=64)
def tokens(count: int, word: str = "tok") -> tuple[str, ...]:
    """The output tokens ``"tok1 ", "tok2 ", ...`` (cached: the same few counts repeat)."""
    return tuple(f"{word}{i} " for i in range(1, count + 1))


def int_field(body: dict[str, Any], name: str, minimum: int) -> int | None:
    """An optional integer field >= minimum; BadRequest names the field otherwise."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequest(f"Invalid '{name}': expected an integer >= {minimum}, got {value!r}.", name)
    return value


def tool_name(tools: Any) -> str | None:
    """The name of the first tool (chat ``function.name``, Responses/Anthropic ``name``)."""
    if not isinstance(tools, list) or not tools:
        return None
    first = tools[0] if isinstance(tools[0], dict) else {}
    fn = first.get("function")
    name = fn.get("name") if isinstance(fn, dict) else first.get("name")
    return name if isinstance(name, str) and name else "tool"


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """What one OpenAI text request will produce: counts per choice plus reporting switches."""

    prompt: int
    cached: int
    cache_write: int
    n: int
    reasoning: int  # reasoning tokens per choice
    content: int  # answer tokens (or tool argument pieces) per choice
    truncated: bool
    tool: str | None  # name of the function to call
    reasoning_field: str | None  # "reasoning_content" | "reasoning" | None
    report_reasoning: bool
    refusal: bool = False  # model ``sim-refusal``: the answer is a refusal of ``content`` tokens

    @property
    def output(self) -> int:
        return self.n * (self.reasoning + self.content)

    @property
    def chat_finish(self) -> str:
        return "length" if self.truncated else ("tool_calls" if self.tool else "stop")


def make_plan(call: Call, prompt: int, *, rich: bool) -> Plan:
    """Apply the output rule (reasoning, caps, cache key, tools) to one OpenAI text request."""
    body = call.body
    outputs = call.output_tokens
    model = call.model
    reasons = rich and "reason" in model
    limit = None
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        limit = int_field(body, name, 0)
        if limit is not None:
            break
    refusal = rich and model == "sim-refusal"
    if refusal:
        outputs = min(outputs, FAULT_CHUNKS)
    full_reasoning = outputs // 2 if reasons else 0
    budget = full_reasoning + outputs if limit is None else limit
    reasoning = min(full_reasoning, budget)
    content = min(outputs, budget - reasoning)
    key = body.get("prompt_cache_key")
    writes = isinstance(key, str) and key.startswith("write")
    cached = prompt // 2 if isinstance(key, str) and key and not writes else 0
    return Plan(
        prompt=prompt,
        cached=cached,
        cache_write=prompt // 2 if writes else 0,
        n=(int_field(body, "n", 1) or 1) if call.endpoint != "responses" else 1,
        reasoning=reasoning,
        content=content,
        truncated=reasoning + content < full_reasoning + outputs,
        tool=tool_name(body.get("tools")) if rich and not refusal else None,
        reasoning_field=(None if not reasons else "reasoning_content" if "reasoning-content" in model else "reasoning"),
        report_reasoning="noreasoncount" not in model,
        refusal=refusal,
    )


def arg_pieces(content: int, truncated: bool) -> list[str]:
    """Tool-call arguments ``{"q": "tok1 ... "}``, one piece per token; left unclosed when truncated."""
    pieces = list(tokens(content))
    if not pieces:
        return [] if truncated else ["{}"]
    pieces[0] = '{"q": "' + pieces[0]
    if not truncated:
        pieces[-1] += '"}'
    return pieces


# ---------------------------------------------------------------------------- transport


def new_id(prefix: str) -> str:
    """A random id with the provider's prefix (``chatcmpl-``, ``msg_``, ...)."""
    return prefix + os.urandom(12).hex()


def accepts_gzip(value: bytes) -> bool:
    """Whether an Accept-Encoding value allows gzip."""
    for item in value.decode("latin-1").lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: Headers,
    *,
    compress: bool,
    more: bool = False,
    content_type: tuple[bytes, bytes] = JSON,
) -> None:
    """A whole response (gzip-compressed if asked); ``more`` sends half and drops the connection."""
    headers = [content_type, *headers]
    if compress and body:
        # Real providers compress JSON; the proxy must handle (and not double-decode) it.
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers.append((b"content-encoding", b"gzip"))
        headers.append((b"vary", b"Accept-Encoding"))
    if not body:
        headers = headers[1:]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if more:  # sim-reset on a non-stream: half a body, then the connection drops
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise SimulatedReset("sim-reset: connection dropped mid-body")
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, obj: Any, call: Call, extra: Headers | None = None) -> None:
    """A JSON answer to `call`, with its request id and rate-limit headers."""
    headers = call.reply_headers() + (extra or [])
    await send_bytes(send, status, dumps(obj).encode(), headers, compress=call.gzip)


class Stream:
    """Buffers SSE frames and writes them together at each pause, to keep sends few."""

    def __init__(self, send: Send, call: Call) -> None:
        self._send = send
        self._buf: list[str] = []
        self._call = call

    async def start(self) -> None:
        # Headers go out at once; rate-limit headers already count this call's tokens.
        headers = [SSE, NO_CACHE, *self._call.reply_headers()]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    def add(self, frame: str) -> None:
        self._buf.append(frame)

    async def flush(self, more: bool = True) -> None:
        if self._buf or not more:
            body = "".join(self._buf).encode()
            self._buf.clear()
            await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def pause(self, seconds: float) -> None:
        if seconds > 0:
            await self.flush()
            await asyncio.sleep(seconds)

    async def reset(self) -> None:
        await self.flush()
        raise SimulatedReset("sim-reset: connection dropped mid-stream")

    async def play(self, frames: Iterable[tuple[str, bool]], gap: float, stop_after: int | None = None) -> bool:
        """Add (frame, is_token) pairs, pausing ``gap`` between tokens; False if stopped after `stop_after` tokens."""
        count = 0
        for frame, is_token in frames:
            if is_token:
                if stop_after is not None and count >= stop_after:
                    return False
                if count and gap > 0:
                    await self.pause(gap)
                count += 1
            self.add(frame)
        return True
