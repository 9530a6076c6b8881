"""`llmobs top`: the live view, or one plain-text snapshot with `--once`."""

from __future__ import annotations

import os
import sys
import time

from llmobs.top.monitor import Monitor
from llmobs.top.render import Line, header, table
from llmobs.top.scraper import Scraper, scrape_once
from llmobs.top.view import View

TOKEN_ENV = "LLMOBS_ADMIN_TOKEN"


def run_top(url: str, token: str | None = None, interval: float = 1.0, once: bool = False) -> int:
    """Run the view (or `--once`); return the exit code. The token defaults to LLMOBS_ADMIN_TOKEN."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if once:
        return _once(url, token, interval)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("llmobs top: needs a terminal; use --once for a plain-text snapshot", file=sys.stderr)
        return 2
    import curses

    from llmobs.top.screen import show

    scraper = Scraper(url, token, interval).start()
    try:
        show(url, scraper.results, Monitor())
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a user quits; curses.wrapper has restored the terminal
    except curses.error as exc:
        print(f"llmobs top: cannot drive this terminal ({exc}); use --once", file=sys.stderr)
        return 2
    finally:
        scraper.stop()
    return 0


def _once(url: str, token: str | None, interval: float) -> int:
    """Two scrapes `interval` apart, then the header and both tables as plain text."""
    monitor = Monitor()
    for attempt in range(2):
        if attempt:
            time.sleep(interval)
        monitor.feed(scrape_once(url, token))
        if monitor.error is not None:
            print(f"llmobs top: {url}: {monitor.error}", file=sys.stderr)
            return 1
    snap = monitor.snapshot
    if snap is None:  # not after two good scrapes; this keeps the types honest
        return 1
    lines: list[Line] = header(url, monitor)
    lines += [*table(snap, View(by="model")), Line(""), *table(snap, View(by="tenant"))]
    print("\n".join(line.text for line in lines))
    return 0
