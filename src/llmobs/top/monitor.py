"""Successive scrapes in, the latest snapshot and scrape status out; no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from llmobs.top.samples import Samples, read_metrics
from llmobs.top.stats import Snapshot, snapshot
from llmobs.top.window import window


@dataclass(frozen=True)
class Scrape:
    """One scrape's outcome: the page's text, or why there is none. `at` is monotonic seconds,
    `clock` the wall-clock time to show."""

    at: float
    clock: str
    text: str | None = None
    error: str | None = None


class Monitor:
    """Keeps the last good scrape, so that a failed one leaves the figures in place and the next
    good one measures its window from the last good one."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.error: str | None = None
        self.refreshed: str | None = None  # wall-clock time of the last good scrape
        self.failed: str | None = None  # wall-clock time of the last failed one
        self._last: tuple[Samples, float] | None = None

    def feed(self, scrape: Scrape) -> None:
        """Take one scrape's outcome."""
        samples = self._parse(scrape)
        if samples is None:
            self.failed = scrape.clock
            return
        win = None
        if self._last is not None and scrape.at > self._last[1]:
            win = window(self._last[0], samples, scrape.at - self._last[1])
        self.snapshot = snapshot(samples, win)
        self._last = (samples, scrape.at)
        self.error = None
        self.refreshed = scrape.clock

    def _parse(self, scrape: Scrape) -> Samples | None:
        if scrape.text is None:
            self.error = scrape.error or "scrape failed"
            return None
        try:
            samples = read_metrics(scrape.text)
        except (ValueError, IndexError, KeyError) as exc:  # what the exposition parser raises on other pages
            self.error = f"not a Prometheus metrics page: {exc}"
            return None
        if not any(s.name.startswith("llmobs_") for s in samples.samples):
            self.error = "no llmobs metrics on this page: is this an llmobs proxy's /metrics?"
            return None
        return samples

    @property
    def status(self) -> str:
        """`ok`, `waiting for the first scrape`, or what went wrong and when."""
        if self.error is not None:
            return f"FAILED at {self.failed}: {self.error}"
        if self.snapshot is None:
            return "waiting for the first scrape"
        if self.snapshot.seconds is None:
            return "ok; rates after the next scrape"
        if self.snapshot.reset:
            return f"ok; counters went back (proxy restarted), window {self.snapshot.seconds:.1f}s"
        return f"ok, window {self.snapshot.seconds:.1f}s"
