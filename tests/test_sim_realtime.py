"""The simulator speaks the OpenAI Realtime API over a real WebSocket, for the SDK and plain clients."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from llmobs.sim import SimConfig, create_app
from servers import ServerThread, free_port, serve

# openai-python's sync Realtime client opens its websockets connection without a context
# manager, which websockets >= 17.1 deprecates; the warning is the SDK's, not the simulator's.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")

AUDIO_TOKEN_BYTES = 4800
USER_TEXT = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    with serve(create_app(SimConfig(output_tokens=3))) as server:
        yield server


@pytest.fixture
def client(srv: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-test", max_retries=0) as c:
        yield c


def ws_url(srv: ServerThread, query: str = "model=gpt-realtime") -> str:
    return srv.url.replace("http://", "ws://") + "/v1/realtime?" + query


def recv(ws: ClientConnection) -> dict[str, Any]:
    message = ws.recv(timeout=5)
    assert isinstance(message, str)
    event: dict[str, Any] = json.loads(message)
    assert event["event_id"].startswith("event_")
    return event


def until(ws: ClientConnection, type_: str) -> list[dict[str, Any]]:
    """Events up to and including the first of `type_`."""
    seen = [recv(ws)]
    while seen[-1]["type"] != type_:
        seen.append(recv(ws))
    return seen


def send(ws: ClientConnection, type_: str, **fields: Any) -> None:
    ws.send(json.dumps({"type": type_, **fields}))


# ---------------------------------------------------------------------------- with the SDK


def test_sdk_text_response_event_order_and_usage(client: openai.OpenAI) -> None:
    with client.realtime.connect(model="gpt-realtime") as conn:
        created = conn.recv()
        assert created.type == "session.created" and created.session.type == "realtime"
        assert created.session.model == "gpt-realtime"
        conn.conversation.item.create(item=USER_TEXT)
        conn.response.create(response={"output_modalities": ["text"]})
        types, text, done = [], "", None
        for event in conn:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type == "response.done":
                done = event
                break
    assert types == [
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert text == "tok1 tok2 tok3 "
    assert done is not None and done.response.status == "completed" and done.response.usage is not None
    usage = done.response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2, 3, 5)
    assert usage.input_token_details is not None and usage.output_token_details is not None
    assert (usage.input_token_details.text_tokens, usage.input_token_details.audio_tokens) == (2, 0)
    assert usage.input_token_details.cached_tokens == 0
    assert (usage.output_token_details.text_tokens, usage.output_token_details.audio_tokens) == (3, 0)


def test_sdk_audio_response_streams_transcript_and_audio(client: openai.OpenAI) -> None:
    with client.realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.conversation.item.create(item=USER_TEXT)
        conn.response.create()  # the session default: audio
        transcript, audio = "", b""
        for event in conn:
            if event.type == "response.output_audio_transcript.delta":
                transcript += event.delta
            elif event.type == "response.output_audio.delta":
                audio += base64.b64decode(event.delta)
            elif event.type == "response.done":
                usage = event.response.usage
                item = (event.response.output or [])[0]
                break
    assert transcript == "tok1 tok2 tok3 " and audio == bytes(3 * AUDIO_TOKEN_BYTES)
    assert usage is not None and usage.output_tokens == 6 and usage.output_token_details is not None
    assert (usage.output_token_details.text_tokens, usage.output_token_details.audio_tokens) == (3, 3)
    assert item.type == "message" and item.content and item.content[0].transcript == transcript  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- with plain websockets


def test_conversation_grows_and_the_previous_input_is_cached(srv: ServerThread) -> None:
    with connect(ws_url(srv)) as ws:
        recv(ws)
        send(
            ws,
            "session.update",
            session={"type": "realtime", "instructions": "be brief", "output_modalities": ["text"]},
        )
        updated = recv(ws)
        assert updated["type"] == "session.updated" and updated["session"]["instructions"] == "be brief"
        send(ws, "conversation.item.create", item=USER_TEXT)
        send(ws, "response.create")
        first = until(ws, "response.done")[-1]["response"]["usage"]
        send(ws, "conversation.item.create", item=USER_TEXT)
        send(ws, "response.create")
        second = until(ws, "response.done")[-1]["response"]["usage"]
    assert first["input_tokens"] == 2 + 2  # instructions + the user's words
    # The second sees the first answer (3 words) and a second user turn; the first input is cached.
    assert second["input_tokens"] == 2 + 2 + 3 + 2
    assert second["input_token_details"]["cached_tokens"] == first["input_tokens"]
    assert second["input_token_details"]["cached_tokens_details"] == {
        "text_tokens": 4,
        "audio_tokens": 0,
        "image_tokens": 0,
    }


def test_committed_audio_counts_one_token_per_100ms(srv: ServerThread) -> None:
    chunk = base64.b64encode(bytes(AUDIO_TOKEN_BYTES)).decode()
    with connect(ws_url(srv)) as ws:
        recv(ws)
        send(ws, "input_audio_buffer.commit")
        error = recv(ws)
        assert error["type"] == "error" and error["error"]["code"] == "input_audio_buffer_commit_empty"
        for _ in range(2):
            send(ws, "input_audio_buffer.append", audio=chunk)
        send(ws, "input_audio_buffer.commit")
        committed, added, done = (recv(ws) for _ in range(3))
        assert committed["type"] == "input_audio_buffer.committed"
        assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
        assert added["item"]["id"] == committed["item_id"] and added["item"]["content"][0]["type"] == "input_audio"
        send(ws, "response.create", response={"output_modalities": ["text"]})
        usage = until(ws, "response.done")[-1]["response"]["usage"]
    assert usage["input_token_details"]["audio_tokens"] == 2 and usage["input_tokens"] == 2


def test_max_output_tokens_ends_incomplete(srv: ServerThread) -> None:
    with connect(ws_url(srv)) as ws:
        recv(ws)
        send(ws, "response.create", response={"max_output_tokens": 4})  # audio: 2 transcript + 2 audio tokens
        events = until(ws, "response.done")
    done = events[-1]["response"]
    assert done["status"] == "incomplete" and done["status_details"]["reason"] == "max_output_tokens"
    assert done["usage"]["output_tokens"] == 4
    assert [e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"] == ["tok1 ", "tok2 "]


def test_rate_limits_updated_starts_each_response(srv: ServerThread) -> None:
    with connect(ws_url(srv, "model=rl-realtime")) as ws:
        recv(ws)
        remaining = []
        for _ in range(2):
            send(ws, "response.create", response={"output_modalities": ["text"]})
            created, limits = recv(ws), recv(ws)
            assert (created["type"], limits["type"]) == ("response.created", "rate_limits.updated")
            until(ws, "response.done")
            remaining.append({r["name"]: r["remaining"] for r in limits["rate_limits"]})
    assert remaining == [{"requests": 9999, "tokens": 2_000_000 - 3}, {"requests": 9998, "tokens": 2_000_000 - 3 - 6}]


def test_unknown_events_and_bad_json_get_error_events(srv: ServerThread) -> None:
    with connect(ws_url(srv)) as ws:
        recv(ws)
        send(ws, "nope.nothing", event_id="evt_client_1")
        error = recv(ws)
        assert error["type"] == "error" and error["error"]["code"] == "invalid_value"
        assert error["error"]["event_id"] == "evt_client_1"
        ws.send("{not json")
        assert recv(ws)["error"]["code"] == "invalid_json"


def test_binary_frames_are_echoed_and_pings_answered(srv: ServerThread) -> None:
    blob = bytes(range(256)) * 3
    with connect(ws_url(srv), subprotocols=["realtime", "openai-insecure-api-key.sk-test"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        assert recv(ws)["type"] == "session.created"
        ws.send(blob)
        assert ws.recv(timeout=5) == blob
        assert ws.ping().wait(timeout=5)


def test_sim_close_closes_with_the_asked_code(srv: ServerThread) -> None:
    with connect(ws_url(srv)) as ws:
        recv(ws)
        send(ws, "sim.close", code=4001, reason="going away")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "going away")


def test_sim_ws_drop_drops_tcp_without_a_close_frame_after_the_first_response(srv: ServerThread) -> None:
    with connect(ws_url(srv, "model=sim-ws-drop")) as ws:
        recv(ws)
        send(ws, "response.create", response={"output_modalities": ["text"]})
        assert until(ws, "response.done")[-1]["response"]["usage"]["output_tokens"] == 3
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is None  # no close frame: the client reports 1006


def test_sdk_normal_close_ends_iteration(client: openai.OpenAI) -> None:
    with client.realtime.connect(model="gpt-realtime") as conn:
        conn.recv()
        conn.send({"type": "sim.close", "code": 1000, "reason": "done"})  # type: ignore[arg-type,typeddict-unknown-key]
        with pytest.raises(ConnectionClosedOK):
            conn.recv()


@pytest.mark.parametrize(("query", "status"), [("", 400), ("model=sim-error-503", 503)])
def test_handshake_is_refused_with_an_http_error(srv: ServerThread, query: str, status: int) -> None:
    with pytest.raises(InvalidStatus) as info, connect(ws_url(srv, query)):
        pass
    response = info.value.response
    assert response.status_code == status
    assert json.loads(response.body or b"")["error"]["type"] == "invalid_request_error"


def test_azure_deployment_query_names_the_served_model(srv: ServerThread) -> None:
    url = srv.url.replace("http://", "ws://") + "/openai/realtime?api-version=2025-04-01-preview&deployment=my-gpt4o"
    with connect(url) as ws:
        assert recv(ws)["session"]["model"] == "gpt-4o-2024-08-06"


def test_output_tokens_header_on_the_upgrade_request(srv: ServerThread) -> None:
    with connect(ws_url(srv), additional_headers={"x-sim-output-tokens": "1"}) as ws:
        recv(ws)
        send(ws, "response.create", response={"output_modalities": ["text"]})
        assert until(ws, "response.done")[-1]["response"]["usage"]["output_tokens"] == 1


def test_llmobs_simulate_serves_websockets() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "llmobs.cli", "simulate", "--port", str(port), "--output-tokens", "2"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}/v1/realtime?model=m", open_timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        with ws:
            assert recv(ws)["type"] == "session.created"
            send(ws, "response.create", response={"output_modalities": ["text"]})
            assert until(ws, "response.done")[-1]["response"]["usage"]["output_tokens"] == 2
    finally:
        process.terminate()
        process.wait(timeout=10)
