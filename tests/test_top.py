"""`llmobs top`: the figures from hand-written scrapes, then the real thing in a real terminal (tmux)."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import llmobs
from conftest import Proxied, sdk_client
from llmobs.dev.harness import ServerThread
from llmobs.telemetry.sinks.prometheus import PrometheusSink
from llmobs.top.columns import BY_KEY, sort_rows
from llmobs.top.fetch import ScrapeError, fetch, metrics_url
from llmobs.top.monitor import Monitor, Scrape
from llmobs.top.render import screen_lines, table
from llmobs.top.samples import read_metrics
from llmobs.top.stats import Row, Snapshot, snapshot
from llmobs.top.view import View
from llmobs.top.window import window
from servers import free_port

T = TypeVar("T")
SRC = str(Path(llmobs.__file__).resolve().parents[1])  # the llmobs this test imports, for the subprocesses

# ---------------------------------------------------------------- hand-written scrapes


def counter(name: str, *series: tuple[str, float]) -> str:
    return f"# TYPE {name} counter\n" + "".join(f"{name}{{{labels}}} {value}\n" for labels, value in series)


def gauge(name: str, *series: tuple[str, float]) -> str:
    return f"# TYPE {name} gauge\n" + "".join(f"{name}{{{labels}}} {value}\n" for labels, value in series)


def histogram(name: str, *series: tuple[str, dict[float, float]]) -> str:
    """Cumulative bucket counts per `le`; the +Inf bucket is the count."""
    lines = [f"# TYPE {name} histogram"]
    for labels, buckets in series:
        for le, count in buckets.items():
            lines.append(f'{name}_bucket{{{labels},le="{"+Inf" if math.isinf(le) else le}"}} {count}')
        lines.append(f"{name}_count{{{labels}}} {buckets[math.inf]}")
    return "\n".join(lines) + "\n"


INF = math.inf
GPT = 'endpoint="chat_completions",model="gpt-4o"'
EMB = 'endpoint="embeddings",model="emb"'


def page(
    ok: float = 100,
    failed: float = 10,
    emb: float = 50,
    tokens: tuple[float, float, float, float] = (1000, 500, 400, 100),
    cost: float = 1.0,
    duration: dict[float, float] | None = None,
    finish: tuple[float, float] = (80, 20),
    extra: str = "",
) -> str:
    """A /metrics page: gpt-4o (tenant team-a) with `ok` completed and `failed` 429 requests,
    emb (tenant team-b) with `emb` requests; tokens are (input, output, cache_read, reasoning)."""
    input_, output, cache_read, reasoning = tokens
    return (
        counter(
            "llmobs_requests_total",
            (f'{GPT},tenant="team-a",stream="true",status_code="200",outcome="completed"', ok),
            (f'{GPT},tenant="team-a",stream="false",status_code="429",outcome="upstream_error"', failed),
            (f'{EMB},tenant="team-b",stream="false",status_code="200",outcome="completed"', emb),
        )
        + gauge("llmobs_requests_in_flight", ('endpoint="chat_completions"', 2), ('endpoint="embeddings"', 0))
        + histogram(
            "llmobs_request_duration_seconds",
            (f'{GPT},stream="true"', duration or {0.1: 0, 1.0: 0, 10.0: 110, INF: 110}),
        )
        + counter(
            "llmobs_tokens_total",
            (f'{GPT},tenant="team-a",type="input"', input_),
            (f'{GPT},tenant="team-a",type="output"', output),
            (f'{GPT},tenant="team-a",type="cache_read"', cache_read),
            (f'{GPT},tenant="team-a",type="reasoning"', reasoning),
            (f'{EMB},tenant="team-b",type="input"', 300),
        )
        + counter(
            "llmobs_finish_reasons_total",
            (f'{GPT},reason="stop"', finish[0]),
            (f'{GPT},reason="length"', finish[1]),
        )
        + counter("llmobs_cost_usd_total", ('model="gpt-4o",tenant="team-a"', cost))
        + extra
    )


BEFORE = page()
# Two seconds later: gpt-4o got 10 completed and 10 failed requests, all fast; emb got none.
AFTER = page(
    ok=110,
    failed=20,
    tokens=(1200, 600, 500, 150),
    cost=1.01,
    duration={0.1: 20, 1.0: 20, 10.0: 130, INF: 130},
    finish=(95, 25),
)


def model_row(before: str | None, after: str, name: str = "gpt-4o", seconds: float = 2.0) -> Row:
    win = window(read_metrics(before), read_metrics(after), seconds) if before is not None else None
    return next(row for row in snapshot(read_metrics(after), win).by_model if row.name == name)


# ---------------------------------------------------------------- the figures


def test_samples_keep_their_family_type() -> None:
    kinds = {s.name: s.kind for s in read_metrics(BEFORE).samples}
    assert kinds["llmobs_requests_total"] == "counter"
    assert kinds["llmobs_requests_in_flight"] == "gauge"
    assert kinds["llmobs_request_duration_seconds_bucket"] == "histogram"


def test_read_metrics_agrees_with_prometheus_client_on_hostile_label_values() -> None:
    # Label values come from clients: quotes, backslashes, newlines, braces, and \x85 or \u2028,
    # at which str.splitlines would cut a line that the exposition does not escape.
    registry = CollectorRegistry()
    sink = PrometheusSink(registry)
    for model in ('a"b\\c\nd', "}{,= 1", "caf\u00e9\x85x\u2028y", ""):
        sink.metrics.requests.labels("chat_completions", model, "t", "true", "200", "completed", "").inc(3)
        sink.metrics.duration.labels("chat_completions", model, "true").observe(0.3)
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


def test_rates_are_over_the_window_between_two_scrapes() -> None:
    row = model_row(BEFORE, AFTER)
    assert row.requests == 130  # since the proxy started
    assert row.rps == pytest.approx(10.0)  # 20 requests in 2 s
    assert row.error_rate == pytest.approx(0.5)  # 10 of the 20 were not `completed`
    assert row.usd_per_hour == pytest.approx(0.01 / 2 * 3600)
    assert row.finish == (("stop", 0.75), ("length", 0.25))


def test_tokens_per_second_count_input_and_output_only() -> None:
    # cache_read is part of input and reasoning part of output: (200 + 100) / 2 s, not (200 + 100 + 100 + 50) / 2.
    assert model_row(BEFORE, AFTER).tokens_per_s == pytest.approx(150.0)


def test_quantiles_are_over_the_window_not_since_start() -> None:
    row = model_row(BEFORE, AFTER)
    # The window's 20 requests all took under 0.1 s; since start, 110 of 130 took up to 10 s.
    assert row.p50 == pytest.approx(0.05)
    assert row.p95 == pytest.approx(0.095)
    assert row.ttft_p50 is None  # no TTFT observed at all


def test_empty_window_has_zero_rates_and_no_quantiles_or_error_rate() -> None:
    row = model_row(AFTER, AFTER)
    assert (row.rps, row.tokens_per_s, row.usd_per_hour) == (0.0, 0.0, 0.0)
    assert (row.error_rate, row.p50, row.p95) == (None, None, None)
    assert row.finish == ()


def test_single_scrape_has_totals_but_no_rates() -> None:
    row = model_row(None, AFTER)
    assert row.requests == 130
    assert (row.rps, row.error_rate, row.tokens_per_s, row.p95) == (None, None, None, None)


def test_counter_that_went_back_restarted_from_zero() -> None:
    restarted = page(ok=3, failed=1, tokens=(30, 20, 0, 0), cost=0.002, finish=(4, 0))
    win = window(read_metrics(AFTER), read_metrics(restarted), 2.0)
    assert win.reset
    row = model_row(AFTER, restarted)
    assert row.rps == pytest.approx(2.0)  # 3 + 1 new requests, not 4 - 130
    assert row.tokens_per_s == pytest.approx(25.0)
    assert row.usd_per_hour == pytest.approx(0.002 / 2 * 3600)
    assert not window(read_metrics(BEFORE), read_metrics(AFTER), 2.0).reset


def test_histogram_restarts_as_a_whole_not_bucket_by_bucket() -> None:
    before = page(duration={0.1: 4, 1.0: 4, 10.0: 9, INF: 9})
    # Restarted, then 6 fast requests: the le=0.1 bucket went up (4 -> 6) although it restarted too.
    after = page(duration={0.1: 6, 1.0: 6, 10.0: 6, INF: 6})
    row = model_row(before, after)
    assert row.p50 == pytest.approx(0.05) and row.p95 == pytest.approx(0.095)


def test_series_new_in_the_window_counts_from_zero() -> None:
    # llmobs creates a series at its first observation: a new model's first requests count.
    new = counter(
        "llmobs_requests_total",
        ('endpoint="chat_completions",model="gpt-new",tenant="team-c",stream="false",'
         'status_code="200",outcome="completed"', 4),
    )  # fmt: skip
    assert model_row(BEFORE, page(extra=new), name="gpt-new").rps == pytest.approx(2.0)


def test_unknown_is_none_not_zero() -> None:
    emb = model_row(BEFORE, AFTER, name="emb")
    assert emb.usd_per_hour is None  # never priced
    assert emb.tokens_per_s == 0.0  # usage was reported, just none in the window
    assert emb.error_rate is None and emb.p50 is None


def test_tenant_rows_carry_only_what_has_a_tenant_label() -> None:
    snap = snapshot(read_metrics(AFTER), window(read_metrics(BEFORE), read_metrics(AFTER), 2.0))
    assert [row.name for row in snap.by_tenant] == ["team-a", "team-b"]  # no "" row from per-model metrics
    team_a = snap.by_tenant[0]
    assert team_a.rps == pytest.approx(10.0) and team_a.tokens_per_s == pytest.approx(150.0)
    assert team_a.p50 is None and team_a.finish == ()


def test_totals_and_in_flight() -> None:
    snap = snapshot(read_metrics(AFTER), window(read_metrics(BEFORE), read_metrics(AFTER), 2.0))
    assert snap.total.requests == 180 and snap.total.rps == pytest.approx(10.0)
    assert snap.total.tokens_per_s == pytest.approx(150.0) and snap.total.p50 == pytest.approx(0.05)
    assert snap.in_flight == {"chat_completions": 2.0, "embeddings": 0.0}


# ---------------------------------------------------------------- sorting, keys, text


def rows(*values: tuple[str, float | None]) -> tuple[Row, ...]:
    return tuple(Row(name, 0.0, rps=rps) for name, rps in values)


def test_sort_puts_unknown_last_either_way_and_breaks_ties_by_name() -> None:
    some = rows(("b", 1.0), ("a", None), ("c", 5.0), ("d", 1.0))
    assert [r.name for r in sort_rows(some, BY_KEY["rps"], descending=True)] == ["c", "b", "d", "a"]
    assert [r.name for r in sort_rows(some, BY_KEY["rps"], descending=False)] == ["b", "d", "c", "a"]
    assert [r.name for r in sort_rows(some, BY_KEY["name"], descending=False)] == ["a", "b", "c", "d"]


def test_keys_change_the_view() -> None:
    view = View()
    assert (view.by, view.sort, view.descending) == ("model", "rps", True)
    assert view.on_key(">") == View(sort="error_rate")
    assert view.on_key("right") == View(sort="error_rate")
    assert view.on_key("<") == View(sort="requests")
    assert view.on_key("<").on_key("<") == View(sort="name", descending=False)  # type: ignore[union-attr]
    assert view.on_key("r") == View(descending=False)
    assert view.on_key("t") == View(by="tenant") and view.on_key("tab") == View(by="tenant")
    assert view.on_key("x") == view
    assert view.on_key("q") is None and view.on_key("Q") is None


def test_tenant_view_falls_back_from_a_per_model_sort_column() -> None:
    assert View(sort="p95").on_key("t") == View(by="tenant", sort="rps")
    assert View(sort="tokens_per_s", descending=False).on_key("t") == View(
        by="tenant", sort="tokens_per_s", descending=False
    )
    last = View(by="tenant", sort="usd_per_hour").on_key(">")
    assert last == View(by="tenant", sort="name", descending=False)  # wraps, skipping the per-model columns


def test_names_from_clients_cannot_drive_the_terminal() -> None:
    hostile, long, unnamed = Row("evil\x1b[2J\x1b]0;pwned\x07", 1.0), Row("m" * 50, 2.0), Row("", 3.0)
    snap = Snapshot(Row("all", 6.0), {}, by_model=(hostile, long, unnamed), by_tenant=())
    text = "\n".join(line.text for line in table(snap, View()))
    assert "\x1b" not in text and "\x07" not in text and "evil?[2J?]0;pwned?" in text
    assert "m" * 31 + "~" in text and "m" * 32 not in text
    assert "(none)" in text  # a request that named no model


def test_tenant_table_has_no_per_model_columns() -> None:
    snap = snapshot(read_metrics(AFTER), window(read_metrics(BEFORE), read_metrics(AFTER), 2.0))
    titles = table(snap, View(by="tenant"))[1].text.split()
    assert titles == ["TENANT", "REQS", "*REQ/S", "ERR%", "TOK/S", "$/H"]
    assert table(snap, View())[1].text.split()[-1] == "FINISH"


def test_monitor_keeps_the_figures_through_a_failed_scrape() -> None:
    monitor = Monitor()
    monitor.feed(Scrape(at=10.0, clock="12:00:00", text=BEFORE))
    assert monitor.status == "ok; rates after the next scrape"
    monitor.feed(Scrape(at=11.0, clock="12:00:01", error="HTTP 401: wrong admin token (--token or LLMOBS_ADMIN_TOKEN)"))
    assert monitor.snapshot is not None and monitor.snapshot.total.requests == 160
    lines = [line.text for line in screen_lines("http://x/metrics", monitor, View())]
    assert "refreshed 12:00:00  FAILED at 12:00:01: HTTP 401: wrong admin token" in lines[0]
    assert any(line.startswith("gpt-4o") for line in lines)
    monitor.feed(Scrape(at=12.0, clock="12:00:02", text=AFTER))
    assert monitor.error is None and monitor.snapshot.seconds == 2.0  # from the last good scrape
    assert monitor.status == "ok, window 2.0s"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<html><body>Grafana</body></html>", "not a Prometheus metrics page"),
        ("# TYPE up gauge\nup 1\n", "no llmobs metrics on this page"),
    ],
)
def test_monitor_rejects_pages_that_are_not_llmobs_metrics(text: str, error: str) -> None:
    monitor = Monitor()
    monitor.feed(Scrape(at=1.0, clock="12:00:00", text=text))
    assert monitor.snapshot is None and monitor.error is not None and monitor.error.startswith(error)


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://127.0.0.1:4000/metrics", "http://127.0.0.1:4000/metrics"),
        ("http://127.0.0.1:4000", "http://127.0.0.1:4000/metrics"),
        ("http://127.0.0.1:4000/", "http://127.0.0.1:4000/metrics"),
        ("127.0.0.1:9100", "http://127.0.0.1:9100/metrics"),
        ("https://obs.example/llmobs/", "https://obs.example/llmobs/metrics"),
    ],
)
def test_metrics_url_accepts_a_base_url(given: str, url: str) -> None:
    assert metrics_url(given) == url


def test_metrics_url_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="must be an http"):
        metrics_url("ftp://host/metrics")


def test_fetch_says_why_it_failed_and_never_shows_the_token(upstream: ServerThread, make_proxy: Any) -> None:
    with pytest.raises(ScrapeError, match="unreachable: .*Connection refused"):
        fetch(f"http://127.0.0.1:{free_port()}/metrics", timeout=1)
    locked = make_proxy(upstream.url + "/v1", admin_token="right-token-123")
    with pytest.raises(ScrapeError, match="HTTP 401: an admin token is required") as missing:
        fetch(locked.url + "/metrics")
    with pytest.raises(ScrapeError, match="HTTP 401: wrong admin token") as wrong:
        fetch(locked.url + "/metrics", token="wrong-token-456")
    assert "wrong-token-456" not in str(wrong.value) and "right-token" not in str(missing.value)
    assert "llmobs_build_info" in fetch(locked.url + "/metrics", token="right-token-123")


# ---------------------------------------------------------------- the command, for scripts


def llmobs_top(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmobs.cli", "top", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": SRC, **(env or {})},
    )


def test_once_prints_a_snapshot_that_agrees_with_metrics(proxy: Proxied) -> None:
    client = sdk_client(proxy.base_url)
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4.1"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    proxy.settle()
    result = llmobs_top(proxy.url, "--once", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    metrics = direct(proxy.url)
    table_rows = parse_table(result.stdout)
    assert table_rows["gpt-4o-mini"]["REQS"] == "2" and table_rows["gpt-4.1"]["REQS"] == "1"
    assert header_number(result.stdout, "requests") == total(metrics, "llmobs_requests_total") == 3
    assert table_rows["gpt-4o-mini"]["REQ/S"] == "0.0"  # nothing happened between the two scrapes
    assert "TENANT" in result.stdout and "key-" in result.stdout  # the tenant table: a hash of the key


def test_once_with_an_admin_token(upstream: ServerThread, make_proxy: Any) -> None:
    locked = make_proxy(upstream.url + "/v1", admin_token="s3cret-admin-token")
    wrong = llmobs_top(locked.url, "--once", "--token", "not-it")
    assert wrong.returncode == 1 and "HTTP 401: wrong admin token" in wrong.stderr
    missing = llmobs_top(locked.url, "--once", env={"LLMOBS_ADMIN_TOKEN": ""})
    assert missing.returncode == 1 and "HTTP 401: an admin token is required" in missing.stderr
    right = llmobs_top(locked.url, "--once", "--interval", "0.1", env={"LLMOBS_ADMIN_TOKEN": "s3cret-admin-token"})
    assert right.returncode == 0 and "ok, window" in right.stdout, right.stderr
    assert "s3cret" not in right.stdout + wrong.stderr + missing.stderr


def test_once_unreachable_and_no_terminal() -> None:
    down = llmobs_top(f"127.0.0.1:{free_port()}", "--once")
    assert down.returncode == 1 and "unreachable" in down.stderr
    no_tty = subprocess.run(
        [sys.executable, "-m", "llmobs.cli", "top"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert no_tty.returncode == 2 and "use --once" in no_tty.stderr
    bad = llmobs_top("--interval", "0")
    assert bad.returncode == 2 and "must be > 0" in bad.stderr


# ---------------------------------------------------------------- reading /metrics and the screen


def direct(url: str) -> list[tuple[str, dict[str, str], float]]:
    """The proxy's /metrics read directly, parsed by prometheus_client itself."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(metrics: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, ls, v in metrics if n == name and all(ls.get(k) == x for k, x in labels.items()))


def model_tokens(metrics: list[tuple[str, dict[str, str], float]], model: str) -> float:
    return sum(total(metrics, "llmobs_tokens_total", model=model, type=kind) for kind in ("input", "output"))


def header_number(screen: str, label: str) -> float | None:
    match = re.search(rf"(?:^|  ){re.escape(label)} (\d+(?:\.\d+)?)", screen, re.MULTILINE)
    return float(match.group(1)) if match else None


def parse_table(screen: str) -> dict[str, dict[str, str]]:
    """Rows of the first table on the screen, by name, then by column title."""
    lines = screen.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"\*?(MODEL|TENANT) ", line)), None)
    if start is None:
        return {}
    titles = [t.lstrip("*") for t in lines[start].split()]
    fields = len(titles) - (titles[-1] == "FINISH")
    out = {}
    for line in lines[start + 1 :]:
        parts = line.split()
        if len(parts) < fields:
            break
        out[parts[0]] = dict(zip(titles, [*parts[:fields], " ".join(parts[fields:])], strict=False))
    return out


def row_order(screen: str) -> list[str]:
    return list(parse_table(screen))


def caption(screen: str) -> str:
    return next((line for line in screen.splitlines() if line.startswith("by ")), "")


# ---------------------------------------------------------------- a real terminal


class Pane:
    """A shell in a detached tmux session on a private socket: type into it, read what it shows."""

    def __init__(self, binary: str, tmp: Path, width: int, height: int) -> None:
        self.binary = binary
        self.socket = str(tmp / "tmux.sock")  # a private server, gone with the test's directory
        self.tmp = tmp
        # LINES and COLUMNS exported, as a shell does when it inherited them: top must still follow resizes.
        env = ["env", f"PYTHONPATH={SRC}", "PS1=$ ", "LLMOBS_ADMIN_TOKEN=", f"HOME={tmp}", f"LINES={height}",
               f"COLUMNS={width}"]  # fmt: skip
        self.tmux("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), "-c", str(tmp),
                  *env, "bash", "--norc", "--noprofile")  # fmt: skip
        self.wait_for(lambda s: "$" in s or None, "the shell prompt")

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            [self.binary, "-S", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True, timeout=10
        )
        assert result.returncode == 0, f"tmux {' '.join(args)}: {result.stderr}"
        return result.stdout

    def run_top(self, *args: str) -> None:
        """Start `llmobs top` from the shell, noting the terminal's modes before and after."""
        command = (
            f"stty -g > before.stty; {sys.executable} -m llmobs.cli top {' '.join(args)}; "
            'echo "top exited $?"; stty -g > after.stty'
        )
        self.tmux("send-keys", "-t", "top", "-l", command)
        self.tmux("send-keys", "-t", "top", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def wait_for(self, found: Callable[[str], T | None], what: str, timeout: float = 20.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            value = found(screen)
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} on screen after {timeout:g}s; the pane shows:\n{screen}")
            time.sleep(0.1)

    def exited(self) -> str:
        """Wait for top to exit; its exit status as the shell saw it."""
        status = self.wait_for(lambda s: (m := re.search(r"^top exited (\d+)", s, re.M)) and m.group(1), "exit")
        self.wait_for(lambda s: (self.tmp / "after.stty").exists() or None, "after.stty")
        return status

    def terminal_restored(self) -> bool:
        before, after = ((self.tmp / f"{when}.stty").read_text() for when in ("before", "after"))
        return bool(before.strip()) and before == after

    def close(self) -> None:
        subprocess.run([self.binary, "-S", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Callable[..., Pane]]:
    binary = shutil.which("tmux")
    if binary is None:
        pytest.fail("tmux not found: the terminal tests need it (apt-get install -y tmux)")
    opened: list[Pane] = []

    def open_pane(width: int = 160, height: int = 40) -> Pane:
        directory = tmp_path / f"pane{len(opened)}"  # its shell's home, working directory and tmux socket
        directory.mkdir()
        opened.append(Pane(binary, directory, width, height))
        return opened[-1]

    yield open_pane
    for p in opened:
        p.close()


@dataclass
class Traffic:
    """Paced requests through the openai SDK, one thread per (model, tenant, words, gap)."""

    base_url: str
    stop: threading.Event
    threads: list[threading.Thread]

    @classmethod
    def start(cls, base_url: str, *plans: tuple[str, str, int, float]) -> Traffic:
        traffic = cls(base_url, threading.Event(), [])
        for plan in plans:
            traffic.threads.append(threading.Thread(target=traffic._drive, args=plan, daemon=True))
            traffic.threads[-1].start()
        return traffic

    def _drive(self, model: str, tenant: str, words: int, gap: float) -> None:
        import openai

        client = sdk_client(self.base_url, timeout=10)
        messages = [{"role": "user", "content": "word " * words}]
        while not self.stop.is_set():
            try:
                for _ in client.chat.completions.create(
                    model=model, messages=messages, stream=True, extra_headers={"x-llmobs-tenant": tenant}
                ):
                    pass
            except openai.APIError:
                pass  # sim-error-429 answers 429 on purpose; the rest only while shutting down
            self.stop.wait(gap)

    def halt(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
            assert not thread.is_alive(), "a traffic thread did not stop"


def hanging_request(proxy: Proxied) -> socket.socket:
    """A request the simulator never answers (`sim-hang`), in flight until the socket closes."""
    body = b'{"model":"sim-hang","messages":[{"role":"user","content":"wait"}]}'
    sock = socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])), timeout=5)
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def in_flight(proxy: Proxied) -> float:
    return total(direct(proxy.url), "llmobs_requests_in_flight")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


MINI, BIG, FAILING = "gpt-4o-mini", "gpt-4.1", "sim-error-429"


def test_top_in_a_terminal_agrees_with_metrics(proxy: Proxied, pane: Callable[..., Pane]) -> None:
    # gpt-4o-mini: many small requests; gpt-4.1: few, each with a 300-word prompt; sim-error-429: fails.
    traffic = Traffic.start(
        proxy.base_url, (MINI, "team-a", 2, 0.04), (BIG, "team-b", 300, 0.2), (FAILING, "team-a", 2, 0.2)
    )
    term = pane(160, 40)
    term.run_top(proxy.url, "--interval", "0.5")
    term.wait_for(lambda s: {MINI, BIG, FAILING} <= set(parse_table(s)) and "ok, window" in s, "three model rows")

    # Tokens/s of gpt-4o-mini: the mean over top's refreshes against two direct scrapes around them.
    first, started = direct(proxy.url), time.monotonic()
    shown: dict[str, float] = {}  # refresh time -> tokens/s
    while time.monotonic() - started < 4:
        screen = term.screen()
        refreshed = re.search(r"refreshed (\S+)  ok, window", screen)
        value = parse_table(screen).get(MINI, {}).get("TOK/S", "-")
        if refreshed and value != "-":
            shown[refreshed.group(1)] = float(value)
        time.sleep(0.1)
    rate = (model_tokens(direct(proxy.url), MINI) - model_tokens(first, MINI)) / (time.monotonic() - started)
    assert len(shown) >= 3, f"too few refreshes seen in 4 s: {shown}"
    mean = sum(shown.values()) / len(shown)
    assert rate > 100 and mean == pytest.approx(rate, rel=0.25), f"screen {shown}, /metrics {rate:.1f} tokens/s"

    screen = term.screen()
    assert parse_table(screen)[FAILING]["ERR%"] in ("100.0%", "-")  # "-": no request in that window
    assert parse_table(screen)[MINI]["ERR%"] in ("0.0%", "-")
    assert row_order(screen).index(MINI) < row_order(screen).index(BIG), "sorted by REQ/S, descending"

    for _ in range(12):  # `>` until the sort column is TOK/S
        if "sorted by TOK/S" in caption(term.screen()):
            break
        term.keys(">")
        time.sleep(0.2)
    by_tokens = term.wait_for(lambda s: "sorted by TOK/S descending" in caption(s) and row_order(s), "TOK/S sort")
    assert by_tokens.index(BIG) < by_tokens.index(MINI) and by_tokens[-1] == FAILING  # no tokens: last
    term.keys("r")
    ascending = term.wait_for(lambda s: "sorted by TOK/S ascending" in caption(s) and row_order(s), "reversed")
    assert ascending.index(MINI) < ascending.index(BIG) and ascending[-1] == FAILING

    term.keys("t")
    tenants = term.wait_for(lambda s: caption(s).startswith("by tenant") and parse_table(s), "the tenant view")
    assert set(tenants) == {"team-a", "team-b"} and "P95" not in term.screen()
    term.keys("m")
    term.wait_for(lambda s: caption(s).startswith("by model") or None, "the model view again")

    # Traffic stops; three requests hang in flight: the screen shows what /metrics says.
    traffic.halt()
    proxy.settle()
    hanging = [hanging_request(proxy) for _ in range(3)]
    wait_until(lambda: in_flight(proxy) == 3, "3 requests in flight on /metrics")
    term.wait_for(lambda s: "in flight 3 (chat_completions 3)" in s, "in flight 3")
    for sock in hanging:
        sock.close()
    wait_until(lambda: in_flight(proxy) == 0, "no request in flight on /metrics")
    proxy.settle()
    metrics = direct(proxy.url)
    requests = total(metrics, "llmobs_requests_total")
    screen = term.wait_for(lambda s: header_number(s, "requests") == requests and s, f"requests {requests:.0f}")
    assert "in flight 0 " in screen
    for model, row in parse_table(screen).items():
        assert float(row["REQS"]) == total(metrics, "llmobs_requests_total", model=model), model
    assert parse_table(screen)["sim-hang"]["REQS"] == "3"

    term.keys("q")
    assert term.exited() == "0"
    assert term.terminal_restored(), "top left the terminal's modes changed"
    assert "REQ/S" not in term.screen(), "the table is still on screen: the alternate screen was not left"


def test_top_shows_a_401_keeps_running_and_quits_on_ctrl_c(
    upstream: ServerThread, make_proxy: Any, pane: Callable[..., Pane]
) -> None:
    locked = make_proxy(upstream.url + "/v1", admin_token="s3cret-admin-token")
    term = pane(120, 20)
    term.run_top(locked.url, "--interval", "0.3", "--token", "not-it")
    first = term.wait_for(
        lambda s: (m := re.search(r"FAILED at (\S+): HTTP 401: wrong admin token", s)) and m[1], "401"
    )
    # Still running: a later scrape fails again, at a later time.
    term.wait_for(lambda s: (m := re.search(r"FAILED at (\S+): HTTP 401", s)) and m[1] != first or None, "a retry")
    assert "not refreshed yet" in term.screen()
    term.keys("C-c")
    assert term.exited() == "0"
    assert term.terminal_restored()


def test_top_survives_small_terminals_and_resizes(proxy: Proxied, pane: Callable[..., Pane]) -> None:
    sdk_client(proxy.base_url).chat.completions.create(model=MINI, messages=[{"role": "user", "content": "hi"}])
    term = pane(30, 6)
    term.run_top(proxy.url, "--interval", "0.3")
    tiny = term.wait_for(lambda s: "llmobs top  http://127.0.0.1:" in s and s, "the cut header")
    assert all(len(line) <= 30 for line in tiny.splitlines())
    assert tiny.splitlines()[-1].startswith("q quit"), "the help line stays on the last row"
    term.tmux("resize-window", "-t", "top", "-x", "160", "-y", "40")
    term.wait_for(lambda s: MINI in parse_table(s) or None, "the full table after growing")
    for width, height in ((12, 2), (1, 1), (100, 20)):
        term.tmux("resize-window", "-t", "top", "-x", str(width), "-y", str(height))
        time.sleep(0.5)
    term.wait_for(lambda s: MINI in parse_table(s) or None, "the table after shrinking and growing again")
    term.keys("q")
    assert term.exited() == "0"
    assert term.terminal_restored()
