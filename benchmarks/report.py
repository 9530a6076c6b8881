"""Turn the benchmark's raw cells into figures, and the figures into benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stack

MIB = 1024 * 1024
Cell = dict[str, Any]


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else float("nan")


class Cells:
    """Look-ups over the grid's cells, pairing each target with direct in the same round."""

    def __init__(self, cells: list[Cell]) -> None:
        self.cells = cells

    def of(self, scenario: str, target: str, phase: str = "grid") -> dict[int, Cell]:
        return {
            c["round"]: c
            for c in self.cells
            if c["scenario"] == scenario and c["target"] == target and c["phase"] == phase
        }

    def per_round(self, scenario: str, target: str, value: Callable[[Cell], float]) -> list[float]:
        return [value(c) for c in self.of(scenario, target).values()]

    def added(self, scenario: str, target: str, value: Callable[[Cell], float], base: str = "direct") -> float:
        """Median over rounds of value(target) - value(base), both from the same round."""
        mine, ref = self.of(scenario, target), self.of(scenario, base)
        return median([value(mine[r]) - value(ref[r]) for r in mine if r in ref])

    def ratio(self, scenario: str, target: str, value: Callable[[Cell], float], base: str) -> float:
        mine, ref = self.of(scenario, target), self.of(scenario, base)
        return median([value(mine[r]) / value(ref[r]) for r in mine if r in ref and value(ref[r])])


def p(key: str, q: str) -> Callable[[Cell], float]:
    return lambda c: float(c[key][q])


def rps(c: Cell) -> float:
    return float(c["rps"])


def cpu_per_request(c: Cell) -> float:
    return float(c["target_cpu_s"]) / max(1, int(c["completed"]))


# ---------------------------------------------------------------------------- figures


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """Every number the report shows, computed once."""
    cells = Cells(results["cells"])
    proxies = [t for t in ("nginx", "llmobs") if t in results["idle_rss"]]
    f: dict[str, Any] = {"proxies": proxies, "latency": {}, "streams": {}, "cpu": {}, "throughput": {}}
    for scen in ("ns-c1", "ns-c32", "ns-c128"):
        f["latency"][scen] = {
            "direct_p50": median(cells.per_round(scen, "direct", p("total_ms", "50"))),
            "direct_p99": median(cells.per_round(scen, "direct", p("total_ms", "99"))),
            **{t: {q: cells.added(scen, t, p("total_ms", q)) for q in ("50", "99")} for t in proxies},
        }
    for scen in ("st-c1", "st-c32", "st-c256"):
        f["streams"][scen] = {
            "direct_ttft_p50": median(cells.per_round(scen, "direct", p("ttfb_ms", "50"))),
            "direct_total_p50": median(cells.per_round(scen, "direct", p("total_ms", "50"))),
            **{
                t: {
                    "ttft50": cells.added(scen, t, p("ttfb_ms", "50")),
                    "ttft99": cells.added(scen, t, p("ttfb_ms", "99")),
                    "total50": cells.added(scen, t, p("total_ms", "50")),
                    "total99": cells.added(scen, t, p("total_ms", "99")),
                }
                for t in proxies
            },
        }
    for scen in ("ns-c32", "ns-c128"):
        row = {t: median(cells.per_round(scen, t, rps)) for t in ("direct", *proxies, "llmobs-2w")}
        row["llmobs/direct"] = cells.ratio(scen, "llmobs", rps, "direct")
        row["llmobs/nginx"] = cells.ratio(scen, "llmobs", rps, "nginx")
        row["nginx/direct"] = cells.ratio(scen, "nginx", rps, "direct")
        row["2w/1w"] = cells.ratio(scen, "llmobs-2w", rps, "llmobs")
        row["2w/nginx"] = cells.ratio(scen, "llmobs-2w", rps, "nginx")
        f["throughput"][scen] = row
    for t in ("direct", *proxies):
        per_req = median(cells.per_round("ns-c32", t, cpu_per_request))
        per_stream = cells.per_round("st-c32", t, cpu_per_request)
        per_long = cells.per_round("st-c32-long", t, cpu_per_request)
        long_tokens = next((s["tokens"] for s in results["scenarios"] if s["key"] == "st-c32-long"), 100)
        marginal = [(b - a) / (long_tokens - 20) for a, b in zip(per_stream, per_long, strict=False)]
        f["cpu"][t] = {
            "per_request_ms": 1e3 * per_req,
            "per_stream_ms": 1e3 * median(per_stream),
            "per_chunk_us": 1e6 * median(marginal),
            "per_chunk_avg_us": 1e6 * median(per_stream) / 20,
        }
    client = [c for c in results["cells"] if c["phase"] == "grid"]
    f["client"] = {
        "ms_per_request_ns": 1e3
        * median([c["client_proc_cpu_s"] / max(1, c["completed"]) for c in client if c["scenario"] == "ns-c32"]),
        "core_share_direct_ns_c32": median(
            [
                c["client_proc_cpu_s"] / c["wall_s"]
                for c in client
                if c["scenario"] == "ns-c32" and c["target"] == "direct"
            ]
        ),
        "core_share_llmobs_ns_c32": median(
            [
                c["client_proc_cpu_s"] / c["wall_s"]
                for c in client
                if c["scenario"] == "ns-c32" and c["target"] == "llmobs"
            ]
        ),
        "upstream_core_share_direct_ns_c32": median(
            [c["upstream_cpu_s"] / c["wall_s"] for c in client if c["scenario"] == "ns-c32" and c["target"] == "direct"]
        ),
        "wrk_rps": results.get("wrk_rps"),
    }
    f["identity"] = identity(results["cells"])
    f["metrics"] = metrics_exact(results["cells"])
    f["open"] = {c["target"]: c for c in results["cells"] if c["phase"] == "open-streams"}
    growth = results.get("growth")
    if growth:
        series = growth["rss_series"]
        f["growth"] = {
            "requests": growth["requests"],
            "first": series[0],
            "last": series[-1],
            "peak": max(series),
            "pct": 100.0 * (series[-1] - series[0]) / series[0],
            "series": series,
        }
    return f


def identity(cells: list[Cell]) -> dict[str, Any]:
    """Per response shape: the digests direct produced, and whether every target matched them."""
    kinds: dict[tuple[bool, str], dict[str, dict[str, int]]] = {}
    for c in cells:
        kind = (bool(c["stream"]), str(c.get("tokens", 20)))
        per_target = kinds.setdefault(kind, {})
        mine = per_target.setdefault(c["target"], {})
        for digest, count in c["digests"].items():
            mine[digest] = mine.get(digest, 0) + count
    checked, mismatched, ambiguous = 0, 0, []
    for kind, per_target in kinds.items():
        reference = set(per_target.get("direct", {}))
        if len(reference) != 1:
            ambiguous.append(f"{kind}: direct gave {len(reference)} distinct bodies")
        for _target, digests in per_target.items():
            for digest, count in digests.items():
                checked += count
                if digest not in reference:
                    mismatched += count
    return {
        "checked": checked,
        "mismatched": mismatched,
        "ambiguous": ambiguous,
        "ok": mismatched == 0 and not ambiguous,
    }


def metrics_exact(cells: list[Cell]) -> dict[str, Any]:
    """Did llmobs_requests_total move by exactly the number of requests each llmobs cell sent?"""
    sent = counted = 0
    bad = []
    for c in cells:
        if c.get("counted") is None:
            continue
        expected = c["completed"] + sum(c["errors"].values())
        sent += expected
        counted += int(c["counted"])
        if int(c["counted"]) != expected:
            bad.append(f"{c['phase']}/{c['scenario']}/{c['target']}: sent {expected}, counted {c['counted']:.0f}")
    return {"sent": sent, "counted": counted, "bad": bad, "ok": not bad and sent > 0}


# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    figure: str
    target: str
    measured: str
    ok: bool


def targets(f: dict[str, Any]) -> list[Target]:
    """The issue's targets, each with the measured value and pass/miss."""
    cpu = f["cpu"].get("llmobs", {})
    lat = f["latency"]
    st = f["streams"]["st-c32"].get("llmobs", {})
    thr = f["throughput"]["ns-c32"]
    rows = [
        Target(
            "proxy CPU per non-streamed request",
            "≤ 0.5 ms",
            f"{cpu['per_request_ms']:.3f} ms",
            cpu["per_request_ms"] <= 0.5,
        ),
        Target("proxy CPU per streamed chunk", "≤ 50 µs", f"{cpu['per_chunk_us']:.0f} µs", cpu["per_chunk_us"] <= 50),
        Target(
            "added p50 latency, non-stream, c=1",
            "≤ 0.5 ms",
            f"{lat['ns-c1']['llmobs']['50']:+.3f} ms",
            lat["ns-c1"]["llmobs"]["50"] <= 0.5,
        ),
        Target(
            "added p99 latency, non-stream, c=32",
            "≤ 5 ms",
            f"{lat['ns-c32']['llmobs']['99']:+.2f} ms",
            lat["ns-c32"]["llmobs"]["99"] <= 5,
        ),
        Target(
            "added TTFT p50 / p99, stream, c=32",
            "≤ 1 ms / ≤ 5 ms",
            f"{st['ttft50']:+.2f} ms / {st['ttft99']:+.2f} ms",
            st["ttft50"] <= 1 and st["ttft99"] <= 5,
        ),
    ]
    if thr["llmobs/nginx"] == thr["llmobs/nginx"]:
        rows.append(
            Target(
                "throughput at c=32, non-stream",
                "≥ 50% of nginx's",
                f"{100 * thr['llmobs/nginx']:.0f}% of nginx's",
                thr["llmobs/nginx"] >= 0.5,
            )
        )
    open_ = f["open"].get("llmobs")
    if open_:
        n = open_["n"]
        complete = open_["completed"] == n and open_["statuses"].get("200") == n and not open_["errors"]
        peak = open_["rss_peak"] / MIB
        rows.append(
            Target(
                f"{n:,} concurrent streams",
                "all complete; peak RSS ≤ 150 MiB",
                f"{open_['completed']:,}/{n:,} complete; peak {peak:.0f} MiB",
                complete and peak <= 150,
            )
        )
    growth = f.get("growth")
    if growth:
        rows.append(
            Target(
                f"RSS growth over {growth['requests']:,} requests",
                "< 5% after warm-up",
                f"{growth['pct']:+.1f}%",
                growth["pct"] < 5,
            )
        )
    rows.append(
        Target(
            "responses byte-identical to direct",
            "all",
            f"{f['identity']['checked']:,} checked, {f['identity']['mismatched']} differ",
            f["identity"]["ok"],
        )
    )
    rows.append(
        Target(
            "/metrics counted every request exactly",
            "exact",
            f"{f['metrics']['counted']:,} counted / {f['metrics']['sent']:,} sent",
            f["metrics"]["ok"],
        )
    )
    return rows


# ---------------------------------------------------------------------------- environment


def _run(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def environment() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "?",
    )
    versions = []
    for dist in ("llmobs", "uvicorn", "uvloop", "httptools", "prometheus_client", "fastapi"):
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    commit = _run(["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"])
    wrk = _run(["wrk", "--version"]).splitlines()[0:1] if shutil.which("wrk") else []
    spy = _run(["py-spy", "--version"]) if shutil.which("py-spy") else ""
    return {
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}",
        "python": platform.python_version(),
        "versions": ", ".join(versions),
        "commit": commit or "?",
        "nginx": stack.nginx_version(),
        "tools": ", ".join(x for x in [wrk[0].split(" [")[0] if wrk else "wrk absent", spy or "py-spy absent"]),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}",
    }


# ---------------------------------------------------------------------------- markdown


def _ms(v: float, signed: bool = True) -> str:
    return "n/a" if v != v else (f"{v:+.2f}" if signed else f"{v:.2f}")


def _mib(v: float) -> str:
    return f"{v / MIB:.1f} MiB"


def render(results: dict[str, Any], f: dict[str, Any], env: dict[str, str], quick: bool) -> str:
    rows = targets(f)
    lines: list[str] = []
    add = lines.append
    passed = sum(r.ok for r in rows)
    add("# llmobs benchmark results")
    add("")
    add(
        "Regenerated by `" + results["command"] + "` "
        f"on {env['date']} UTC "
        f"in {results['seconds']:.0f} s{' (quick mode: small samples, indicative only)' if quick else ''}. "
        "Do not edit by hand."
    )
    add("")
    add(
        f"- Machine: {env['machine']}; load average at the end {env['load']} (shared machine: "
        "absolute numbers are noise, so every figure is a difference or ratio against *direct* "
        "from the same round)."
    )
    add(f"- Python {env['python']}; {env['versions']}; nginx {env['nginx']}; {env['tools']}.")
    add(
        f"- Code: `{env['commit']}`. llmobs with default settings: Prometheus metrics on, "
        "stream usage injection on, OpenTelemetry export off (no OTLP endpoint set)."
    )
    add(
        f"- Method: {results['rounds']} interleaved rounds (target order rotated every scenario and "
        "round); each figure is the median over rounds of (target − direct) or target / direct."
    )
    add("")
    add(f"## Targets ({passed} of {len(rows)} met)")
    add("")
    add("| figure | target | measured | |")
    add("|---|---|---|---|")
    for r in rows:
        add(f"| {r.figure} | {r.target} | {r.measured} | {'pass' if r.ok else '**miss**'} |")
    add("")
    _latency(add, f)
    _streams(add, f, results)
    _throughput(add, f)
    _cpu(add, f)
    _memory(add, f, results)
    _correctness(add, f)
    _client(add, f)
    _profile(add, results)
    if results["notes"]:
        add("## Notes")
        add("")
        for note in results["notes"]:
            add(f"- {note}")
        add("")
    return "\n".join(lines)


def _latency(add: Callable[[str], None], f: dict[str, Any]) -> None:
    add("## Non-streamed requests: added latency (ms, vs direct)")
    add("")
    head = " | ".join(f"{t} +p50 | {t} +p99" for t in f["proxies"])
    add(f"| concurrency | direct p50 | direct p99 | {head} |")
    add("|---|---|---|" + "---|---|" * len(f["proxies"]))
    for scen, row in f["latency"].items():
        cells = " | ".join(f"{_ms(row[t]['50'])} | {_ms(row[t]['99'])}" for t in f["proxies"])
        add(f"| {scen.split('-c')[1]} | {_ms(row['direct_p50'], False)} | {_ms(row['direct_p99'], False)} | {cells} |")
    add("")


def _streams(add: Callable[[str], None], f: dict[str, Any], results: dict[str, Any]) -> None:
    shapes = {s["key"]: s for s in results["scenarios"]}
    add("## Streams of 20 chunks: added TTFT and total stream time (ms, vs direct)")
    add("")
    add(
        "| concurrency | upstream TTFT / gap | direct TTFT p50 | direct total p50 | "
        + " | ".join(f"{t} +TTFT p50 | {t} +TTFT p99 | {t} +total p50 | {t} +total p99" for t in f["proxies"])
        + " |"
    )
    add("|---|---|---|---|" + "---|---|---|---|" * len(f["proxies"]))
    for scen, row in f["streams"].items():
        s = shapes[scen]
        cells = " | ".join(
            f"{_ms(row[t]['ttft50'])} | {_ms(row[t]['ttft99'])} | {_ms(row[t]['total50'])} | {_ms(row[t]['total99'])}"
            for t in f["proxies"]
        )
        add(
            f"| {s['concurrency']} | {s['ttft_ms']} / {s['gap_ms']} ms | {_ms(row['direct_ttft_p50'], False)} | "
            f"{_ms(row['direct_total_p50'], False)} | {cells} |"
        )
    add("")


def _throughput(add: Callable[[str], None], f: dict[str, Any]) -> None:
    add("## Throughput, non-streamed, closed loop")
    add("")
    add(
        "| concurrency | direct req/s | nginx req/s | llmobs req/s | llmobs / direct | llmobs / nginx | "
        "nginx / direct | llmobs 2 workers req/s | 2 workers / 1 worker |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for scen, row in f["throughput"].items():

        def r(key: str, row: dict[str, float] = row) -> str:
            v = row.get(key, float("nan"))
            return "n/a" if v != v else f"{v:.2f}"

        def n(key: str, row: dict[str, float] = row) -> str:
            v = row.get(key, float("nan"))
            return "n/a" if v != v else f"{v:.0f}"

        add(
            f"| {scen.split('-c')[1]} | {n('direct')} | {n('nginx')} | {n('llmobs')} | {r('llmobs/direct')} | "
            f"{r('llmobs/nginx')} | {r('nginx/direct')} | {n('llmobs-2w')} | {r('2w/1w')} |"
        )
    add("")
    add(
        "Direct is bound by the single-process Python simulator; the proxies share the same two "
        "cores with it and with the client, so a proxy's ratio to direct includes the CPU it takes "
        "away from the upstream."
    )
    add("")


def _cpu(add: Callable[[str], None], f: dict[str, Any]) -> None:
    add("## CPU (all processes of the server, from /proc utime+stime)")
    add("")
    add(
        "| server | per non-streamed request (c=32) | per 20-chunk stream (c=32) | per extra chunk "
        "(100- vs 20-chunk streams) | per chunk, stream cost / 20 |"
    )
    add("|---|---|---|---|---|")
    for t, row in f["cpu"].items():
        name = "upstream simulator (direct)" if t == "direct" else t
        add(
            f"| {name} | {row['per_request_ms']:.3f} ms | {row['per_stream_ms']:.3f} ms | "
            f"{row['per_chunk_us']:.0f} µs | {row['per_chunk_avg_us']:.0f} µs |"
        )
    add("")


def _memory(add: Callable[[str], None], f: dict[str, Any], results: dict[str, Any]) -> None:
    add("## Memory")
    add("")
    add(
        "| server | idle RSS | before the open streams | peak with the open streams | streams complete | "
        "llmobs in-flight gauge, max seen |"
    )
    add("|---|---|---|---|---|---|")
    for t, c in f["open"].items():
        flight = c.get("in_flight_max")
        add(
            f"| {'upstream simulator (direct)' if t == 'direct' else t} | {_mib(results['idle_rss'][t])} | "
            f"{_mib(c['rss_before'])} | {_mib(c['rss_peak'])} | {c['completed']}/{c['issued']} "
            f"(statuses {c['statuses']}, errors {c['errors'] or 'none'}) | "
            f"{'n/a' if flight is None else f'{flight:.0f}'} |"
        )
    add("")
    g = f.get("growth")
    if g:
        series = ", ".join(f"{v / MIB:.1f}" for v in g["series"])
        add(
            f"Long run: {g['requests']:,} requests through llmobs after warm-up (4/5 non-streamed, "
            f"1/5 streamed, c=32). RSS {_mib(g['first'])} → {_mib(g['last'])} ({g['pct']:+.1f}%), "
            f"peak {_mib(g['peak'])}. RSS after each tenth (MiB): {series}."
        )
        add("")


def _correctness(add: Callable[[str], None], f: dict[str, Any]) -> None:
    ident, met = f["identity"], f["metrics"]
    add("## Correctness")
    add("")
    add(
        f"- Byte identity: {ident['checked']:,} response bodies from every phase, ids and `created` "
        f"stamps normalised, compared with the body direct returned for the same request: "
        f"{ident['mismatched']} differ. {'; '.join(ident['ambiguous'])}"
    )
    add(
        f"- `/metrics`: `llmobs_requests_total` moved by {met['counted']:,} for {met['sent']:,} requests "
        f"sent through llmobs, checked cell by cell (scraped before and after each): "
        f"{'exact' if met['ok'] else 'MISMATCH: ' + '; '.join(met['bad'][:10])}."
    )
    add("")


def _client(add: Callable[[str], None], f: dict[str, Any]) -> None:
    c = f["client"]
    add("## Is the load client the bottleneck?")
    add("")
    add(
        f"The client is `benchmarks/loadclient.py`: one process, uvloop + httptools, keep-alive "
        f"connections, closed loop. It spends {c['ms_per_request_ns']:.3f} ms of CPU per non-streamed "
        f"request, including hashing every body. At c=32 direct it used {100 * c['core_share_direct_ns_c32']:.0f}% "
        f"of a core while the upstream used {100 * c['upstream_core_share_direct_ns_c32']:.0f}%; "
        f"against llmobs it used {100 * c['core_share_llmobs_ns_c32']:.0f}%."
    )
    wrk = c.get("wrk_rps")
    if wrk:
        add(
            " The same shape driven by `wrk -t1 -c32` (C, no body checks) reached: "
            + ", ".join(f"{t} {v:.0f} req/s" for t, v in wrk.items())
            + ". Where wrk is no faster than the Python client, the server, not the client, sets the pace."
        )
    add("")


def _profile(add: Callable[[str], None], results: dict[str, Any]) -> None:
    prof = results.get("profile")
    if not prof:
        return
    add("## Profile (py-spy, llmobs under load at c=32)")
    add("")
    for key, data in prof.items():
        title = "non-streamed requests" if key.endswith("ns") else "20-chunk streams"
        add(f"### {title} ({data['samples']} samples)")
        add("")
        add(
            "Share of samples by area (innermost known frame): "
            + ", ".join(f"{name} {share}%" for name, share in data["area"])
            + "."
        )
        add("")
        add("| self % | function | | inclusive % | function |")
        add("|---|---|---|---|---|")
        inclusive = [x for x in data["inclusive"] if not x[0].startswith(("<module>", "run (", "main ("))][:15]
        for (fn, share), (ifn, ishare) in zip(data["self"][:15], inclusive, strict=False):
            add(f"| {share} | `{fn}` | | {ishare} | `{ifn}` |")
        add("")
    analysis = Path(__file__).with_name("PROFILE_NOTES.md")
    if analysis.exists():
        add(analysis.read_text().strip())
        add("")


def write(results: dict[str, Any], path: Path, quick: bool = False) -> str:
    """Compute the figures, write the Markdown report, return the targets table as text."""
    f = figures(results)
    env = results.setdefault("environment", environment())  # as measured, when rewritten later
    path.write_text(render(results, f, env, quick) + "\n")
    return "\n".join(f"{'pass' if r.ok else 'MISS'}  {r.figure}: {r.measured} (target {r.target})" for r in targets(f))
