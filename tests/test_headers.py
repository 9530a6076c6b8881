"""Header policy, pure: what goes upstream and what comes back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmobs.proxy import headers as hp


def test_hop_by_hop_own_host_and_length_are_dropped_the_rest_kept_in_order() -> None:
    given_headers = [
        (b"host", b"evil.example"),
        (b"content-length", b"2"),
        (b"transfer-encoding", b"chunked"),
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-authorization", b"Basic abc"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"x-llmobs-tenant", b"t"),
        (b"X-LLMOBS-Other", b"o"),
        (b"authorization", b"Bearer sk-client"),
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
        (b"accept", b"text/event-stream"),
    ]
    assert hp.request_headers(given_headers) == [
        (b"authorization", b"Bearer sk-client"),
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
        (b"accept", b"text/event-stream"),
    ]


def test_configured_key_replaces_every_client_credential() -> None:
    out = hp.request_headers(
        [(b"authorization", b"Bearer a"), (b"api-key", b"b"), (b"Authorization", b"c")],
        authorization=b"Bearer upstream",
    )
    assert out == [(b"authorization", b"Bearer upstream")]


def test_response_headers_keep_duplicates_and_drop_hop_by_hop() -> None:
    upstream = [
        (b"Content-Type", b"text/event-stream"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"10"),
    ]
    assert hp.response_headers(upstream, drop=frozenset({b"content-length"})) == [
        (b"content-type", b"text/event-stream"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


def test_control_characters_make_a_header_unsendable() -> None:
    for value in (b"a\rb", b"a\nb", b"a\x00b", b"a\x7fb", b"a\x1bb"):
        assert hp.unsendable([(b"x-ok", b"fine"), (b"x-bad", value)]) == b"x-bad"
    assert hp.unsendable([(b"x-tab", b"a\tb"), (b"x-utf8", "café ☕".encode()), (b"x-latin", b"\xe9")]) is None


def test_utf8_header_text_round_trips_byte_for_byte() -> None:
    value = "café ☕ 東京".encode()
    assert hp.text(value).encode("utf-8") == value
    assert hp.text(b"caf\xe9") == "café"  # not UTF-8: obsolete latin-1 text, kept readable


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=12)), max_size=12))
def test_policy_never_forwards_hop_by_hop_host_or_own_headers(headers: list[tuple[bytes, bytes]]) -> None:
    out = hp.request_headers(headers)
    for name, _ in out:
        lower = name.lower()
        assert lower not in hp.HOP_BY_HOP and lower not in (b"host", b"content-length")
        assert not lower.startswith(b"x-llmobs-")
    kept = [h for h in headers if h in out]
    assert out == kept  # what survives keeps its order and bytes
