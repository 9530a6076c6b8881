"""Panels about tool use and answer quality: tool calls by tool, tools offered, issues judged without a model."""

from __future__ import annotations

from llmobs.apis.quality import NATURAL_ENDS
from llmobs.apis.table import ENDPOINTS
from llmobs.dashboards import metrics as mt
from llmobs.dashboards.measures import RATIO_STEPS, percentiles
from llmobs.dashboards.panels import Column, Panel, grid, legend, query, ts
from llmobs.dashboards.promql import increase_sum, rate_sum, ratio_on, share

Size = tuple[int, int]
# What is judged (llmobs.apis.quality): answers of these endpoints that ended on their own.
JUDGED = 'endpoint=~"{}"'.format("|".join(sorted({e.name for e in ENDPOINTS.values() if e.accumulator.judges})))
NATURAL_END = 'reason=~"{}"'.format("|".join(sorted(NATURAL_ENDS)))
# Bucket bounds as prometheus_client exposes them: as floats (`0.0`, not `0`).
EVERY_REQUEST, NO_TOOLS = 'le="+Inf"', 'le="0.0"'
ISSUES = (
    "invalid_json, JSON that was asked for (or a tool call's arguments) that does not parse; empty_answer, no "
    "text, tool call or refusal at all; refusal, the model declined (OpenAI's refusal, Anthropic's stop_reason)"
)


def judged_answers(by: str = "") -> str:
    """Answers per second that the quality signals judge: chat, completions, Responses and
    Messages choices that ended on their own (a cut answer is told by its finish reason)."""
    return rate_sum(mt.FINISH_REASONS, by, JUDGED, NATURAL_END)


def offered_share(by: str = "") -> str:
    """Share of requests (whose body was read) that offered at least one tool definition."""
    every = rate_sum(mt.REQUEST_TOOLS, by, EVERY_REQUEST)
    return f"({every} - {rate_sum(mt.REQUEST_TOOLS, by, NO_TOOLS)}) / {every}"


def tool_calls(size: Size = (8, 8)) -> Panel:
    """Tool calls per second by tool name."""
    return ts(
        "Tool calls / s by tool",
        "Tool calls the model asked for per second, by tool name: chat tool_calls, Responses function "
        "calls, Anthropic tool_use blocks. One per call, so an answer calling two tools counts two; names "
        "past the label budget show as 'other'.",
        "cps",
        query(rate_sum(mt.TOOL_CALLS, "tool"), "{{tool}}"),
        stacked=True,
        size=size,
    )


def top_tools(size: Size = (8, 8)) -> Panel:
    """Each tool's calls over the range and its share of all calls, most called first."""
    calls = increase_sum(mt.TOOL_CALLS, "tool")
    return grid(
        "Top tools (range)",
        "Tool calls the model asked for over the dashboard range, one row per tool name, most called first, "
        "with each tool's share of all the calls in the selection.",
        "short",
        {
            "Calls": Column(calls),
            "Share of calls": Column(ratio_on(calls, increase_sum(mt.TOOL_CALLS)), "percentunit"),
        },
        "tool",
        size=size,
    )


def tools_offered(size: Size = (8, 8)) -> Panel:
    """Tool definitions per request, median and 95th percentile."""
    return ts(
        "Tools offered per request",
        "Median and 95th percentile number of tool definitions a request offered the model (0 when none), "
        "over chat, Responses and Anthropic requests whose body was read. Interpolated within the buckets "
        "0, 1, 2, 4, 8 ... 128: between two bounds it is an estimate.",
        "short",
        *percentiles(mt.REQUEST_TOOLS, (0.5, 0.95)),
        size=size,
    )


def offering_tools(size: Size = (8, 8)) -> Panel:
    """Share of requests that offered any tool."""
    return ts(
        "Requests offering tools",
        "Share of the chat, Responses and Anthropic requests whose body was read that offered the model at "
        "least one tool definition: how much of the traffic lets the model act.",
        "percentunit",
        query(offered_share(), "offered a tool"),
        size=size,
    )


def quality_issues(size: Size = (12, 8)) -> Panel:
    """Quality issues per second by issue."""
    return ts(
        "Quality issues / s by issue",
        f"Answers judged without a model, per second, by the issue found: {ISSUES}. Only answers that ended "
        "on their own are judged: cheap signals, not grades.",
        "cps",
        query(rate_sum(mt.QUALITY_ISSUES, "issue"), "{{issue}}"),
        stacked=True,
        size=size,
    )


def issue_share(by: str, size: Size = (12, 8)) -> Panel:
    """Issues over the answers judged, per `by`; 0 where a `by` value has answers and no issue."""
    return ts(
        f"Answers with a quality issue by {by}",
        "Quality issues as a share of the answers that are judged: chat, completions, Responses and Messages "
        "choices that ended on their own (finish reason stop, tool_calls, end_turn, tool_use, refusal ...); 0 "
        f"where there were such answers and no issue. An answer with two issues counts twice. Issues: {ISSUES}.",
        "percentunit",
        query(share(rate_sum(mt.QUALITY_ISSUES, by), judged_answers(by)), legend(by)),
        thresholds=RATIO_STEPS,
        size=size,
    )


def issue_ratio(size: Size = (8, 8)) -> Panel:
    """Each issue's share of each model's judged answers."""
    return ts(
        "Quality issue ratio by issue and model",
        "Each quality issue as a share of a model's judged answers (its chat, completions, Responses and "
        f"Messages choices that ended on their own). Issues: {ISSUES}. A rise after a prompt or model change "
        "is worth a look.",
        "percentunit",
        query(
            ratio_on(rate_sum(mt.QUALITY_ISSUES, "model, issue"), judged_answers("model"), "model"),
            "{{model}} {{issue}}",
        ),
        thresholds=RATIO_STEPS,
        size=size,
    )


def model_row() -> list[Panel]:
    """The model drill-down's row: calls by tool, tools offered, issues and their share."""
    return [
        tool_calls(),
        tools_offered(),
        offering_tools(),
        quality_issues(),
        issue_share("model"),
    ]


def overview_row() -> list[Panel]:
    """The overview's compact row: calls by tool, the top tools, the issue ratio by model."""
    return [tool_calls(), top_tools(), issue_ratio()]
