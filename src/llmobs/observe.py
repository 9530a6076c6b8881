"""Where the proxy and the API adapters meet: the adapter protocol, and the response observer.

The proxy knows nothing of any API: it asks an `Adapter` to read the request and for an
`Accumulator`, and hands a copy of every response chunk to a `ResponseObserver`, which
decodes it (content-encoding, SSE) and feeds the accumulator. What the client receives
is the upstream's bytes, less only what stream_usage removes when llmobs asked for usage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmobs.budget import ByteBudget
from llmobs.decoders import MAX_RATIO, ContentDecoder, DecodingError, decoder_for
from llmobs.records import Observation, Outcome, ParsedBody, RequestInfo
from llmobs.sse import Event, SSEDecoder
from llmobs.stream_usage import UsageChunkFilter


class Accumulator(Protocol):
    """Turns one response into an Observation; only observes."""

    info: RequestInfo
    reads_body: bool

    def on_headers(self, headers: Sequence[tuple[bytes, bytes]], wall: float) -> None:
        """The response head, before any of it is relayed; `wall` is time.time() then."""
        ...

    def on_first_byte(self, now: float) -> None: ...

    def on_event(self, event: Event, now: float) -> None: ...

    def on_body(self, body: bytes) -> None: ...

    def on_unread(self) -> None:
        """The rest of the response goes unread (too large, undecodable)."""
        ...

    def finish(self, outcome: Outcome, status_code: int, end: float, *, proxy_overhead: float = 0.0) -> Observation: ...


class Adapter(Protocol):
    """One API: its labels, how to read its requests, how to account its responses."""

    @property
    def name(self) -> str: ...

    @property
    def operation(self) -> str | None: ...

    @property
    def flavor(self) -> str:
        """The provider whose API this is (gen_ai.provider.name when the upstream is unknown)."""
        ...

    def parse(
        self, body: bytes, *, path: str, content_type: bytes, inject_usage: bool, capture_content: bool
    ) -> ParsedBody: ...

    def observe(self, info: RequestInfo, start: float) -> Accumulator: ...


class SessionObserver(Protocol):
    """Watches the frames of one WebSocket session; only observes.

    Responses inside the session begin and end as frames arrive: `drain()` hands them out
    (`Begun` then `Finished`), so the proxy can note them in flight and record them.
    """

    def client_frame(self, data: bytes | str, now: float) -> None: ...

    def upstream_frame(self, data: bytes | str, now: float) -> None: ...

    def close(self, now: float, outcome: Outcome) -> None:
        """The session ended: responses still open end with `outcome`."""
        ...

    def drain(self) -> list[Begun | Finished]: ...


@dataclass(frozen=True, slots=True)
class Begun:
    """A response started inside a session."""

    key: str
    info: RequestInfo
    start: float


@dataclass(frozen=True, slots=True)
class Finished:
    """A response inside a session ended."""

    key: str
    observation: Observation


class SessionAdapter(Protocol):
    """One WebSocket API: its labels, and how to watch a session."""

    @property
    def name(self) -> str: ...

    @property
    def flavor(self) -> str: ...

    @property
    def operation(self) -> str | None:
        """gen_ai.operation.name of the responses inside a session."""
        ...

    def model(self, query: str) -> str | None:
        """The model a session asks for in its query string, if any."""
        ...

    def watch(self, info: RequestInfo) -> SessionObserver: ...


class ResponseObserver:
    """Feeds a copy of one response body to its accumulator; never raises.

    A failure inside accounting is reported once through `on_failure` (called inside the
    `except` block, so it may re-raise under tests) and observing stops; the bytes flow on.
    A body llmobs will not read is reported once through `on_skip(reason)`, and observing
    stops too: `undecodable_body` (corrupt or bomb-sized compression), `event_too_large`
    (one SSE event over `event_limit`), `body_too_large` (a whole body over `body_limit`,
    or past what the shared `budget` of buffered bytes allows).
    """

    __slots__ = (
        "acc", "filter", "sse", "body", "decoder", "blind", "broken", "limit", "now",
        "budget", "held", "_on_failure", "_on_skip",
    )  # fmt: skip

    def __init__(
        self,
        acc: Accumulator,
        *,
        content_type: bytes,
        content_encoding: bytes,
        cut_usage: bool,
        body_limit: int,
        event_limit: int | None = None,
        budget: ByteBudget | None = None,
        on_failure: Callable[[], None],
        on_skip: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.acc = acc
        self.limit = body_limit
        self.now = 0.0
        self.budget = budget
        self.held = 0  # bytes of the buffered body counted against the budget
        self._on_failure = on_failure
        self._on_skip = on_skip
        self.broken = False
        event_limit = event_limit or body_limit
        sse = b"text/event-stream" in content_type.lower()
        # A stream is read an event at a time: no read of it may inflate past one event's limit,
        # nor the stream past MAX_RATIO (a small bomb of tiny events would stall the loop).
        self.decoder: ContentDecoder | None = (
            decoder_for(content_encoding, event_limit, MAX_RATIO) if sse else decoder_for(content_encoding, body_limit)
        )
        self.blind = self.decoder is None  # an encoding we cannot read: relayed, not observed
        plain = content_encoding.strip().lower() in (b"", b"identity")
        # Only plain bytes can be cut; a compressed stream is relayed whole, usage chunk included.
        self.filter = UsageChunkFilter(self._on_event, event_limit=event_limit) if cut_usage and sse and plain else None
        self.sse = None if self.filter is not None or not sse else SSEDecoder(max_event_bytes=event_limit)
        # Only a body the accumulator reads is kept (not /models lists, file downloads...).
        self.body: bytearray | None = bytearray() if not sse and acc.reads_body else None

    @property
    def cutting(self) -> bool:
        """Whether bytes must pass through cut() (the stream is being edited) rather than feed()."""
        return self.filter is not None and self.filter.cutting

    def cut(self, chunk: bytes, now: float) -> bytes:
        """The chunk as the client must get it, observed on the way."""
        assert self.filter is not None
        self.now = now
        out = self.filter.feed(chunk)
        if self.filter.decoder.dropped and not self.blind:
            self._skip("event_too_large")
        return out

    def feed(self, chunk: bytes, now: float) -> None:
        """Observe a chunk the client already has."""
        if self.filter is not None:
            self.cut(chunk, now)  # no longer cutting: the filter only decodes and observes
            return
        if self.broken or self.blind or (self.sse is None and self.body is None):
            return
        self.now = now
        try:
            data = self.decoder.decode(chunk) if self.decoder is not None else chunk
        except DecodingError:
            self._skip("undecodable_body")  # corrupt or bomb-sized: the upstream's bytes, not our failure
            return
        if self.sse is not None:
            for event in self.sse.feed(data):
                self._on_event(event)
            if self.sse.dropped:
                self._skip("event_too_large")
        elif self.body is not None:
            if len(self.body) + len(data) > self.limit or not self._hold(len(data)):
                self._skip("body_too_large")  # usage will count as missing
            else:
                self.body += data

    def close(self) -> bytes:
        """End of body: account a buffered body; return held-back stream bytes, if any."""
        if self.filter is not None:
            return self.filter.flush()
        if self.body is not None and not self.broken and not self.blind:
            try:
                assert self.decoder is not None
                self.body += self.decoder.flush()
            except DecodingError:
                self._skip("undecodable_body")
                return b""
            try:
                self.acc.on_body(bytes(self.body))
            except Exception:  # noqa: BLE001 - accounting never breaks traffic; counted
                self._broke()
        self.discard()
        return b""

    def discard(self) -> None:
        """Let go of a buffered body (at its end, or when the exchange ends early)."""
        self.body = None
        if self.budget is not None and self.held:
            self.budget.give(self.held)
        self.held = 0

    def _hold(self, size: int) -> bool:
        if self.budget is None:
            return True
        if not self.budget.take(size):
            return False
        self.held += size
        return True

    def _skip(self, reason: str) -> None:
        self.blind = True
        self.discard()
        self.acc.on_unread()
        if self.filter is not None:
            self.filter.observe = None  # bytes keep flowing (and being cut); nothing more is accounted
        self._on_skip(reason)

    def _on_event(self, event: Event) -> None:
        if self.broken or self.blind:
            return
        try:
            self.acc.on_event(event, self.now)
        except Exception:  # noqa: BLE001 - accounting never breaks traffic; counted
            self._broke()

    def _broke(self) -> None:
        self.broken = True
        self._on_failure()
