"""Realtime over WebSocket through the proxy: frames relayed unchanged both ways, one observation
per response.done with the upstream's usage and genai-prices' cost, and the session itself."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from genai_prices import extract_usage
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import Proxied
from fault_upstream import refused_port
from llmobs.apis.openai_realtime import RealtimeAdapter
from llmobs.observe import Finished
from llmobs.records import RequestInfo
from llmobs.sim import SimConfig, create_app
from servers import ServerThread, serve

# openai-python's sync Realtime client opens its websockets connection without a context
# manager, which websockets >= 17.1 deprecates; the warning is the SDK's.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

USER_TEXT = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}
KEY = "sk-realtime-secret-0123456789abcdef"


class Recorder:
    """The simulator, keeping every frame it sends and receives per connection (the upstream's view)."""

    def __init__(self) -> None:
        self.sim = create_app(SimConfig(output_tokens=3))
        self.sent: list[list[Any]] = []
        self.received: list[list[Any]] = []
        self.headers: list[dict[bytes, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.sim(scope, receive, send)
            return
        sent: list[Any] = []
        received: list[Any] = []
        self.sent.append(sent)
        self.received.append(received)
        self.headers.append(dict(scope["headers"]))

        async def recording_send(message: Any) -> None:
            if message["type"] == "websocket.send":
                sent.append(message.get("text", message.get("bytes")))
            await send(message)

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "websocket.receive":
                received.append(message.get("text", message.get("bytes")))
            return message

        await self.sim(scope, recording_receive, recording_send)


@pytest.fixture
def recorded() -> Iterator[tuple[Recorder, ServerThread]]:
    recorder = Recorder()
    with serve(recorder) as server:
        yield recorder, server


@pytest.fixture
def proxy(recorded: tuple[Recorder, ServerThread], make_proxy: Callable[..., Proxied]) -> Proxied:
    return make_proxy(recorded[1].url + "/v1", provider="openai")


def ws_url(proxy: Proxied, query: str = "model=gpt-realtime") -> str:
    return proxy.url.replace("http://", "ws://") + "/v1/realtime?" + query


def events_until(ws: ClientConnection, kind: str) -> list[Any]:
    """Frames (decoded JSON, or raw bytes) up to and including the first event of `kind`."""
    seen: list[Any] = []
    while True:
        frame = ws.recv(timeout=5)
        seen.append(frame)
        if isinstance(frame, str) and json.loads(frame)["type"] == kind:
            return seen


def ask(ws: ClientConnection, modalities: list[str] | None = None) -> list[Any]:
    ws.send(json.dumps({"type": "conversation.item.create", "item": USER_TEXT}))
    ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": modalities or ["text"]}}))
    return events_until(ws, "response.done")


def usage_of(done: str) -> dict[str, Any]:
    return dict(json.loads(done)["response"]["usage"])


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def session_count(proxy: Proxied, **labels: str) -> float:
    return proxy.total("llmobs_websocket_sessions_total", **labels)


def test_the_sdk_session_is_relayed_and_each_response_accounted(
    proxy: Proxied, recorded: tuple[Recorder, ServerThread]
) -> None:
    upstream, _ = recorded
    client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
    usages = []
    with client.realtime.connect(model="gpt-realtime") as conn:
        assert conn.recv().type == "session.created"
        for modalities in (["text"], ["audio"]):
            conn.conversation.item.create(item=USER_TEXT)
            conn.response.create(response={"output_modalities": modalities})
            for event in conn:
                if event.type == "response.done":
                    assert event.response.usage is not None
                    usages.append(event.response.usage.model_dump())
                    break
    client.close()
    wait_for(lambda: session_count(proxy) == 1)
    # every frame the upstream sent arrived, and every frame the SDK sent reached the upstream
    assert len(upstream.sent) == 1 and len(upstream.received[0]) == 4
    assert proxy.total("llmobs_websocket_frames_total", direction="from_client") == 4
    assert proxy.total("llmobs_websocket_frames_total", direction="from_upstream") == len(upstream.sent[0])
    assert proxy.total("llmobs_websocket_bytes_total", direction="from_upstream") == sum(
        len(f.encode()) if isinstance(f, str) else len(f) for f in upstream.sent[0]
    )
    # one observation per response.done, tokens as reported, cost as genai-prices prices them
    assert proxy.total("llmobs_requests_total", endpoint="realtime", outcome="completed") == 2
    for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
        assert proxy.total("llmobs_tokens_total", endpoint="realtime", type=kind) == sum(u[field] for u in usages)
    audio_out = sum(u["output_token_details"]["audio_tokens"] for u in usages)
    assert audio_out > 0 and proxy.total("llmobs_tokens_total", type="output_audio") == audio_out
    expected = sum(
        (
            extract_usage({"response": {"usage": u}}, provider_id="openai", api_flavor="realtime")
            .calc_price(model=openai_model("gpt-realtime"))
            .total_price
            for u in usages
        ),
        Decimal(0),
    )
    assert proxy.total("llmobs_cost_usd_total", model="gpt-realtime") == pytest.approx(float(expected), rel=1e-12)
    assert proxy.total("llmobs_time_to_first_token_seconds_count", endpoint="realtime") == 2
    assert session_count(proxy, close_code="1000", outcome="completed", endpoint="realtime") == 1
    assert proxy.total("llmobs_websocket_sessions_open") == 0
    assert proxy.total("llmobs_requests_in_flight") == 0


def openai_model(model: str) -> Any:
    from genai_prices.data import providers

    found = next(p for p in providers if p.id == "openai").find_model(model)
    assert found is not None
    return found


def test_frames_arrive_as_the_upstream_sent_them_text_and_binary(
    proxy: Proxied, recorded: tuple[Recorder, ServerThread]
) -> None:
    upstream, _ = recorded
    with connect(ws_url(proxy), subprotocols=["realtime"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"  # the upstream's choice, passed on
        received = events_until(ws, "session.created") + ask(ws, ["audio"])
        blob = bytes(range(256)) * 64
        ws.send(blob)  # the simulator echoes binary frames
        echoed = ws.recv(timeout=5)
    assert echoed == blob and isinstance(echoed, bytes)
    wait_for(lambda: session_count(proxy) == 1)
    assert received + [echoed] == upstream.sent[0]  # same frames, same order, text stays text
    assert upstream.received[0][-1] == blob


def test_close_codes_pass_both_ways(proxy: Proxied, recorded: tuple[Recorder, ServerThread]) -> None:
    with connect(ws_url(proxy)) as ws:  # the upstream closes with an application code
        events_until(ws, "session.created")
        ws.send(json.dumps({"type": "sim.close", "code": 4001, "reason": "bye now"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye now")
    wait_for(lambda: session_count(proxy) == 1)
    assert session_count(proxy, close_code="4xxx", outcome="completed") == 1

    ws = connect(ws_url(proxy))  # the client closes with its own code
    events_until(ws, "session.created")
    ws.close(code=4002, reason="client done")
    wait_for(lambda: session_count(proxy) == 2)
    assert session_count(proxy, close_code="4xxx", outcome="client_closed") == 1


def test_an_upstream_that_drops_drops_the_client_and_what_was_seen_counts(
    upstream: ServerThread, make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(upstream.url + "/v1")  # the plain simulator: it drops its own TCP connection
    with connect(ws_url(proxy, "model=sim-ws-drop")) as ws:
        events_until(ws, "session.created")
        done = ask(ws)[-1]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is None  # no close frame: the client sees 1006, as it would directly
    wait_for(lambda: session_count(proxy) == 1)
    assert session_count(proxy, close_code="none", outcome="stream_interrupted") == 1
    assert proxy.total("llmobs_requests_total", endpoint="realtime", outcome="completed") == 1
    assert proxy.total("llmobs_tokens_total", endpoint="realtime", type="output") == usage_of(done)["output_tokens"]


def test_an_upstream_message_past_the_limit_closes_the_client_with_1009(
    recorded: tuple[Recorder, ServerThread], make_proxy: Callable[..., Proxied]
) -> None:
    proxy = make_proxy(recorded[1].url + "/v1", max_websocket_message_bytes=256)  # session.created is larger
    with connect(ws_url(proxy)) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # told why, not a bare drop
    wait_for(lambda: session_count(proxy) == 1)
    assert session_count(proxy, close_code="1009", outcome="upstream_error") == 1


def test_a_client_that_drops_mid_response_is_counted_once_with_what_was_seen(
    make_proxy: Callable[..., Proxied],
) -> None:
    with serve(create_app(SimConfig(output_tokens=50, chunk_gap=0.02))) as slow:
        proxy = make_proxy(slow.url + "/v1", provider="openai")
        ws = connect(ws_url(proxy))
        events_until(ws, "session.created")
        ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        events_until(ws, "response.output_text.delta")
        sock = ws.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset, no close frame
        wait_for(lambda: session_count(proxy) == 1)
    assert proxy.total("llmobs_requests_total", endpoint="realtime") == 1
    assert proxy.total("llmobs_requests_total", endpoint="realtime", outcome="client_closed") == 1
    assert proxy.total("llmobs_estimated_tokens_total", endpoint="realtime", type="output") >= 1
    assert proxy.total("llmobs_requests_in_flight") == 0 and proxy.total("llmobs_websocket_sessions_open") == 0


def test_a_refused_upgrade_reaches_the_client_as_the_upstreams_answer(proxy: Proxied) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(proxy, "model=sim-error-401"))
    response = refused.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["type"] == "invalid_request_error"
    wait_for(lambda: session_count(proxy) == 1)
    assert session_count(proxy, outcome="upstream_error", close_code="none") == 1


def test_an_unreachable_upstream_is_a_502_from_the_proxy(make_proxy: Callable[..., Proxied]) -> None:
    sock, port = refused_port()
    with sock:
        proxy = make_proxy(f"http://127.0.0.1:{port}/v1")
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(proxy))
    assert refused.value.response.status_code == 502
    assert json.loads(refused.value.response.body)["error"]["code"] == "upstream_unreachable"


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """A WebSocket server at any path: echoes every frame, prefixing text with the path."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": scope["path"] + ":" + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


def test_websockets_to_other_paths_are_relayed_and_counted_as_other(make_proxy: Callable[..., Proxied]) -> None:
    with serve(echo) as upstream:
        proxy = make_proxy(upstream.url)
        with connect(proxy.url.replace("http://", "ws://") + "/v1/some/socket?x=1") as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "/v1/some/socket:ping"
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=5) == b"\x00\xff"
        wait_for(lambda: session_count(proxy) == 1)
    assert session_count(proxy, endpoint="other", close_code="1000") == 1
    assert proxy.total("llmobs_requests_total") == 0  # no responses to account on an unknown socket


def test_a_key_in_a_subprotocol_or_query_never_reaches_logs_or_metrics(
    proxy: Proxied, recorded: tuple[Recorder, ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    upstream, _ = recorded
    caplog.set_level(logging.DEBUG)
    protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]
    quiet = logging.getLogger("test.realtime.client")  # the test's own client logs its handshake, key and all
    quiet.setLevel(logging.WARNING)
    url = ws_url(proxy, f"model=gpt-realtime&api-key={KEY}")
    with connect(url, subprotocols=protocols, logger=quiet) as ws:  # type: ignore[arg-type]
        events_until(ws, "session.created")
        ask(ws)
    wait_for(lambda: session_count(proxy) == 1)
    scraped = "".join(f"{s.name}{s.labels}" for family in proxy.registry.collect() for s in family.samples)
    assert KEY not in scraped and KEY not in caplog.text
    assert proxy.total("llmobs_requests_total", tenant=fingerprint_of(KEY)) == 1  # the tenant is its fingerprint
    assert b"openai-insecure-api-key." + KEY.encode() in upstream.headers[0][b"sec-websocket-protocol"]


def fingerprint_of(key: str) -> str:
    from llmobs.attribution import fingerprint

    return fingerprint(key)


def test_the_operators_key_replaces_the_clients_on_the_upgrade(
    recorded: tuple[Recorder, ServerThread], make_proxy: Callable[..., Proxied]
) -> None:
    upstream, server = recorded
    proxy = make_proxy(server.url + "/v1", upstream_api_key="sk-operator-key")
    protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]
    with connect(ws_url(proxy), subprotocols=protocols, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:  # type: ignore[arg-type]
        events_until(ws, "session.created")
    seen = upstream.headers[0]
    assert seen[b"authorization"] == b"Bearer sk-operator-key"
    assert KEY.encode() not in b"".join(seen.values())


def test_chunk_instants_per_response_only_when_asked_for() -> None:
    def frames(session: Any) -> Any:
        session.upstream_frame(json.dumps({"type": "response.created", "response": {"id": "r1"}}), 1.0)
        for t in (2.0, 3.0, 5.0):
            session.upstream_frame(json.dumps({"type": "response.output_text.delta", "delta": "x"}), t)
        session.upstream_frame(json.dumps({"type": "response.output_text.done", "text": "xxx"}), 6.0)
        done = {"type": "response.done", "response": {"id": "r1", "status": "completed", "output": []}}
        session.upstream_frame(json.dumps(done), 7.0)
        (finished,) = [e for e in session.drain() if isinstance(e, Finished)]
        return finished.observation.timings.chunks

    info = RequestInfo(endpoint="realtime", operation="chat", model="gpt-realtime", stream=True)
    assert frames(RealtimeAdapter().watch(info)) == ()
    timed = RequestInfo(endpoint="realtime", operation="chat", model="gpt-realtime", stream=True, chunk_times=True)
    assert frames(RealtimeAdapter().watch(timed)) == (2.0, 3.0, 5.0)
