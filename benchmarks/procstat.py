"""CPU time and resident memory of a process and its descendants, read from /proc."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def tree(root: int) -> list[int]:
    """`root` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of the given processes (not of reaped children)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident set size summed over the processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    return total


class Watch:
    """A process tree whose descendants are looked up once (servers fork at start-up only)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.pids = tree(root)

    def refresh(self) -> None:
        self.pids = tree(self.root)

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def rss(self) -> int:
        return rss_bytes(self.pids)


class PeakSampler:
    """Samples the RSS of some trees every `interval` seconds in a thread; keeps the peaks."""

    def __init__(self, watches: dict[str, Watch], interval: float = 0.05) -> None:
        self.watches = watches
        self.interval = interval
        self.peak: dict[str, int] = {name: w.rss() for name, w in watches.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for name, w in self.watches.items():
                self.peak[name] = max(self.peak[name], w.rss())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, w in self.watches.items():
            self.peak[name] = max(self.peak[name], w.rss())
