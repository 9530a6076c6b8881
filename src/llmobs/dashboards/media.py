"""Panels about images, audio and moderations: images and audio seconds returned, media token shares."""

from __future__ import annotations

from llmobs.dashboards import metrics as mt
from llmobs.dashboards.measures import MEDIA, MEDIA_PARTS, reported_share, token_count
from llmobs.dashboards.panels import AUDIO_S, IMAGES_S, Column, Panel, grid, legend, query, ts
from llmobs.dashboards.promql import increase_sum, rate_sum

Size = tuple[int, int]


def images(by: str, size: Size = (8, 8)) -> Panel:
    """Images returned per second, split by `by`."""
    return ts(
        f"Images / s by {by}",
        "Images the upstream returned per second (generations and edits; n images per request count n), "
        "whether or not the model also reports tokens.",
        IMAGES_S,
        query(rate_sum(mt.IMAGES, by), legend(by)),
        stacked=True,
        size=size,
    )


def audio(by: str, size: Size = (8, 8)) -> Panel:
    """Seconds of audio per second, split by `by`."""
    return ts(
        f"Audio seconds / s by {by}",
        "Seconds of audio the upstream reported per second of wall-clock time: the billed seconds of "
        "whisper-1 transcriptions and translation durations. Token-billed audio models are in the token panels.",
        AUDIO_S,
        query(rate_sum(mt.AUDIO_SECONDS, by), legend(by)),
        stacked=True,
        size=size,
    )


def media_requests(size: Size = (8, 8)) -> Panel:
    """Requests per second to the media endpoints, which include those that report no quantity."""
    return ts(
        "Media requests / s by endpoint",
        "Requests per second to the image, audio and moderation endpoints, every outcome included. Speech "
        "and moderations report no images or audio seconds, so they show only here.",
        "reqps",
        query(rate_sum(mt.REQUESTS, "endpoint", MEDIA), "{{endpoint}}"),
        stacked=True,
        size=size,
    )


def token_shares(size: Size = (8, 8)) -> Panel:
    """input_audio / input, input_image / input, output_audio / output, output_image / output, per model.

    Per model, so that a share is taken only over models that report that kind: over all
    traffic, text models' input would dilute it.
    """
    return ts(
        "Audio and image share of tokens by model",
        "Audio and image tokens as a share of each model's input or output tokens, only for models whose "
        "responses report them (Realtime, GPT image, transcribe). They are part of input and output, never added.",
        "percentunit",
        *(
            query(reported_share(part, whole, "model"), f"{{{{model}}}} {part} / {whole}")
            for part, whole in MEDIA_PARTS
        ),
        size=size,
    )


def per_tenant(size: Size = (24, 6)) -> Panel:
    """Images, audio seconds and media tokens per tenant over the range."""
    columns = {
        "Images": Column(increase_sum(mt.IMAGES, "tenant")),
        "Audio seconds": Column(increase_sum(mt.AUDIO_SECONDS, "tenant"), "s"),
        "Audio input tokens": Column(token_count("input_audio", "tenant")),
        "Audio output tokens": Column(token_count("output_audio", "tenant")),
        "Image input tokens": Column(token_count("input_image", "tenant")),
        "Image output tokens": Column(token_count("output_image", "tenant")),
    }
    return grid(
        "Media per tenant (range)",
        "Images returned, seconds of audio and the audio and image tokens reported, per tenant over the "
        "range, most images first. Media tokens are part of the input and output columns elsewhere.",
        "short",
        columns,
        "tenant",
        size=size,
    )
