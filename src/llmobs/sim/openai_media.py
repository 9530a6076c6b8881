"""OpenAI media endpoints: images, audio (transcriptions, translations, speech) and moderations.

Numbers come from the request and the uploaded bytes only:

* **Images** (``images/generations`` JSON, ``images/edits`` multipart with ``image`` /
  ``image[]`` files, optional ``mask``): ``model`` defaults to ``dall-e-2``; ``n`` (1-10)
  images, each the same 1x1 PNG (``PNG_1X1``). GPT image models (names starting ``gpt-image``
  or ``chatgpt-image``) always answer ``b64_json`` and report ``usage``: ``text_tokens`` = words
  of ``prompt``, ``image_tokens`` = ``ceil(bytes / IMAGE_BYTES_PER_TOKEN)`` per uploaded image
  (not the mask), ``input_tokens`` = both, ``output_tokens`` = ``n * IMAGE_OUTPUT_TOKENS[quality]
  [size]`` (``auto`` size is 1024x1024, ``auto`` quality is medium), ``total_tokens``; the
  answer also names ``size``, ``quality``, ``background`` and ``output_format``. ``dall-e-*``
  answers have no usage and give ``url`` unless ``response_format`` is ``b64_json``;
  ``dall-e-3`` adds ``revised_prompt`` (the prompt).
* **Transcriptions / translations** (multipart ``file``, ``model``): the audio lasts
  ``len(file) / AUDIO_BYTES_PER_SECOND`` seconds (16 kHz 16-bit mono PCM), rounded to 2
  decimals; the text is the usual output tokens ``"tok1 tok2 ... "``. Models whose name contains
  ``transcribe`` report ``usage: {"type": "tokens", input_tokens, input_token_details:
  {text_tokens: words of prompt, audio_tokens: ceil(len(file) / AUDIO_BYTES_PER_TOKEN)},
  output_tokens: output tokens, total_tokens}``, accept ``json``/``text`` only and can stream
  (``stream=true``: one ``transcript.text.delta`` per token, then ``transcript.text.done`` with
  the usage). Other models (``whisper-1``) report ``usage: {"type": "duration", "seconds":
  ceil(duration)}``; ``verbose_json`` adds ``duration``, ``language`` and one segment;
  translations answer ``text`` only (plus ``verbose_json`` details), no usage.
* **Speech** (JSON in, audio out): ``SPEECH_BYTES_PER_CHAR`` bytes per character of ``input``,
  ``content-type`` from ``response_format`` (``AUDIO_TYPES``), sent after ``ttft`` in
  ``SPEECH_CHUNK_BYTES`` chunks with ``chunk_gap`` between them, without content-length.
  ``stream_format: "sse"`` (not for ``tts-1*``): one ``speech.audio.delta`` (base64 chunk) per
  chunk, then ``speech.audio.done`` with ``usage``: ``input_tokens`` = words of ``input`` and
  ``instructions``, ``output_tokens`` = characters of ``input``, ``total_tokens``.
* **Moderations**: one result per input string (a list of multimodal parts is one input);
  flagged, with category ``violence``, when the text contains ``sim-flag``. No usage.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from typing import Any

from llmobs.proxy.asgi import Send
from llmobs.sim.common import BadRequest, Call, Stream, dumps, new_id, send_bytes, send_json, tokens, words
from llmobs.sim.multipart import Upload

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
IMAGE_BYTES_PER_TOKEN = 100
IMAGE_OUTPUT_TOKENS = {  # gpt-image-1's published output tokens per image
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
AUDIO_BYTES_PER_SECOND = 32_000
AUDIO_BYTES_PER_TOKEN = 3_200
SPEECH_BYTES_PER_CHAR = 100
SPEECH_CHUNK_BYTES = 4096
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_TEXT = (b"content-type", b"text/plain; charset=utf-8")


def _int(call: Call, name: str, default: int, low: int, high: int) -> int:
    """An integer field of a JSON or multipart body (multipart values are strings)."""
    value = call.body.get(name, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"Invalid '{name}': expected an integer from {low} to {high}, got {value!r}.", name)
    return value


def _text(call: Call, name: str, default: str | None = None) -> str:
    value = call.body.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"Missing required parameter: '{name}'.", name)
    return value


def _file(call: Call, name: str) -> Upload:
    files = call.files.get(name)
    if not files:
        raise BadRequest(f"Missing required parameter: '{name}'.", name)
    return files[0]


# ---------------------------------------------------------------------------- images


def _gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


async def _images(call: Call, send: Send, images: list[Upload]) -> None:
    prompt = _text(call, "prompt")
    n = _int(call, "n", 1, 1, 10)
    model = call.model or "dall-e-2"
    created = int(time.time())
    b64 = base64.b64encode(PNG_1X1).decode()
    if not _gpt_image(model):
        as_b64 = call.body.get("response_format") == "b64_json"
        item: dict[str, Any] = (
            {"b64_json": b64} if as_b64 else {"url": f"{call.base_url}/sim-images/{new_id('img-')}.png"}
        )
        if model.startswith("dall-e-3"):
            item["revised_prompt"] = prompt
        call.charge(0, 0)
        await asyncio.sleep(call.config.ttft)
        await send_json(send, 200, {"created": created, "data": [item] * n}, call)
        return
    size = _text(call, "size", "auto")
    size = "1024x1024" if size == "auto" else size
    quality = _text(call, "quality", "auto")
    quality = "medium" if quality == "auto" else quality
    per_image = IMAGE_OUTPUT_TOKENS.get(quality, {}).get(size)
    if per_image is None:
        raise BadRequest(f"Invalid size {size!r} or quality {quality!r} for {model}.", "size")
    text_tokens = words(prompt)
    image_tokens = sum(math.ceil(len(f.data) / IMAGE_BYTES_PER_TOKEN) for f in images)
    output = n * per_image
    usage = {
        "input_tokens": text_tokens + image_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
        "output_tokens": output,
        "total_tokens": text_tokens + image_tokens + output,
    }
    call.charge(text_tokens + image_tokens, output)
    obj = {
        "created": created,
        "background": "opaque",
        "data": [{"b64_json": b64}] * n,
        "output_format": "png",
        "quality": quality,
        "size": size,
        "usage": usage,
    }
    await asyncio.sleep(call.config.ttft)
    await send_json(send, 200, obj, call)


async def image_generations(call: Call, send: Send, fault: str | None) -> None:
    """POST images/generations."""
    await _images(call, send, [])


async def image_edits(call: Call, send: Send, fault: str | None) -> None:
    """POST images/edits (multipart)."""
    images = call.files.get("image")
    if not images:
        raise BadRequest("Missing required parameter: 'image'.", "image")
    await _images(call, send, images)


# ---------------------------------------------------------------------------- transcriptions


def _duration(upload: Upload) -> float:
    return round(len(upload.data) / AUDIO_BYTES_PER_SECOND, 2)


def _segment(text: str, duration: float, count: int) -> dict[str, Any]:
    return {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": duration,
        "text": text,
        "tokens": [50364 + i for i in range(count)],
        "temperature": 0.0,
        "avg_logprob": -0.25,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.0,
    }


async def _audio_text(call: Call, send: Send, *, translate: bool) -> None:
    upload = _file(call, "file")
    fmt = _text(call, "response_format", "json")
    count = call.output_tokens
    text = "".join(tokens(count))
    token_model = "transcribe" in call.model and not translate
    if token_model:
        if fmt not in ("json", "text"):
            raise BadRequest(f"response_format '{fmt}' is not compatible with model '{call.model}'.", "response_format")
        text_tokens = words(call.body.get("prompt"))
        audio_tokens = math.ceil(len(upload.data) / AUDIO_BYTES_PER_TOKEN)
        usage: dict[str, Any] = {
            "type": "tokens",
            "input_tokens": text_tokens + audio_tokens,
            "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            "output_tokens": count,
            "total_tokens": text_tokens + audio_tokens + count,
        }
        call.charge(text_tokens + audio_tokens, count)
        if call.stream:
            await _stream_transcript(call, send, count, text, usage)
            return
    else:
        if call.stream:
            raise BadRequest(f"Streaming is not supported for model '{call.model}'.", "stream")
        if fmt not in ("json", "text", "verbose_json", "srt", "vtt"):
            raise BadRequest(f"Invalid response_format: {fmt!r}.", "response_format")
        usage = {"type": "duration", "seconds": math.ceil(_duration(upload))}
        call.charge(0, 0)
    await asyncio.sleep(call.config.ttft)
    if fmt == "text":
        await send_bytes(send, 200, text.encode(), call.reply_headers(), compress=call.gzip, content_type=_TEXT)
    elif fmt in ("srt", "vtt"):
        await send_bytes(
            send,
            200,
            _subtitles(fmt, text, _duration(upload)),
            call.reply_headers(),
            compress=call.gzip,
            content_type=_TEXT,
        )
    elif fmt == "verbose_json":
        duration = _duration(upload)
        obj: dict[str, Any] = {
            "task": "translate" if translate else "transcribe",
            "language": "english",
            "duration": duration,
            "text": text,
            "segments": [_segment(text, duration, count)],
        }
        if not translate:
            obj["usage"] = usage
        await send_json(send, 200, obj, call)
    else:
        await send_json(send, 200, {"text": text} if translate else {"text": text, "usage": usage}, call)


def _subtitles(fmt: str, text: str, duration: float) -> bytes:
    minutes, seconds = divmod(duration, 60)
    sep = "," if fmt == "srt" else "."
    end = f"00:{int(minutes):02d}:{int(seconds):02d}{sep}{round((seconds % 1) * 1000):03d}"
    cue = f"00:00:00{sep}000 --> {end}\n{text.strip()}\n"
    return (f"1\n{cue}\n" if fmt == "srt" else f"WEBVTT\n\n{cue}\n").encode()


async def _stream_transcript(call: Call, send: Send, count: int, text: str, usage: dict[str, Any]) -> None:
    out = Stream(send, call)
    await out.start()
    await out.pause(call.config.ttft)
    frames = (
        (f"data: {dumps({'type': 'transcript.text.delta', 'delta': t, 'logprobs': None})}\n\n", True)
        for t in tokens(count)
    )
    await out.play(frames, call.config.chunk_gap)
    out.add(f"data: {dumps({'type': 'transcript.text.done', 'text': text, 'logprobs': None, 'usage': usage})}\n\n")
    await out.flush(more=False)


async def transcriptions(call: Call, send: Send, fault: str | None) -> None:
    """POST audio/transcriptions (multipart)."""
    await _audio_text(call, send, translate=False)


async def translations(call: Call, send: Send, fault: str | None) -> None:
    """POST audio/translations (multipart)."""
    await _audio_text(call, send, translate=True)


# ---------------------------------------------------------------------------- speech


def speech_audio(text: str) -> bytes:
    """The audio the simulator speaks for `text`: SPEECH_BYTES_PER_CHAR bytes per character."""
    size = SPEECH_BYTES_PER_CHAR * len(text)
    return (bytes(range(256)) * (size // 256 + 1))[:size]


async def speech(call: Call, send: Send, fault: str | None) -> None:
    """POST audio/speech: binary audio, or SSE with ``stream_format: "sse"``."""
    text = _text(call, "input")
    if not text:
        raise BadRequest("Invalid 'input': empty string.", "input")
    fmt = _text(call, "response_format", "mp3")
    if fmt not in AUDIO_TYPES:
        raise BadRequest(f"Invalid 'response_format': {fmt!r}.", "response_format")
    sse = call.body.get("stream_format") == "sse"
    if sse and call.model.startswith("tts-1"):
        raise BadRequest(f"stream_format 'sse' is not supported for model '{call.model}'.", "stream_format")
    audio = speech_audio(text)
    chunks = [audio[i : i + SPEECH_CHUNK_BYTES] for i in range(0, len(audio), SPEECH_CHUNK_BYTES)]
    input_tokens = words(text) + words(call.body.get("instructions"))
    call.charge(input_tokens, len(text) if sse else 0)
    if not sse:
        await _send_audio(call, send, AUDIO_TYPES[fmt], chunks)
        return
    out = Stream(send, call)
    await out.start()
    await out.pause(call.config.ttft)
    frames = (
        (f"data: {dumps({'type': 'speech.audio.delta', 'audio': base64.b64encode(c).decode()})}\n\n", True)
        for c in chunks
    )
    await out.play(frames, call.config.chunk_gap)
    usage = {"input_tokens": input_tokens, "output_tokens": len(text), "total_tokens": input_tokens + len(text)}
    out.add(f"data: {dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n")
    await out.flush(more=False)


async def _send_audio(call: Call, send: Send, content_type: str, chunks: list[bytes]) -> None:
    """Binary audio in chunks (no content-length: the server sends it chunked, like OpenAI)."""
    headers = [(b"content-type", content_type.encode()), *call.reply_headers()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await asyncio.sleep(call.config.ttft)
    for i, chunk in enumerate(chunks):
        if i and call.config.chunk_gap > 0:
            await asyncio.sleep(call.config.chunk_gap)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---------------------------------------------------------------------------- moderations

_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_IMAGE_CATEGORIES = {
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "violence",
    "violence/graphic",
}


def _moderation(text: str, with_image: bool) -> dict[str, Any]:
    flagged = "sim-flag" in text
    hit = {c: flagged and c == "violence" for c in _CATEGORIES}
    applied = {c: ["text", "image"] if with_image and c in _IMAGE_CATEGORIES else ["text"] for c in _CATEGORIES}
    return {
        "flagged": flagged,
        "categories": hit,
        "category_scores": {c: 0.99 if hit[c] else 0.0001 for c in _CATEGORIES},
        "category_applied_input_types": applied,
    }


async def moderations(call: Call, send: Send, fault: str | None) -> None:
    """POST moderations."""
    value = call.body.get("input")
    if isinstance(value, str):
        results = [_moderation(value, False)]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        results = [_moderation(v, False) for v in value]
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        text = " ".join(str(v.get("text", "")) for v in value if v.get("type") == "text")
        results = [_moderation(text, any(v.get("type") == "image_url" for v in value))]
    else:
        raise BadRequest("Invalid 'input': expected a string, a list of strings or a list of parts.", "input")
    call.charge(0, 0)
    await asyncio.sleep(call.config.ttft)
    obj = {"id": new_id("modr-"), "model": call.model or "omni-moderation-latest", "results": results}
    await send_json(send, 200, obj, call)
