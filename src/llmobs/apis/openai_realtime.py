"""OpenAI Realtime over WebSocket: one Observation per `response.done`, pure.

The server's events are JSON text frames. Most are large and many (audio deltas carry
base64 audio), so a frame's `type` is read off its first bytes and only the few that matter
are decoded: `session.created` / `session.updated` (the model), `response.created` (a
response begins), `rate_limits.updated` (the provider's limits, carried by the responses that
end next), the first output delta of a response (its time to first token), `response.done`
(usage, status) and `error`. Client frames are counted, never decoded.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import parse_qs

from genai_prices import extract_usage

from llmobs.apis.base import count, error_type, loads_object
from llmobs.observe import Begun, Finished
from llmobs.ratelimits import from_realtime
from llmobs.records import CHUNK_INTERVALS, Observation, Outcome, RateLimit, RequestInfo, Timings, Usage, UsageSource

# The type is the first field the API writes; the bound keeps the search off base64 audio.
_TYPE = re.compile(rb'"type"\s*:\s*"([a-z_.]{1,64})"')
_RESPONSE_ID = re.compile(rb'"response_id"\s*:\s*"([^"\\]{1,128})"')
_HEAD = 256  # bytes of a frame searched for its type and response id
_DELTAS = frozenset(
    {
        # GA names, then the beta names some servers and SDK versions still use.
        b"response.output_text.delta",
        b"response.output_audio.delta",
        b"response.output_audio_transcript.delta",
        b"response.function_call_arguments.delta",
        b"response.text.delta",
        b"response.audio.delta",
        b"response.audio_transcript.delta",
    }
)
_SESSION = frozenset({b"session.created", b"session.updated"})
_STATUS_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


class RealtimeAdapter:
    """GET .../realtime upgraded to a WebSocket."""

    name = "realtime"
    flavor = "openai"
    operation = "chat"

    def model(self, query: str) -> str | None:
        """`model=` (OpenAI) or `deployment=` (Azure OpenAI) from the upgrade request's query."""
        values = parse_qs(query, max_num_fields=64)
        for key in ("model", "deployment"):
            found = values.get(key)
            if found and 0 < len(found[0]) <= 256:
                return found[0]
        return None

    def watch(self, info: RequestInfo) -> RealtimeSession:
        return RealtimeSession(info)


@dataclasses.dataclass(slots=True)
class _Response:
    start: float
    first_token: float | None = None
    deltas: int = 0
    chunks: list[float] | None = None  # arrival of each output delta, when asked for (bounded)


class RealtimeSession:
    """Accounts the responses of one Realtime session."""

    def __init__(self, info: RequestInfo) -> None:
        self.info = info
        self.model = info.model
        self.open: dict[str, _Response] = {}
        self._events: list[Begun | Finished] = []
        self.rate_limits: tuple[RateLimit, ...] = ()  # the latest rate_limits.updated, for what ends next

    def client_frame(self, data: bytes | str, now: float) -> None:
        """Client events (audio, session updates, response.create) need no accounting."""

    def upstream_frame(self, data: bytes | str, now: float) -> None:
        raw = data.encode() if isinstance(data, str) else data
        match = _TYPE.search(raw, 0, _HEAD)
        if match is None:
            return
        kind = match.group(1)
        if kind in _DELTAS:
            response = self._current(raw)
            if response is not None:
                response.deltas += 1
                if response.first_token is None:
                    response.first_token = now
                chunks = response.chunks
                if chunks is not None and len(chunks) <= CHUNK_INTERVALS:
                    chunks.append(now)
        elif kind == b"response.created":
            obj = loads_object(raw)
            response_id = _response_id(obj)
            if response_id is not None and response_id not in self.open:
                self.open[response_id] = self._begin(now)
                self._events.append(Begun(response_id, self._info(), now))
        elif kind == b"response.done":
            obj = loads_object(raw)
            response_id = _response_id(obj)
            if obj is not None and response_id is not None:
                self._done(response_id, obj["response"], now)
        elif kind == b"rate_limits.updated":
            obj = loads_object(raw)
            if obj is not None:
                self.rate_limits = from_realtime(obj.get("rate_limits")) or self.rate_limits
        elif kind in _SESSION:
            obj = loads_object(raw)
            session = obj.get("session") if obj is not None else None
            if isinstance(session, dict) and isinstance(session.get("model"), str):
                self.model = session["model"]

    def close(self, now: float, outcome: Outcome) -> None:
        """Responses still open when the session ends are recorded with what was seen."""
        for response_id in list(self.open):
            response = self.open.pop(response_id)
            self._events.append(Finished(response_id, self._observation(response, now, outcome)))

    def drain(self) -> list[Begun | Finished]:
        events, self._events = self._events, []
        return events

    # -----------------------------------------------------------------------------------

    def _begin(self, now: float) -> _Response:
        return _Response(now, chunks=[] if self.info.chunk_times else None)

    def _info(self) -> RequestInfo:
        return dataclasses.replace(self.info, model=self.model, stream=True)

    def _current(self, raw: bytes) -> _Response | None:
        if len(self.open) == 1:
            return next(iter(self.open.values()))
        match = _RESPONSE_ID.search(raw, 0, _HEAD)
        return self.open.get(match.group(1).decode()) if match else None

    def _done(self, response_id: str, response: dict[str, Any], now: float) -> None:
        state = self.open.pop(response_id, None)
        if state is None:  # a response.done without its response.created: account it from here
            state = self._begin(now)
            self._events.append(Begun(response_id, self._info(), now))
        status = response.get("status")
        details = response.get("status_details")
        details = details if isinstance(details, dict) else {}
        obs = self._observation(state, now, Outcome.COMPLETED)
        usage = _usage({"response": response}) if isinstance(response.get("usage"), dict) else None
        error = None
        reasons: tuple[str, ...] = ()
        if status == "failed":
            error = error_type(details.get("error"), "response_failed")
        elif status == "incomplete":
            reason = details.get("reason")
            reasons = (_STATUS_REASONS.get(reason, str(reason)) if isinstance(reason, str) else "incomplete",)
        elif status == "completed":
            reasons = ("stop",)
        elif status == "cancelled":
            reasons = ("cancelled",)
        obs = dataclasses.replace(
            obs,
            outcome=Outcome.UPSTREAM_ERROR if error else Outcome.COMPLETED,
            error_type=error,
            finish_reasons=reasons,
            response_id=response_id,
            usage=usage or Usage(),
            usage_source=UsageSource.REPORTED if usage else UsageSource.MISSING,
            estimated_output_tokens=None if usage else (state.deltas or None),
        )
        self._events.append(Finished(response_id, obs))

    def _observation(self, state: _Response, now: float, outcome: Outcome) -> Observation:
        interrupted = outcome is not Outcome.COMPLETED
        return Observation(
            request=self._info(),
            outcome=outcome,
            status_code=101,
            timings=Timings(
                start=state.start,
                end=now,
                first_byte=state.start,
                first_token=state.first_token,
                chunks=tuple(state.chunks) if state.chunks else (),
            ),
            usage_source=UsageSource.MISSING if interrupted else UsageSource.NOT_APPLICABLE,
            estimated_output_tokens=(state.deltas or None) if interrupted else None,
            response_model=self.model,
            error_type=outcome.value if interrupted else None,
            rate_limits=self.rate_limits,
        )


def _response_id(obj: dict[str, Any] | None) -> str | None:
    response = obj.get("response") if obj is not None else None
    if isinstance(response, dict) and isinstance(response.get("id"), str):
        return str(response["id"])
    return None


def _usage(event: dict[str, Any]) -> Usage | None:
    """A response.done's usage, through genai-prices' realtime extractor (text, audio, image, cached)."""
    try:
        extracted = extract_usage(event, provider_id="openai", api_flavor="realtime").usage
    except (ValueError, TypeError, KeyError):
        return None
    values = {key: value for key, value in vars(extracted).items() if isinstance(value, (int, float))}
    return Usage(
        input_tokens=count(values.get("input_tokens")),
        output_tokens=count(values.get("output_tokens")),
        cache_read_tokens=count(values.get("cache_read_tokens")),
        input_audio_tokens=count(values.get("input_audio_tokens")),
        input_image_tokens=count(values.get("input_image_tokens")),
        output_audio_tokens=count(values.get("output_audio_tokens")),
        pricing=tuple(sorted(values.items())),
    )
