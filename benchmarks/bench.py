"""Benchmark llmobs against the direct upstream and nginx; regenerate benchmarks/RESULTS.md.

    python benchmarks/bench.py            # full run (about 10 minutes on 2 cores)
    python benchmarks/bench.py --quick    # CI-sized run, under a minute

Every figure is a difference or a ratio against "direct" (the client talking to the
simulated upstream itself), measured in the same run, interleaved, and the median over
repeated rounds. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import profiling
import report
import stack
from procstat import PeakSampler, Watch

HERE = Path(__file__).resolve().parent
PATH = "/v1/chat/completions"
PROMPT = [{"role": "user", "content": "Say hello to the benchmark, politely and briefly."}]


@dataclass(frozen=True)
class Scenario:
    """One load shape, run against several targets."""

    key: str
    stream: bool
    concurrency: int
    n: int
    ttft_ms: int = 0
    gap_ms: int = 0
    tokens: int = 20
    workers_too: bool = False  # also run against the 2-worker llmobs

    def command(self, port: int, deadline: float) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "sim-model", "messages": PROMPT}
        if self.stream:
            body["stream"] = True
        headers = {"x-sim-output-tokens": str(self.tokens)}
        if self.ttft_ms or self.gap_ms:
            headers |= {"x-bench-ttft-ms": str(self.ttft_ms), "x-bench-gap-ms": str(self.gap_ms)}
        return {
            "port": port,
            "path": PATH,
            "body": json.dumps(body),
            "headers": headers,
            "n": self.n,
            "concurrency": self.concurrency,
            "deadline": deadline,
        }


def scenarios(quick: bool) -> list[Scenario]:
    """The interleaved grid. Stream profiles: realistic gaps, at rates two cores can serve directly.

    CPU per chunk is the marginal cost: (CPU of a long stream - CPU of a 20-chunk stream) / extra chunks.
    """
    q = quick
    return [
        Scenario("ns-c1", False, 1, 100 if q else 400),
        Scenario("ns-c32", False, 32, 800 if q else 4000, workers_too=True),
        Scenario("ns-c128", False, 128, 800 if q else 4000),
        Scenario("st-c1", True, 1, 5 if q else 20, ttft_ms=20, gap_ms=5),
        Scenario("st-c32", True, 32, 32 if q else 192, ttft_ms=20, gap_ms=10),
        Scenario("st-c32-long", True, 32, 32 if q else 64, ttft_ms=20, gap_ms=10, tokens=60 if q else 100),
        Scenario("st-c256", True, 256, 256 if q else 512, ttft_ms=100, gap_ms=50),
    ]


class Client:
    """The load client process (benchmarks/loadclient.py), one JSON command per line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "loadclient.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.watch = Watch(self.proc.pid)

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("load client died")
        out: dict[str, Any] = json.loads(line)
        if "fatal" in out:
            raise RuntimeError(f"load client: {out['fatal']}")
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


class Bench:
    """Owns the servers and the client; each phase appends to `self.results`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.deadline = 60.0 if self.quick else 180.0
        self.outdir = Path(args.out)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.logdir = Path(tempfile.mkdtemp(prefix="logs-", dir=self.outdir))
        self.servers: dict[str, stack.Server] = {}
        self.results: dict[str, Any] = {"cells": [], "notes": []}
        self.client: Client | None = None

    # ------------------------------------------------------------------ set-up

    def start(self) -> None:
        upstream = stack.start_simulator(self.logdir)
        upstream.wait_ready()
        self.servers["direct"] = upstream
        nginx = stack.start_nginx(upstream.port, self.logdir)
        if nginx is None:
            self.note("nginx is not installed (apt-get install -y nginx): the nginx column is skipped.")
        else:
            nginx.wait_ready()
            self.servers["nginx"] = nginx
        llmobs = stack.start_llmobs("llmobs", upstream.port, self.logdir)
        llmobs.wait_ready()
        self.servers["llmobs"] = llmobs
        if self.args.workers > 1:
            if stack.serve_supports_workers():
                multi = stack.start_llmobs("llmobs-2w", upstream.port, self.logdir, workers=self.args.workers)
                try:
                    multi.wait_ready()
                    self.servers["llmobs-2w"] = multi
                except RuntimeError as exc:
                    multi.stop()
                    self.note(f"`llmobs serve --workers {self.args.workers}` did not start: {exc}")
            else:
                self.note("`llmobs serve --workers` does not exist yet: the multi-worker figure is pending.")
        self.client = Client()
        self.results["idle_rss"] = {name: s.watch.rss() for name, s in self.servers.items()}

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for server in reversed(list(self.servers.values())):
            server.stop()

    def note(self, text: str) -> None:
        print(f"note: {text}", file=sys.stderr)
        self.results["notes"].append(text)

    @property
    def targets(self) -> list[str]:
        return [t for t in ("direct", "nginx", "llmobs") if t in self.servers]

    # ------------------------------------------------------------------ one cell

    def cell(self, scen: Scenario, target: str, rnd: int, phase: str = "grid") -> dict[str, Any]:
        """Run one scenario against one target; attach CPU, RSS and the metrics delta."""
        assert self.client is not None
        server = self.servers[target]
        upstream = self.servers["direct"].watch
        before = self._counted(server)
        cpu = (server.watch.cpu(), upstream.cpu(), self.client.watch.cpu())
        res = self.client.run(scen.command(server.port, self.deadline))
        cpu_after = (server.watch.cpu(), upstream.cpu(), self.client.watch.cpu())
        after = self._counted(server)
        res.update(
            scenario=scen.key,
            target=target,
            round=rnd,
            phase=phase,
            stream=scen.stream,
            n=scen.n,
            tokens=scen.tokens,
            target_cpu_s=cpu_after[0] - cpu[0],
            upstream_cpu_s=cpu_after[1] - cpu[1],
            client_proc_cpu_s=cpu_after[2] - cpu[2],
            rss_after=server.watch.rss(),
            counted=None if before is None or after is None else after - before,
        )
        self.results["cells"].append(res)
        done = res["completed"]
        print(
            f"  {phase} r{rnd} {scen.key:12s} {target:9s} {done:6d} ok {res['rps']:8.0f}/s "
            f"p50 {res['total_ms']['50']:7.2f} ms p99 {res['total_ms']['99']:7.2f} ms "
            f"cpu {1e3 * res['target_cpu_s'] / max(1, done):6.3f} ms/req",
            file=sys.stderr,
        )
        return res

    def _counted(self, server: stack.Server) -> float | None:
        if not server.metrics:
            return None
        return stack.scrape_totals(server.port)["llmobs_requests_total"]

    # ------------------------------------------------------------------ phases

    def warm_up(self) -> None:
        """JIT-free Python still warms: imports, pools, caches, allocator arenas."""
        names = self.targets + (["llmobs-2w"] if "llmobs-2w" in self.servers else [])
        for target in names:
            self.cell(Scenario("warm-ns", False, 32, 400 if self.quick else 2000), target, 0, "warm-up")
            self.cell(
                Scenario("warm-st", True, 32, 32 if self.quick else 128, ttft_ms=1, gap_ms=1), target, 0, "warm-up"
            )

    def grid(self) -> None:
        """Every scenario x target, target order rotated per round and per scenario."""
        for rnd in range(1, self.args.rounds + 1):
            for i, scen in enumerate(scenarios(self.quick)):
                names = self.targets + (["llmobs-2w"] if scen.workers_too and "llmobs-2w" in self.servers else [])
                shift = (rnd + i) % len(names)
                for target in names[shift:] + names[:shift]:
                    self.cell(scen, target, rnd)

    def client_check(self) -> None:
        """Is the load client the bottleneck? Compare it with wrk (C) on the same shape, and
        report the share of a core the client itself used."""
        wrk = shutil.which("wrk")
        if wrk is None:
            self.note("wrk is not installed (apt-get install -y wrk): the client cross-check uses CPU shares only.")
            return
        script = self.logdir / "post.lua"
        body = json.dumps({"model": "sim-model", "messages": PROMPT})
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["Authorization"] = "Bearer sk-bench"\n'
        )
        out: dict[str, Any] = {}
        for _rnd in range(1 if self.quick else 2):
            for target in self.targets:
                server = self.servers[target]
                cmd = [
                    wrk,
                    "-t1",
                    "-c32",
                    "-d1s" if self.quick else "-d3s",
                    "-s",
                    str(script),
                    f"http://{stack.HOST}:{server.port}{PATH}",
                ]
                text = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
                rps = next(
                    (float(line.split()[1]) for line in text.splitlines() if line.startswith("Requests/sec")),
                    float("nan"),
                )
                out.setdefault(target, []).append(rps)
                print(f"  wrk {target:9s} {rps:8.0f}/s", file=sys.stderr)
        self.results["wrk_rps"] = {t: median(v) for t, v in out.items()}

    def many_streams(self) -> None:
        """1,000 concurrent open streams: all must complete; peak RSS of each target."""
        count = self.args.open_streams
        # Held open ~2-4 s: long enough that all are in flight at once, gentle on the upstream.
        scen = Scenario(
            "open-streams", True, count, count, ttft_ms=1500 if self.quick else 2000, gap_ms=50 if self.quick else 100
        )
        for target in ["direct", "llmobs"] if self.quick else self.targets:
            server = self.servers[target]
            flight: list[float] = []
            sampler_stop = threading.Event()

            def scrape_in_flight(server: Any, flight: list[float], stop: threading.Event) -> None:
                # the proxy's own view of its concurrency, mid-phase; a failed scrape is a missing sample
                while not stop.wait(0.25):
                    try:
                        flight.append(stack.scrape_totals(server.port)["llmobs_requests_in_flight"])
                    except Exception:  # noqa: BLE001 - a sampler: any failure is one sample fewer
                        pass

            scraper = threading.Thread(target=scrape_in_flight, args=(server, flight, sampler_stop), daemon=True)
            if server.metrics:
                scraper.start()
            base = server.watch.rss()
            with PeakSampler({"target": server.watch}) as peaks:
                res = self.cell(scen, target, 0, "open-streams")
            sampler_stop.set()
            if server.metrics:
                scraper.join()
            res.update(rss_before=base, rss_peak=peaks.peak["target"], in_flight_max=max(flight, default=None))

    def growth(self) -> None:
        """RSS of llmobs over a long run, after warm-up, in blocks of non-stream + stream requests."""
        total = self.args.long_requests
        blocks = 10
        per = total // blocks
        ns = Scenario("long-ns", False, 32, per * 4 // 5)
        st = Scenario("long-st", True, 32, per - ns.n)
        server = self.servers["llmobs"]
        self.cell(replace(ns, n=max(1000, per)), "llmobs", 0, "long-warm-up")
        series = [server.watch.rss()]
        sent = 0
        for block in range(1, blocks + 1):
            for scen in (ns, st):
                res = self.cell(scen, "llmobs", block, "long")
                sent += res["completed"]
            series.append(server.watch.rss())
        self.results["growth"] = {"requests": sent, "rss_series": series}

    def profile(self) -> None:
        """py-spy on llmobs under non-stream and stream load; collapsed stacks saved beside the results."""
        if not profiling.available():
            self.note("py-spy is not installed (pip install py-spy): no profile this run.")
            return
        server = self.servers["llmobs"]
        out: dict[str, Any] = {}
        shapes = [
            Scenario("prof-ns", False, 32, 6000 if not self.quick else 2000),
            Scenario("prof-st", True, 32, 256 if not self.quick else 96, ttft_ms=20, gap_ms=10),
        ]
        for scen in shapes:
            path = self.outdir / f"profile-{scen.key}.txt"
            seconds = 8 if not self.quick else 3
            spy = profiling.start(server.proc.pid, path, seconds)
            time.sleep(0.5)  # py-spy attaches
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds - 0.5:  # keep llmobs busy for the whole sample
                self.cell(scen, "llmobs", 0, "profile")
            spy.wait(timeout=60)
            if path.exists():
                out[scen.key] = profiling.summarise(path)
        self.results["profile"] = out

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.start()
        try:
            print("warm-up", file=sys.stderr)
            self.warm_up()
            print("interleaved grid", file=sys.stderr)
            self.grid()
            print("client check", file=sys.stderr)
            self.client_check()
            print("long run (RSS growth)", file=sys.stderr)
            self.growth()
            print(f"{self.args.open_streams} concurrent streams", file=sys.stderr)
            self.many_streams()
            if not self.args.no_profile:
                print("profile", file=sys.stderr)
                self.profile()
        finally:
            self.stop()
        self.results["seconds"] = time.monotonic() - t0
        self.results["rounds"] = self.args.rounds
        self.results["scenarios"] = [asdict(s) for s in scenarios(self.quick)]
        return self.results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI-sized run (< 60 s)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 2)")
    p.add_argument("--long-requests", type=int, help="requests in the RSS-growth run (default 100000; quick 3000)")
    p.add_argument("--open-streams", type=int, default=1000, help="concurrent streams held open (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="also run llmobs --workers N for throughput (1: skip)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    p.add_argument("--profile", action="store_true", help="profile even with --quick")
    p.add_argument("--out", default=str(HERE / "out"), help="logs, profiles and results.json (git-ignored)")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="the Markdown report to (re)write")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite the report from OUT/results.json without running anything"
    )
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.long_requests = args.long_requests or (3000 if args.quick else 100_000)
    args.no_profile = args.no_profile or (args.quick and not args.profile)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw = Path(args.out, "results.json")
    if args.report_only:
        results = json.loads(raw.read_text())
        print(report.write(results, Path(args.results), quick="--quick" in results["command"]))
        return 0
    command = "python benchmarks/bench.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    results = Bench(args).run()
    results["command"] = command.strip()
    summary = report.write(results, Path(args.results), quick=args.quick)
    raw.write_text(json.dumps(results, indent=1))  # with the environment the report read
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
