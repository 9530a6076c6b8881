"""The curses part: draw the lines, read keys, follow resizes; curses.wrapper restores the terminal."""

from __future__ import annotations

import curses
import os
import queue

from llmobs.top.monitor import Monitor, Scrape
from llmobs.top.render import Line, screen_lines
from llmobs.top.view import View

POLL_MS = 100  # how long a key read waits, so new scrapes show promptly
KEY_NAMES = {curses.KEY_LEFT: "left", curses.KEY_RIGHT: "right", ord("\t"): "tab"}


def show(url: str, results: queue.Queue[Scrape], monitor: Monitor) -> None:
    """Run the view until `q`; Ctrl-C raises KeyboardInterrupt after the terminal is restored."""
    # Size from the terminal, never from LINES/COLUMNS: a shell exports those when it inherited
    # them, and ncurses would then keep the start-up size through every resize.
    for name in ("LINES", "COLUMNS"):
        os.environ.pop(name, None)
    curses.wrapper(_loop, url, results, monitor)


def _loop(scr: curses.window, url: str, results: queue.Queue[Scrape], monitor: Monitor) -> None:
    try:
        curses.curs_set(0)
    except curses.error:  # some terminals cannot hide the cursor; nothing else depends on it
        pass
    scr.timeout(POLL_MS)
    view: View | None = View()
    dirty = True
    while view is not None:
        while not results.empty():
            monitor.feed(results.get_nowait())
            dirty = True
        if dirty:
            draw(scr, screen_lines(url, monitor, view))
            dirty = False
        key = scr.getch()
        if key == -1:
            continue
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
            scr.clear()
            dirty = True
            continue
        changed = view.on_key(KEY_NAMES.get(key) or _char(key))
        dirty = changed != view
        view = changed


def draw(scr: curses.window, lines: list[Line]) -> None:
    """Body lines from the top, the help line on the last row; whatever does not fit is cut off."""
    height, width = scr.getmaxyx()
    scr.erase()
    *body, help_line = lines
    for y, line in enumerate(body[: height - 1]):
        _put(scr, y, line, width)
    _put(scr, height - 1, help_line, width)
    scr.refresh()


STYLES = {"header": curses.A_BOLD, "error": curses.A_BOLD | curses.A_REVERSE, "title": curses.A_REVERSE}


def _put(scr: curses.window, y: int, line: Line, width: int) -> None:
    text = line.text.ljust(width) if line.style == "title" else line.text
    text = text.encode(scr.encoding, "replace").decode(scr.encoding)[:width]
    try:
        scr.addnstr(y, 0, text, width, STYLES.get(line.style, curses.A_NORMAL))
    except curses.error:  # writing the bottom-right cell moves the cursor off the screen; the text is there
        pass


def _char(key: int) -> str:
    return chr(key) if 0 <= key < 256 else ""
