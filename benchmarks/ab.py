"""A/B two llmobs builds in one run: this checkout against an earlier commit.

    python benchmarks/ab.py baseline REV               # REV vs this checkout, defaults -> AB_BASELINE.md

(AB_CLIENT.md is the record of `ab.py clients`, aiohttp vs h1, from before the aiohttp client
was removed; it is why h1 is the client.)

One simulator (benchmarks/simserver.py), two `llmobs serve` processes in front of it (A and
B: their own src/ and settings), and the load client (benchmarks/loadclient.py) driving
direct / A / B interleaved, the order rotated per scenario and round. Every figure is a
median over rounds of a same-round difference (vs direct) or ratio (B / A). Every body is
hashed and compared with what direct returned. 7 rounds take about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report
import stack
from bench import Client, Scenario

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
LONG_TOKENS = 100


@dataclass(frozen=True)
class Build:
    """One side of the comparison: a label, the src/ it runs from, its LLMOBS_* settings."""

    label: str
    src: Path
    env: dict[str, str]


def source_at(rev: str, into: Path) -> Path:
    """src/ as it was at `rev` (git archive, unpacked under `into`); the checkout is untouched."""
    tar = subprocess.run(["git", "-C", str(HERE.parent), "archive", rev, "src"], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into / "src"


SCENARIOS = [
    Scenario("ns-c1", False, 1, 400),
    Scenario("ns-c32", False, 32, 4000),
    Scenario("st-c1", True, 1, 20, ttft_ms=20, gap_ms=5),
    Scenario("st-c32", True, 32, 192, ttft_ms=20, gap_ms=10),
    Scenario("st-c32-long", True, 32, 64, ttft_ms=20, gap_ms=10, tokens=LONG_TOKENS),
]

Cell = dict[str, Any]


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


class AB:
    """The servers, the client, and the cells of every round."""

    def __init__(self, builds: tuple[Build, Build], rounds: int, outdir: Path) -> None:
        self.builds = builds
        self.targets = ("direct", *(b.label for b in builds))
        self.rounds = rounds
        self.outdir = outdir
        outdir.mkdir(parents=True, exist_ok=True)
        self.logdir = Path(tempfile.mkdtemp(prefix="ab-logs-", dir=outdir))
        self.servers: dict[str, stack.Server] = {}
        self.cells: list[Cell] = []
        self.client: Client | None = None

    def start(self) -> None:
        upstream = stack.start_simulator(self.logdir)
        upstream.wait_ready()
        self.servers["direct"] = upstream
        for build in self.builds:
            env = {**build.env, "PYTHONPATH": str(build.src)}
            server = stack.start_llmobs(build.label, upstream.port, self.logdir, env=env)
            server.wait_ready()
            self.servers[build.label] = server
        self.client = Client()

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for server in reversed(list(self.servers.values())):
            server.stop()

    def cell(self, scen: Scenario, target: str, rnd: int, phase: str = "grid") -> Cell:
        assert self.client is not None
        server = self.servers[target]
        before = stack.scrape_totals(server.port)["llmobs_requests_total"] if server.metrics else None
        cpu = server.watch.cpu()
        res = self.client.run(scen.command(server.port, 120.0))
        res.update(
            scenario=scen.key,
            target=target,
            round=rnd,
            phase=phase,
            stream=scen.stream,
            n=scen.n,
            tokens=scen.tokens,
            target_cpu_s=server.watch.cpu() - cpu,
            counted=None if before is None else stack.scrape_totals(server.port)["llmobs_requests_total"] - before,
        )
        if phase == "grid":
            self.cells.append(res)
        print(
            f"  r{rnd} {scen.key:12s} {target:8s} {res['completed']:5d} ok {res['rps']:7.0f}/s "
            f"p50 {res['total_ms']['50']:7.2f} ttfb50 {res['ttfb_ms']['50']:7.2f} "
            f"cpu {1e3 * res['target_cpu_s'] / max(1, res['completed']):.3f} ms/req",
            file=sys.stderr,
        )
        return res

    def run(self) -> None:
        self.start()
        try:
            targets = self.targets
            for target in targets:  # imports, pools, allocator arenas
                self.cell(Scenario("warm-ns", False, 32, 2000), target, 0, "warm-up")
                self.cell(Scenario("warm-st", True, 32, 128, ttft_ms=1, gap_ms=1), target, 0, "warm-up")
            for rnd in range(1, self.rounds + 1):
                for i, scen in enumerate(SCENARIOS):
                    shift = (rnd + i) % len(targets)
                    for target in targets[shift:] + targets[:shift]:
                        self.cell(scen, target, rnd)
        finally:
            self.stop()


# ---------------------------------------------------------------------------- figures


def cpu_per_request(c: Cell) -> float:
    return float(c["target_cpu_s"]) / max(1, int(c["completed"]))


Row = tuple[str, str, Callable[[str, int], float]]


def figures(cells: list[Cell]) -> tuple[list[Row], list[Row]]:
    """(costs, added latencies): each row is (figure, unit, value of a proxy in a round)."""
    grid = report.Cells(cells)

    def of(scen: str, target: str, rnd: int) -> Cell | None:
        return grid.of(scen, target).get(rnd)

    def value(scen: str, key: Callable[[Cell], float]) -> Callable[[str, int], float]:
        def get(target: str, rnd: int) -> float:
            c = of(scen, target, rnd)
            return key(c) if c is not None else float("nan")

        return get

    def added(scen: str, key: Callable[[Cell], float]) -> Callable[[str, int], float]:
        def get(target: str, rnd: int) -> float:
            mine, ref = of(scen, target, rnd), of(scen, "direct", rnd)
            return key(mine) - key(ref) if mine is not None and ref is not None else float("nan")

        return get

    def per_chunk(target: str, rnd: int) -> float:
        short, long = of("st-c32", target, rnd), of("st-c32-long", target, rnd)
        if short is None or long is None:
            return float("nan")
        return 1e6 * (cpu_per_request(long) - cpu_per_request(short)) / (LONG_TOKENS - 20)

    ms = 1e3
    costs: list[Row] = [
        ("CPU per non-streamed request, c=32", "ms", value("ns-c32", lambda c: ms * cpu_per_request(c))),
        ("CPU per extra streamed chunk (100- vs 20-chunk streams, c=32)", "µs", per_chunk),
        ("CPU per 20-chunk stream, c=32", "ms", value("st-c32", lambda c: ms * cpu_per_request(c))),
        ("throughput, non-streamed, c=32", "req/s", value("ns-c32", lambda c: float(c["rps"]))),
    ]
    latency: list[Row] = [
        (f"added {label}", "ms", added(scen, report.p(key, q)))
        for label, scen, key, q in [
            ("p50 latency, non-streamed, c=1", "ns-c1", "total_ms", "50"),
            ("p99 latency, non-streamed, c=1", "ns-c1", "total_ms", "99"),
            ("p50 latency, non-streamed, c=32", "ns-c32", "total_ms", "50"),
            ("p99 latency, non-streamed, c=32", "ns-c32", "total_ms", "99"),
            ("TTFT p50, streamed, c=1", "st-c1", "ttfb_ms", "50"),
            ("TTFT p99, streamed, c=1", "st-c1", "ttfb_ms", "99"),
            ("TTFT p50, streamed, c=32", "st-c32", "ttfb_ms", "50"),
            ("TTFT p99, streamed, c=32", "st-c32", "ttfb_ms", "99"),
        ]
    ]
    return costs, latency


def _rows(
    rows: list[Row], labels: tuple[str, str], rnds: list[int], compare: Callable[[float, float], float], fmt: str
) -> list[str]:
    out = []
    for name, unit, get in rows:
        a = [get(labels[0], r) for r in rnds]
        b = [get(labels[1], r) for r in rnds]
        each = [compare(x, y) for x, y in zip(a, b, strict=True) if x == x and y == y]
        out.append(
            f"| {name} | {median(a):.3f} {unit} | {median(b):.3f} {unit} | **{median(each):{fmt}}** | "
            + ", ".join(f"{v:{fmt}}" for v in each)
            + " |"
        )
    return out


def render(data: dict[str, Any]) -> str:
    cells, rounds, seconds = data["cells"], data["rounds"], data["seconds"]
    a, b = labels = (data["labels"][0], data["labels"][1])
    env = report.environment()
    rnds = sorted({c["round"] for c in cells})
    costs, latency = figures(cells)
    lines = [
        f"# {data['title']}",
        "",
        f"Regenerated by `python benchmarks/ab.py {data['command']} --rounds {rounds}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds:.0f} s. Do not edit by hand.",
        "",
        f"- Machine: {env['machine']}; load average at the end {env['load']} (shared machine).",
        f"- Python {env['python']}; {env['versions']}. Code: `{env['commit']}`.",
        f"- {data['setup']}",
        f"- Method: {len(rnds)} interleaved rounds (direct / {a} / {b}, order rotated per scenario and "
        "round). Values are medians over rounds; the comparison is the median of the per-round comparisons. "
        "Streams: upstream TTFT 20 ms, chunk gap 5 ms (c=1) or 10 ms (c=32).",
        "",
        f"## Cost and throughput (ratio {b} / {a}; below 1 is less CPU, above 1 more throughput)",
        "",
        f"| figure | {a} | {b} | {b} / {a} | per round |",
        "|---|---|---|---|---|",
        *_rows(costs, labels, rnds, lambda x, y: y / x if x else float("nan"), ".2f"),
        "",
        f"## Added latency vs direct (difference {b} − {a}, ms; negative is {b} faster)",
        "",
        f"| figure | {a} | {b} | {b} − {a} | per round |",
        "|---|---|---|---|---|",
        *_rows(latency, labels, rnds, lambda x, y: y - x, "+.2f"),
    ]
    ident = report.identity(cells)
    metrics = report.metrics_exact(cells)
    errors = sum(sum(c["errors"].values()) for c in cells)
    lines += [
        "",
        f"- Byte identity: {ident['checked']:,} response bodies (ids and `created` stamps normalised) compared "
        f"with direct's for the same request: {ident['mismatched']} differ"
        + (f"; {'; '.join(ident['ambiguous'])}" if ident["ambiguous"] else "")
        + ".",
        f"- `/metrics`: `llmobs_requests_total` moved by {metrics['counted']:,} for {metrics['sent']:,} requests "
        f"sent through the two proxies: {'exact' if metrics['ok'] else 'NOT exact: ' + '; '.join(metrics['bad'])}.",
        f"- Client-side errors: {errors}.",
        "",
    ]
    return "\n".join(lines)


def builds(args: argparse.Namespace, workdir: Path) -> tuple[tuple[Build, Build], dict[str, str]]:
    """The two builds, and what the results file says about them."""
    rev = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", args.rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    pair = (Build(rev, source_at(rev, workdir), {}), Build("now", SRC, {}))
    return pair, {
        "title": f"A/B against an earlier commit: {rev} vs now",
        "command": f"baseline {args.rev}",
        "setup": f"Two `llmobs serve` processes, default settings: `{rev}` (src/ from git archive) "
        "and this checkout, one process each, in front of the same simulator.",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("baseline",), help="what to compare")
    p.add_argument("rev", nargs="?", help="baseline: the earlier commit")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7; at least 5 to report)")
    p.add_argument("--out", default=str(HERE / "out"), help="logs and the raw cells (git-ignored)")
    p.add_argument("--results", help="the Markdown table to (re)write (default AB_BASELINE.md)")
    p.add_argument("--report-only", action="store_true", help="rewrite the table from the raw cells in OUT")
    args = p.parse_args(argv)
    if not args.rev:
        p.error("baseline needs the earlier commit: ab.py baseline REV")
    name = "ab_baseline"
    raw = Path(args.out) / f"{name}.json"
    results = Path(args.results) if args.results else HERE / f"{name.upper()}.md"
    if args.report_only:
        data = json.loads(raw.read_text())
    else:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ab-src-") as tmp:
            pair, about = builds(args, Path(tmp))
            ab = AB(pair, args.rounds, Path(args.out))
            ab.run()
        labels = [b.label for b in pair]
        data = {"cells": ab.cells, "rounds": args.rounds, "seconds": time.monotonic() - t0, "labels": labels, **about}
        raw.write_text(json.dumps(data, indent=1))
    text = render(data)
    results.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
