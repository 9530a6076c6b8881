"""Metric names and label values: public API, defined once for the sinks and the dashboards."""

from __future__ import annotations

PREFIX = "llmobs"

# Prometheus metric names (counters without the `_total` suffix, as prometheus_client wants).
REQUESTS = "llmobs_requests"
REQUESTS_IN_FLIGHT = "llmobs_requests_in_flight"
REQUEST_DURATION = "llmobs_request_duration_seconds"
TIME_TO_FIRST_TOKEN = "llmobs_time_to_first_token_seconds"
TIME_PER_OUTPUT_TOKEN = "llmobs_time_per_output_token_seconds"
REASONING_DURATION = "llmobs_reasoning_duration_seconds"
TOKENS = "llmobs_tokens"
ESTIMATED_TOKENS = "llmobs_estimated_tokens"
REQUEST_TOKENS = "llmobs_request_tokens"
FINISH_REASONS = "llmobs_finish_reasons"
COST_USD = "llmobs_cost_usd"
UNPRICED_REQUESTS = "llmobs_unpriced_requests"
USAGE_MISSING = "llmobs_usage_missing"
PROXY_OVERHEAD = "llmobs_proxy_overhead_seconds"
BUILD_INFO = "llmobs_build_info"
UPSTREAM_INFO = "llmobs_upstream_info"
AUDIO_SECONDS = "llmobs_audio_seconds"
SESSIONS_OPEN = "llmobs_websocket_sessions_open"
SESSIONS = "llmobs_websocket_sessions"
SESSION_DURATION = "llmobs_websocket_session_duration_seconds"
FRAMES = "llmobs_websocket_frames"
FRAME_BYTES = "llmobs_websocket_bytes"
IMAGES = "llmobs_images"
TELEMETRY_ERRORS = "llmobs_telemetry_errors"
UNREAD_RESPONSES = "llmobs_unread_responses"
LABEL_OVERFLOW = "llmobs_label_overflow"
TOOL_CALLS = "llmobs_tool_calls"
REQUEST_TOOLS = "llmobs_request_tools"
QUALITY_ISSUES = "llmobs_quality_issues"
RATELIMIT_LIMIT = "llmobs_ratelimit_limit"
RATELIMIT_REMAINING = "llmobs_ratelimit_remaining"
RATELIMIT_RESET = "llmobs_ratelimit_reset_seconds"
BUDGET_USD = "llmobs_budget_usd"


def total(name: str) -> str:
    """The exposed series name of a counter."""
    return name + "_total"


ENDPOINTS = (
    "chat_completions",
    "completions",
    "embeddings",
    "responses",
    "messages",
    "messages_count_tokens",
    "messages_batches",
    "realtime",
    "images_generations",
    "images_edits",
    "audio_transcriptions",
    "audio_translations",
    "audio_speech",
    "moderations",
    "other",
)
TOKEN_TYPES = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "reasoning",
    "input_audio",
    "input_image",
    "output_audio",
    "output_image",
)
BUDGET_PERIODS = ("day", "month")  # the `period` of llmobs_budget_usd
FINISH_REASON_VALUES = ("stop", "length", "tool_calls", "content_filter", "function_call")
QUALITY_ISSUE_VALUES = ("invalid_json", "empty_answer", "refusal")
OTHER = "other"  # the value a bounded label takes once its budget is spent

# Histogram buckets in seconds: they reach minutes, since reasoning models are slow.
# fmt: off
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0,
)
# Time to first token: fine where users feel it (under a few seconds), so that p95 is not read off
# 1 -> 2.5 -> 5 s steps; still reaching minutes for reasoning models.
TTFT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5,
    3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0,
)
TIME_PER_TOKEN_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SESSION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
# fmt: on
TOKEN_BUCKETS = tuple(float(4**i) for i in range(13))  # 1 .. 16,777,216
TOOL_BUCKETS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)  # tool definitions per request
