"""Hostile upstreams and untrusted tenants: the books stay right, labels bounded, keys where they belong."""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import pytest

from conftest import Proxied
from fault_upstream import (
    Conn,
    RawRequest,
    chat_body,
    chat_chunks,
    chunked,
    fault_upstream,
    http_response,
    sse,
    sse_head,
)
from llmobs.attribution import fingerprint, tenant_of
from llmobs.records import Usage
from llmobs.telemetry.pricing import PriceTable


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def completion(model: str, usage: dict[str, Any], reason: str = "stop") -> bytes:
    body = json.loads(chat_body(model))
    body["usage"] = usage
    body["choices"][0]["finish_reason"] = reason
    return json.dumps(body).encode()


def post(proxy: Proxied, body: dict[str, Any] = CHAT, **headers: str) -> httpx.Response:
    return httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers, timeout=10)


def test_a_request_served_by_another_model_is_priced_by_the_model_that_served_it(
    make_proxy: Callable[..., Proxied],
) -> None:
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000, "total_tokens": 2_000_000}

    async def bigger(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, completion("gpt-4o", usage)))  # asked for -mini, served gpt-4o

    with fault_upstream(bigger) as upstream:
        proxy = make_proxy(upstream.url + "/v1", provider="openai")
        assert post(proxy).status_code == 200
    table = PriceTable.load(provider="openai", price_file=None)
    served = table.price("gpt-4o", Usage(1_000_000, 1_000_000))
    asked = table.price("gpt-4o-mini", Usage(1_000_000, 1_000_000))
    assert served is not None and asked is not None and served > 10 * asked
    assert proxy.total("llmobs_cost_usd_total") == pytest.approx(float(served), rel=1e-12)


def test_finish_reasons_an_upstream_makes_up_are_bounded_in_number_and_length(
    make_proxy: Callable[..., Proxied],
) -> None:
    calls = []

    async def inventive(request: RawRequest, conn: Conn) -> None:
        calls.append(1)
        reason = f"reason-{len(calls)}" if len(calls) % 2 else "x" * 20_000
        await conn.send(http_response(200, completion("m", {"prompt_tokens": 1, "completion_tokens": 1}, reason)))

    with fault_upstream(inventive) as upstream:
        proxy = make_proxy(upstream.url + "/v1", max_label_values=5)
        for _ in range(40):
            assert post(proxy).status_code == 200
    reasons = {
        s.labels["reason"]
        for family in proxy.registry.collect()
        for s in family.samples
        if s.name == "llmobs_finish_reasons_total"
    }
    assert len(reasons) <= 6 and "other" in reasons and all(len(r) <= 128 for r in reasons)
    assert proxy.total("llmobs_finish_reasons_total") == 40  # every choice still counted, once


@pytest.mark.parametrize("count", [2**64 - 1, 10**400])
def test_implausible_usage_is_not_believed_and_recording_stays_whole(
    make_proxy: Callable[..., Proxied], count: int
) -> None:
    body = completion("gpt-4o-mini", {"prompt_tokens": 1, "completion_tokens": 1})
    body = body.replace(b'"prompt_tokens": 1,', b'"prompt_tokens": ' + str(count).encode() + b",")

    async def absurd(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, body))

    with fault_upstream(absurd) as upstream:
        proxy = make_proxy(upstream.url + "/v1", provider="openai")
        assert post(proxy).status_code == 200
    assert proxy.total("llmobs_requests_total") == 1
    assert proxy.total("llmobs_tokens_total") == 0 and proxy.total("llmobs_cost_usd_total") == 0
    assert proxy.total("llmobs_usage_missing_total") == 1


def test_an_event_over_the_bound_stops_the_accounting_and_the_bytes_flow(make_proxy: Callable[..., Proxied]) -> None:
    line = b"data: " + b"x" * (4 * 1024 * 1024)  # one 4 MiB line, no newline until the very end
    stream = line + b"\n\n" + b"data: [DONE]\n\n"

    async def endless_line(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head(chunked=True))
        for i in range(0, len(stream), 65536):
            await conn.send(chunked(stream[i : i + 65536]))
        await conn.send(b"0\r\n\r\n")

    with fault_upstream(endless_line) as upstream:
        proxy = make_proxy(upstream.url + "/v1", max_event_bytes=256 * 1024)
        cpu = time.process_time()
        with httpx.Client(timeout=30) as http:
            got = http.post(proxy.base_url + "/chat/completions", json={**CHAT, "stream": True}).content
        cpu = time.process_time() - cpu
    assert got == stream  # relayed whole (usage injection was asked for, but nothing here is cut)
    assert proxy.total("llmobs_unread_responses_total", reason="event_too_large") == 1
    # Counted once, and complete: the stream ended cleanly, though its [DONE] went unread.
    assert proxy.total("llmobs_requests_total", outcome="completed") == 1
    assert cpu < 3, f"{cpu:.1f} s of CPU for a 4 MiB line"  # linear buffering: quadratic took tens of seconds


def gzip_sse_upstream(compressed: bytes) -> Callable[[RawRequest, Conn], Any]:
    """An upstream that sends a gzipped event stream whatever the request accepts, in 16 KiB chunks."""

    async def send(request: RawRequest, conn: Conn) -> None:
        await conn.send(sse_head(chunked=True)[:-2] + b"content-encoding: gzip\r\n\r\n")
        for i in range(0, len(compressed), 16384):
            await conn.send(chunked(compressed[i : i + 16384]))
        await conn.send(b"0\r\n\r\n")

    return send


def raw_stream(proxy: Proxied) -> bytes:
    """A stream's bytes as the proxy sent them, still compressed (usage asked for: nothing is cut)."""
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=30) as http, http.stream("POST", proxy.base_url + "/chat/completions", json=body) as r:
        assert r.headers["content-encoding"] == "gzip"
        return b"".join(r.iter_raw())


def test_a_compressed_stream_that_inflates_like_a_bomb_is_not_read(make_proxy: Callable[..., Proxied]) -> None:
    stream = b'data: {"choices":[]}\n\n' * (32 * 1024 * 1024 // 22)  # 32 MiB of events, ~80 KB gzipped
    compressed = gzip.compress(stream, mtime=0)
    with fault_upstream(gzip_sse_upstream(compressed)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        before, cpu = rss_kib(), time.process_time()
        got = raw_stream(proxy)
        cpu = time.process_time() - cpu
    assert got == compressed  # relayed as sent
    assert proxy.total("llmobs_unread_responses_total", reason="undecodable_body") == 1
    assert proxy.total("llmobs_requests_total", outcome="completed") == 1
    assert rss_kib() - before < 48 * 1024, "the decoded stream was held"  # 324 MiB before the ratio bound
    assert cpu < 3, f"{cpu:.1f} s of CPU for an 80 KB body"


def test_a_compressed_stream_of_real_events_is_read(make_proxy: Callable[..., Proxied]) -> None:
    stream = sse(chat_chunks("gpt-4o-mini", tokens=3000))  # about 60x smaller gzipped: well within the bound
    assert len(stream) > 50 * len(gzip.compress(stream))
    compressed = gzip.compress(stream, mtime=0)
    with fault_upstream(gzip_sse_upstream(compressed)) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        assert raw_stream(proxy) == compressed
    assert proxy.total("llmobs_unread_responses_total") == 0
    assert proxy.total("llmobs_tokens_total", type="output") == 3000


def test_the_operators_key_goes_only_under_the_upstream_prefix(make_proxy: Callable[..., Proxied]) -> None:
    seen: list[RawRequest] = []

    async def record(request: RawRequest, conn: Conn) -> None:
        seen.append(request)
        await conn.send(http_response(200, chat_body("m")))

    with fault_upstream(record) as upstream:
        keyed = make_proxy(upstream.url + "/v1", upstream_api_key="sk-operator", upstream_key_paths=["/internal/ok"])
        assert post(keyed).status_code == 200  # /v1/chat/completions
        for path in ("/admin/keys", "/v1/../admin", "/v1/%2e%2e/admin", "/v1x/models"):
            answer = httpx.get(keyed.url + path, timeout=10)
            assert answer.status_code == 403, path
            assert answer.json()["error"]["code"] == "path_not_allowed"
        assert httpx.get(keyed.url + "/internal/ok/thing", timeout=10).status_code == 200
        plain = make_proxy(upstream.url + "/v1")  # no key of ours: paths go as they come (documented)
        assert httpx.get(plain.url + "/admin/keys", timeout=10).status_code == 200
    targets = [r.target for r in seen]
    assert targets == ["/v1/chat/completions", "/internal/ok/thing", "/admin/keys"]
    assert [r.header("authorization") for r in seen][:2] == ["Bearer sk-operator", "Bearer sk-operator"]
    assert keyed.total("llmobs_requests_total", status_code="403", outcome="rejected") == 4


def test_a_tenant_header_cannot_pose_as_a_key_and_can_be_ignored() -> None:
    header = b"x-llmobs-tenant"
    key = {b"authorization": b"Bearer sk-victim"}
    assert tenant_of({header: b"key-0123456789"}, header) == ""  # looks like a fingerprint: not taken
    assert tenant_of({header: b"team-a", **key}, header) == "team-a"
    assert tenant_of({header: b"team-a", **key}, header, trust_header=False) == fingerprint("sk-victim")


def test_a_salted_fingerprint_cannot_be_checked_without_the_salt() -> None:
    plain, salted = fingerprint("sk-weak"), fingerprint("sk-weak", b"secret")
    assert plain != salted and salted.startswith("key-") and len(salted) == len(plain)
    assert fingerprint("sk-weak", b"secret") == salted  # stable for one salt
    assert fingerprint("sk-weak", b"other") != salted


def test_salt_and_distrust_through_the_proxy(make_proxy: Callable[..., Proxied]) -> None:
    async def ok(request: RawRequest, conn: Conn) -> None:
        await conn.send(http_response(200, chat_body("m")))

    with fault_upstream(ok) as upstream:
        proxy = make_proxy(upstream.url + "/v1", tenant_salt="pepper", trust_tenant_header=False)
        post(proxy, authorization="Bearer sk-weak", **{"x-llmobs-tenant": "someone-else"})
    assert proxy.total("llmobs_requests_total", tenant=fingerprint("sk-weak", b"pepper")) == 1


def compressed_upstream(body: bytes, encoding: str) -> Callable[[RawRequest, Conn], Any]:
    """An upstream answering every request with `body`, already compressed as `encoding`."""

    async def send(request: RawRequest, conn: Conn) -> None:
        headers = [("content-type", "application/json"), ("content-encoding", encoding)]
        await conn.send(http_response(200, body, headers))

    return send


def test_a_runaway_answer_that_compresses_900_to_1_is_still_counted(make_proxy: Callable[..., Proxied]) -> None:
    """JSON mode's known failure, a long run of whitespace: legitimate, and the costliest answer to miss."""
    answer = json.loads(chat_body("gpt-4o-mini", tokens=5))
    answer["choices"][0]["message"]["content"] = "{" + " " * 2_500_000
    answer["choices"][0]["finish_reason"] = "length"
    answer["usage"] = {"prompt_tokens": 30, "completion_tokens": 32768, "total_tokens": 32798}
    plain = json.dumps(answer).encode()
    compressed = gzip.compress(plain, mtime=0)
    assert len(plain) > 500 * len(compressed)
    with fault_upstream(compressed_upstream(compressed, "gzip")) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        got = post(proxy)
    assert got.content == plain  # httpx decoded what the proxy relayed as sent
    assert proxy.total("llmobs_tokens_total", type="output") == 32768
    assert proxy.total("llmobs_unread_responses_total") == 0


def peak_rss_kib(reset: bool = False) -> int:
    """This process's peak RSS (VmHWM); `reset` starts a new peak from now (Linux clear_refs 5)."""
    if reset:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as refs:
            refs.write("5")
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def test_a_brotli_body_is_read_and_a_brotli_bomb_is_stopped_as_it_inflates(
    make_proxy: Callable[..., Proxied],
) -> None:
    import brotli

    fine = brotli.compress(chat_body("gpt-4o-mini", tokens=5))
    packer = brotli.Compressor()
    parts = [packer.process(b'{"usage":{"prompt_tokens":1,"completion_tokens":1},"pad":"')]
    parts += [packer.process(b" " * (1 << 20)) for _ in range(256)]  # 256 MiB, never held here
    bomb = b"".join(parts) + packer.finish()
    assert len(bomb) < 64 * 1024
    with fault_upstream(compressed_upstream(fine, "br")) as upstream:
        proxy = make_proxy(upstream.url + "/v1")
        assert post(proxy).status_code == 200
        assert proxy.total("llmobs_tokens_total", type="output") == 5
    with fault_upstream(compressed_upstream(bomb, "br")) as upstream:
        proxy = make_proxy(upstream.url + "/v1", max_body_bytes=4 << 20)
        before = peak_rss_kib(reset=True)
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", proxy.base_url + "/chat/completions", json=CHAT) as r,
        ):
            assert b"".join(r.iter_raw()) == bomb  # relayed as sent
        proxy.settle()  # the copy is read after the client has its bytes
        grown = peak_rss_kib() - before
    assert grown < 64 * 1024, f"peak RSS grew {grown >> 10} MiB: the bomb was inflated past the body limit"
    assert proxy.total("llmobs_unread_responses_total", reason="undecodable_body") == 1
    assert proxy.total("llmobs_requests_total", outcome="completed") == 1


def test_a_brotli_chunk_of_exactly_the_limit_is_read_as_gzip_reads_one() -> None:
    import brotli

    from llmobs.decoders import BrotliDecoder, decoder_for

    exact = b" " * 65536
    assert BrotliDecoder(65536).decode(brotli.compress(exact)) == exact
    gzipped = decoder_for(b"gzip", 65536)
    assert gzipped is not None and gzipped.decode(gzip.compress(exact)) == exact
