"""Profile a running server with py-spy and summarise where its time went."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, out: Path, seconds: float, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start sampling `pid` (and its subprocesses) into a collapsed-stack file."""
    argv = [
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "--subprocesses",
        "-o",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def _short(frame: str) -> str:
    """`func (path/to/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    parts = m.group("file").replace("\\", "/").split("/")
    return f"{m.group('func')} ({'/'.join(parts[-2:])})"


def summarise(path: Path, top: int = 15) -> dict[str, object]:
    """Self and inclusive sample shares per function from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not raw:
            continue
        frames = [_short(f) for f in raw]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
        by_module[_area_of(raw)] += count
    share = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "self": [(name, share(c)) for name, c in own.most_common(top)],
        "inclusive": [(name, share(c)) for name, c in inclusive.most_common(top + 10)],
        "area": [(name, share(c)) for name, c in by_module.most_common(top)],
    }


_AREAS = (
    ("sinks/prometheus", "llmobs prometheus sink"),
    ("prometheus_client", "prometheus_client"),
    ("llmobs/accounting", "accounting"),
    ("llmobs/sse", "SSE decoding"),
    ("llmobs/pricing", "pricing"),
    ("genai_prices", "pricing"),
    ("llmobs/recorder", "recorder"),
    ("llmobs/request", "request parsing"),
    ("llmobs/headers", "header policy"),
    ("llmobs/proxy", "proxy"),
    ("uvicorn", "uvicorn server"),
    ("asyncio", "event loop"),
    ("json", "json"),
)


def _area_of(frames: list[str]) -> str:
    """The area a sample's leaf belongs to: the innermost frame from a known package."""
    for frame in reversed(frames):
        for needle, area in _AREAS:
            if needle in frame:
                return area
    return "other"
