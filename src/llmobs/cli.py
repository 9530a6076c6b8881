"""Command line: serve, simulate, demo, dashboards."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from llmobs import __version__
from llmobs.config import ConfigError, Settings, load_settings, unknown_variables


def _serve(args: argparse.Namespace) -> int:
    from llmobs.runner import run

    flags = {
        "upstream_url": args.upstream,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "routes": args.route,
    }
    try:
        settings = load_settings(flags, config_file=args.config)
        if settings.price_file is not None:  # a bad price file stops the start, not the first request
            from llmobs.telemetry.pricing import read_price_file

            read_price_file(settings.price_file)
        if settings.tenant_map_file is not None:
            from llmobs.attribution import read_tenant_map

            read_tenant_map(settings.tenant_map_file)
        if settings.budget_file is not None:
            from llmobs.telemetry.budgets import read_budget_file

            read_budget_file(settings.budget_file)
        from llmobs.telemetry.otel_setup import check_env

        check_env(os.environ)
    except (ConfigError, ValueError) as exc:
        print(f"llmobs: {exc}", file=sys.stderr)
        return 2
    for warning in unknown_variables(os.environ):
        print(f"llmobs: warning: {warning}", file=sys.stderr)
    for host, port in ((settings.host, settings.port), (settings.host, settings.admin_port)):
        problem = _cannot_listen(host, port)
        if problem:
            print(f"llmobs: cannot listen on {host}:{port}: {problem}", file=sys.stderr)
            return 1
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(
        f"llmobs {__version__}: proxying http://{settings.host}:{settings.port} -> {settings.upstream_url}"
        f" with {settings.workers} worker(s)",
        file=sys.stderr,
    )
    run(settings)
    return 0


def _cannot_listen(host: str, port: int | None) -> str | None:
    """Why the server could not bind host:port (in use, no such address), checked before any banner."""
    if not port:
        return None
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _simulate(args: argparse.Namespace) -> int:
    import uvicorn

    from llmobs.sim import SimConfig, create_app
    from llmobs.sim.connections import closing_protocol

    config = SimConfig(ttft=args.ttft, chunk_gap=args.chunk_gap, output_tokens=args.output_tokens)
    print(f"llmobs simulated upstream on http://{args.host}:{args.port}/v1", file=sys.stderr)
    close_after = args.close_after_response
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools" if close_after is None else closing_protocol(close_after),
        ws="auto",  # WebSocket upgrades (Realtime) through the websockets package, a dependency
        log_level="warning",
        access_log=False,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from llmobs.dev.demo import run_demo
    except ImportError as exc:
        return _needs_extra("demo", exc)
    return run_demo(duration=args.duration, concurrency=args.concurrency)


def _needs_extra(extra: str, exc: ImportError) -> int:
    print(f"llmobs: this command needs the {extra!r} extra ({exc.name} is not installed): "
          f"pip install 'llmobs[{extra}]'", file=sys.stderr)  # fmt: skip
    return 2


def _dashboards(args: argparse.Namespace) -> int:
    try:
        from llmobs.dashboards import write_dashboards
    except ImportError as exc:
        return _needs_extra("dev", exc)

    for path in write_dashboards(args.out):
        print(path)
    return 0


def _top(args: argparse.Namespace) -> int:
    from llmobs.top.fetch import metrics_url
    from llmobs.top.main import run_top

    try:
        url = metrics_url(args.url)
    except ValueError as exc:
        print(f"llmobs top: {exc}", file=sys.stderr)
        return 2
    return run_top(url, token=args.token, interval=args.interval, once=args.once)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="llmobs", description="Observability proxy for OpenAI-compatible LLM APIs.")
    root.add_argument("--version", action="version", version=f"llmobs {__version__}")
    sub = root.add_subparsers(dest="command", required=True)
    defaults = Settings.model_fields

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help=f"upstream API base URL [LLMOBS_UPSTREAM_URL; default {defaults['upstream_url'].default}]",
    )
    serve.add_argument("--host", help=f"address to bind [LLMOBS_HOST; default {defaults['host'].default}]")
    serve.add_argument("--port", help=f"port to bind [LLMOBS_PORT; default {defaults['port'].default}]")
    serve.add_argument("--workers", help="worker processes [LLMOBS_WORKERS; default 1]")
    serve.add_argument(
        "--route",
        action="append",
        metavar="PREFIX=URL",
        help="one more upstream: requests under PREFIX go to URL, longest prefix first; repeatable [LLMOBS_ROUTES]",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML config file [LLMOBS_CONFIG]")
    serve.set_defaults(run=_serve)

    sim = sub.add_parser("simulate", help="run the simulated OpenAI-compatible upstream")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8000)
    sim.add_argument("--ttft", type=_non_negative, default=0.0, help="seconds to the first token")
    sim.add_argument("--chunk-gap", type=_non_negative, default=0.0, help="seconds between stream chunks")
    sim.add_argument("--output-tokens", type=int, default=20, help="output tokens per response")
    sim.add_argument(
        "--close-after-response",
        type=_non_negative,
        metavar="SECONDS",
        help="as llama-server does: announce keep-alive, yet close each connection this long after each response",
    )
    sim.set_defaults(run=_simulate)

    demo = sub.add_parser("demo", help="zero-setup tour: simulated upstream, proxy, traffic, summary")
    demo.add_argument("--duration", type=_non_negative, default=15.0, help="seconds of traffic (default 15)")
    demo.add_argument("--concurrency", type=int, default=4)
    demo.set_defaults(run=_demo)

    dash = sub.add_parser("dashboards", help="write the Grafana dashboards as JSON")
    dash.add_argument("--out", default="dashboards", help="output directory")
    dash.set_defaults(run=_dashboards)

    top = sub.add_parser("top", help="live terminal view of a running proxy's /metrics")
    top.add_argument("url", nargs="?", default="http://127.0.0.1:4000/metrics", help="/metrics or base URL")
    top.add_argument("--token", help="admin bearer token [LLMOBS_ADMIN_TOKEN]")
    top.add_argument("--interval", type=_positive, default=1.0, help="seconds between scrapes (default 1)")
    top.add_argument("--once", action="store_true", help="print one plain-text snapshot after two scrapes and exit")
    top.set_defaults(run=_top)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
