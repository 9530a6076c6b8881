"""Scrape on a timer, off the terminal's thread, so that keys stay quick while a scrape waits."""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime

from llmobs.top.fetch import ScrapeError, fetch
from llmobs.top.monitor import Scrape


def scrape_once(url: str, token: str | None) -> Scrape:
    """Fetch once; the scrape is dated at the middle of the request, nearest to when the page was made."""
    started = time.monotonic()
    try:
        text, error = fetch(url, token), None
    except ScrapeError as exc:
        text, error = None, str(exc)
    at = (started + time.monotonic()) / 2
    return Scrape(at=at, clock=datetime.now().strftime("%H:%M:%S"), text=text, error=error)


class Scraper:
    """Puts a Scrape on `results` every `interval` seconds from a daemon thread until stopped."""

    def __init__(self, url: str, token: str | None, interval: float) -> None:
        self.url = url
        self.token = token
        self.interval = interval
        self.results: queue.Queue[Scrape] = queue.Queue()
        self._stop = threading.Event()
        # A daemon: a scrape stuck in its timeout must not hold up `q`.
        self._thread = threading.Thread(target=self._run, name="llmobs-top-scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.results.put(scrape_once(self.url, self.token))
            self._stop.wait(max(0.0, started + self.interval - time.monotonic()))
