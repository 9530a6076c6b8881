"""OpenAI images, audio and moderations: what a request asks for, and what its response used.

What the wire carries (openai-python's types; sim/openai_media.py follows them):

* **images/generations** (JSON) and **images/edits** (multipart): `data` holds one item per
  image. GPT image models report `usage` {input_tokens, input_tokens_details {text_tokens,
  image_tokens}, output_tokens, output_tokens_details?}; dall-e models report none, so the image
  count is all there is (unpriced). `stream: true` sends `image_generation.partial_image` /
  `image_edit.partial_image` events, then one `*.completed` event per image with its usage
  (summed when there are several: each event names one image; not verified for n > 1).
* **audio/transcriptions** and **audio/translations** (multipart): `usage` is {"type":
  "tokens", input_tokens, input_token_details {text_tokens, audio_tokens}, output_tokens}
  (gpt-4o transcribe models) or {"type": "duration", "seconds"} (whisper-1: the billed seconds,
  whole); verbose_json also gives `duration`, the only quantity a translation reports, so a
  translation expects no usage. `stream: true` (token models): transcript.text.delta events,
  then transcript.text.done with the usage. The text, srt and vtt formats answer plain text,
  which cannot carry usage: such a request expects none (not "usage missing").
* **audio/speech** (JSON in, audio out): the audio is relayed, never buffered. tts-1 and
  tts-1-hd are billed per input character, which no response reports: the count is the
  request's `input` length in code points, taken once the audio has arrived completely.
  `stream_format: "sse"` (gpt-4o-mini-tts): speech.audio.delta events, then speech.audio.done
  with usage {input_tokens, output_tokens}. Binary audio from other models carries no usage,
  and expects none.
* **moderations**: no usage (genai-prices lists moderation as free); the response names the model.

Prices: wherever a response says more than input and output tokens, `Usage.pricing` holds it in
genai-prices' own usage keys, so genai-prices prices each quantity at its own rate: images by
its `images` extractor (input_text, input_image, output_image tokens); whisper's seconds by its
`live` extractor (`usage.seconds` -> audio_seconds, priced per audio hour); transcription tokens
mapped here (no extractor reads `input_token_details`) to input_text and input_audio tokens;
tts-1 as input_characters (priced per million characters).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from genai_prices.data import providers as _BUNDLED

from llmobs.apis.base import count, error_type, loads_object
from llmobs.apis.multipart import boundary, form_fields
from llmobs.apis.openai_common import OpenAIAccumulator, parse_usage
from llmobs.records import Observation, Outcome, ParsedBody, RequestInfo, Usage
from llmobs.sse import Event
from llmobs.telemetry import semconv as sc

# The request's `input` length, for character-billed speech. Internal: the OTel sink emits only
# gen_ai.request.*, openai.request.* and gen_ai.output.type params as span attributes.
INPUT_CHARACTERS = "llmobs.request.input_characters"
OUTPUT_TYPE = sc.GEN_AI_OUTPUT_TYPE  # text | json | image | speech

_OPENAI = next((p for p in _BUNDLED if p.id == "openai"), None)
_TEXT_FORMATS = frozenset({"text", "srt", "vtt"})
# The event type when it is the first key (as OpenAI sends it): a delta is then never JSON-decoded.
_HEAD_TYPE = re.compile(rb'\s*\{\s*"type"\s*:\s*"([^"\\]{1,64})"')


# ---- requests ----------------------------------------------------------------------------


def read_images(body: bytes, content_type: bytes) -> ParsedBody:
    """images/generations (JSON) and images/edits (multipart): model, stream, image count asked."""
    fields = _fields(body, content_type)
    if fields is None:
        return _unread(body)
    params: dict[str, Any] = {OUTPUT_TYPE: sc.OUTPUT_TYPE_IMAGE}
    n = fields.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        params[sc.GEN_AI_REQUEST_CHOICE_COUNT] = n
    return ParsedBody(_model(fields), _flag(fields.get("stream")), params, body, False)


def read_audio_text(body: bytes, content_type: bytes) -> ParsedBody:
    """audio/transcriptions and audio/translations (multipart): model, stream, output format."""
    fields = _fields(body, content_type)
    if fields is None:
        return _unread(body)
    output = sc.OUTPUT_TYPE_TEXT if fields.get("response_format") in _TEXT_FORMATS else sc.OUTPUT_TYPE_JSON
    return ParsedBody(_model(fields), _flag(fields.get("stream")), {OUTPUT_TYPE: output}, body, False)


def read_speech(body: bytes, content_type: bytes) -> ParsedBody:
    """audio/speech (JSON): model, SSE or binary, and the input's length in characters."""
    fields = _fields(body, content_type)
    if fields is None:
        return _unread(body)
    params: dict[str, Any] = {OUTPUT_TYPE: sc.OUTPUT_TYPE_SPEECH}
    text = fields.get("input")
    if isinstance(text, str):
        params[INPUT_CHARACTERS] = len(text)
    return ParsedBody(_model(fields), fields.get("stream_format") == "sse", params, body, False)


def read_model(body: bytes, content_type: bytes) -> ParsedBody:
    """moderations, Anthropic's count_tokens (JSON): the model, if the request names one."""
    fields = _fields(body, content_type)
    return _unread(body) if fields is None else ParsedBody(_model(fields), False, {}, body, False)


def _fields(body: bytes, content_type: bytes) -> dict[str, Any] | None:
    """A form's few small text fields, or a JSON object; None when neither can be read."""
    if boundary(content_type) is not None:
        return form_fields(content_type, body)
    return loads_object(body)


def _unread(body: bytes) -> ParsedBody:
    return ParsedBody(None, False, {}, body, False)


def _model(fields: dict[str, Any]) -> str | None:
    model = fields.get("model")
    return model if isinstance(model, str) and model else None


def _flag(value: Any) -> bool:
    """A boolean as JSON (`true`) or a form field (`"true"`, as openai-python sends it) says it."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


# ---- responses ---------------------------------------------------------------------------


class MediaAccumulator(OpenAIAccumulator):
    """What the media endpoints share: typed stream events, errors, no generated text to capture."""

    has_output = False
    deltas: frozenset[str] = frozenset()  # stream events that only mark progress (the first is TTFT)
    terminals: frozenset[str] = frozenset()  # stream events that end a stream and carry its usage
    counts_deltas = False  # a delta is about a token (a usage estimate when none arrives)
    terminal_output = False  # a terminal event carries output of its own (a finished image)

    def on_event(self, event: Event, now: float) -> None:
        if not event.data:
            return
        kind, obj = _typed(event)
        if kind in self.deltas:
            self.answered(now)
            if self.counts_deltas:
                self.token_events += 1
            if self.chunks is not None:  # a partial image, a piece of transcript or of audio
                self.chunk(now)
            return
        if obj is None:
            obj = loads_object(event.data)
            if obj is None:
                return
        if kind == "error" or obj.get("error"):
            self.error_type = error_type(obj.get("error", obj))
            self.terminal_seen = True
        elif kind in self.terminals:
            self.answered(now)
            if self.chunks is not None and self.terminal_output:
                self.chunk(now)
            self.terminal_seen = True
            self.on_terminal(obj)

    def on_terminal(self, obj: dict[str, Any]) -> None:
        """Account a stream's terminal event."""

    def on_result(self, obj: dict[str, Any]) -> None:
        if obj.get("error"):
            self.error_type = error_type(obj["error"])
            return
        self.identify(obj)
        self.account(obj)

    def account(self, obj: dict[str, Any]) -> None:
        """Account a whole (non-streamed) response object."""


class ImagesAccumulator(MediaAccumulator):
    """images/generations and images/edits: the images returned, and tokens where reported."""

    deltas = frozenset({"image_generation.partial_image", "image_edit.partial_image"})
    terminals = frozenset({"image_generation.completed", "image_edit.completed"})
    terminal_output = True

    def account(self, obj: dict[str, Any]) -> None:
        data = obj.get("data")
        self.usage = image_usage(obj, len(data) if isinstance(data, list) else None)

    def on_terminal(self, obj: dict[str, Any]) -> None:
        self.usage = plus(self.usage, image_usage(obj, 1))


class TranscriptionAccumulator(MediaAccumulator):
    """audio/transcriptions: tokens (gpt-4o transcribe models) or billed seconds (whisper-1)."""

    deltas = frozenset({"transcript.text.delta", "transcript.text.segment"})
    terminals = frozenset({"transcript.text.done"})
    counts_deltas = True

    def __init__(self, info: RequestInfo, start: float) -> None:
        super().__init__(info, start)
        if info.params.get(OUTPUT_TYPE) == sc.OUTPUT_TYPE_TEXT:
            self.has_usage = False  # text, srt, vtt: the format cannot carry usage

    def account(self, obj: dict[str, Any]) -> None:
        self.usage = transcription_usage(obj)

    def on_terminal(self, obj: dict[str, Any]) -> None:
        self.usage = transcription_usage(obj)


class TranslationAccumulator(TranscriptionAccumulator):
    """audio/translations: only verbose_json reports a quantity (`duration`); others expect none."""

    has_usage = False


class SpeechAccumulator(MediaAccumulator):
    """audio/speech: binary audio (relayed, never buffered), or SSE ending with usage."""

    reads_body = False
    deltas = frozenset({"speech.audio.delta"})
    terminals = frozenset({"speech.audio.done"})

    def __init__(self, info: RequestInfo, start: float) -> None:
        super().__init__(info, start)
        self.has_usage = info.stream  # only the SSE format carries usage
        characters = info.params.get(INPUT_CHARACTERS)
        self.characters = characters if isinstance(characters, int) and per_character(info.model) else None

    def on_terminal(self, obj: dict[str, Any]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)

    def finish(self, outcome: Outcome, status_code: int, end: float, *, proxy_overhead: float = 0.0) -> Observation:
        if self.characters is not None and self.usage is None and outcome is Outcome.COMPLETED:
            if 200 <= status_code < 300:
                self.usage = Usage(pricing=(("input_characters", self.characters),))
        return super().finish(outcome, status_code, end, proxy_overhead=proxy_overhead)


class ModerationsAccumulator(MediaAccumulator):
    """moderations: no usage; the served model and the id."""

    has_usage = False
    terminal_seen = True


# ---- usage -------------------------------------------------------------------------------


def per_character(model: str | None) -> bool:
    """Whether OpenAI bills this speech model per input character (tts-1, tts-1-hd and their dated names)."""
    return model is not None and (model == "tts-1" or model.startswith("tts-1-"))


def image_usage(obj: dict[str, Any], images: int | None) -> Usage | None:
    """An images response or completed event: its usage (genai-prices' `images` keys) and image count."""
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None if images is None else Usage(images=images)
    keys = genai_keys(obj, "images")
    if keys is None:  # not the shape genai-prices reads (no details): token totals only
        return dataclasses.replace(parse_usage(usage), images=images)
    return Usage(
        input_tokens=count(keys.get("input_tokens")),
        output_tokens=count(keys.get("output_tokens")),
        input_image_tokens=count(keys.get("input_image_tokens")),
        output_image_tokens=count(keys.get("output_image_tokens")),
        images=images,
        pricing=tuple(keys.items()),
    )


def transcription_usage(obj: dict[str, Any]) -> Usage | None:
    """A transcription or translation (body or done event): tokens, billed seconds, or its duration."""
    usage = obj.get("usage")
    if isinstance(usage, dict):
        if usage.get("type") == "duration":
            keys = genai_keys(obj, "live")
            seconds = None if keys is None else keys.get("audio_seconds")
            if seconds is not None:
                return Usage(audio_seconds=seconds, pricing=(("audio_seconds", seconds),))
        elif "input_tokens" in usage or "output_tokens" in usage:
            return _transcription_tokens(usage)
    duration = obj.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and math.isfinite(duration):
        if duration >= 0:
            return Usage(audio_seconds=duration, pricing=(("audio_seconds", duration),))
    return None


def _transcription_tokens(usage: dict[str, Any]) -> Usage:
    details = usage.get("input_token_details")
    details = details if isinstance(details, dict) else {}
    keys = {
        "input_tokens": count(usage.get("input_tokens")),
        "input_text_tokens": count(details.get("text_tokens")),
        "input_audio_tokens": count(details.get("audio_tokens")),
        "output_tokens": count(usage.get("output_tokens")),
    }
    return Usage(
        input_tokens=keys["input_tokens"],
        output_tokens=keys["output_tokens"],
        input_audio_tokens=keys["input_audio_tokens"],
        pricing=tuple((key, value) for key, value in keys.items() if value is not None),
    )


def genai_keys(obj: dict[str, Any], flavor: str) -> dict[str, int | float] | None:
    """The usage genai-prices' own OpenAI extractor for `flavor` reads from `obj`, in its keys.

    None when it reads nothing (another shape, a missing required field, a bad value). The
    bundled provider data is used, never the process-wide snapshot (see telemetry/pricing.py).
    """
    if _OPENAI is None:
        return None
    try:
        _, usage = _OPENAI.extract_usage(obj, api_flavor=flavor)
    except ValueError:
        return None
    keys = {k: v for k, v in vars(usage).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return keys or None


def plus(a: Usage | None, b: Usage | None) -> Usage | None:
    """Two usages added up, field by field (None + None stays None), pricing keys too."""
    if a is None or b is None:
        return a if b is None else b
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Usage):
        if field.name != "pricing":
            x, y = getattr(a, field.name), getattr(b, field.name)
            values[field.name] = x if y is None else y if x is None else x + y
    pricing = dict(a.pricing)
    for key, value in b.pricing:
        pricing[key] = pricing.get(key, 0) + value
    return Usage(**values, pricing=tuple(pricing.items()))


def _typed(event: Event) -> tuple[str, dict[str, Any] | None]:
    """An event's type, and its object when decoding it was needed to find the type."""
    if event.event != "message":
        return event.event, None
    head = _HEAD_TYPE.match(event.data)
    if head is not None:
        return head.group(1).decode("utf-8", "replace"), None
    obj = loads_object(event.data)
    kind = obj.get("type") if obj is not None else None
    return (kind if isinstance(kind, str) else ""), obj
