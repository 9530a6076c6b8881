"""`llmobs top`: the figures from hand-written scrapes, then the real thing in a real terminal (tmux)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmobs.telemetry.sinks.prometheus import PrometheusSink
from llmobs.top.samples import read_metrics


def test_read_metrics_agrees_with_prometheus_client_on_hostile_label_values() -> None:
    # Label values come from clients: quotes, backslashes, newlines, braces, and \x85 or \u2028,
    # at which str.splitlines would cut a line that the exposition does not escape.
    registry = CollectorRegistry()
    sink = PrometheusSink(registry)
    for model in ('a"b\\c\nd', "}{,= 1", "caf\u00e9\x85x\u2028y", ""):
        sink.requests.labels("chat_completions", model, "t", "true", "200", "completed").inc(3)
        sink.duration.labels("chat_completions", model, "true").observe(0.3)
    text = generate_latest(registry).decode()
    expected = [
        (s.name, dict(s.labels), s.value, family.type)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    assert [(s.name, s.labels, s.value, s.kind) for s in read_metrics(text).samples] == expected


@pytest.mark.parametrize("text", ["<html><body>Grafana</body></html>", 'x{a="b} 1', "x 1 2 3"])
def test_read_metrics_rejects_what_is_not_the_text_format(text: str) -> None:
    with pytest.raises(ValueError, match="line 1"):
        read_metrics(text)
