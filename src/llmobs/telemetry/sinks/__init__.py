"""Sinks: where finished observations are recorded, behind one protocol.

A sink raises when it fails; the Recorder alone catches, counts the failure under the
sink's `component` in llmobs_telemetry_errors_total, and re-raises under tests.
"""

from __future__ import annotations

from typing import Protocol

from llmobs.records import Observation


class Sink(Protocol):
    """Records finished (and priced) observations."""

    @property
    def component(self) -> str:
        """The `component` label of this sink's failures."""
        ...

    def record(self, obs: Observation, span: object = None) -> None:
        """Record one observation; `span` is its span handle when tracing, else None."""
        ...
