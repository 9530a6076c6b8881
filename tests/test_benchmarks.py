"""The benchmark harness's pure parts: body normalisation, percentiles, report figures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import loadclient
import report


def test_normalise_masks_the_simulators_random_ids_and_stamps() -> None:
    a = b'data: {"id":"chatcmpl-0a1b","created":1712000000,"x":{"id":"call_ff01"}}\n\n'
    b = b'data: {"id":"chatcmpl-99ee","created":1712000001,"x":{"id":"call_1234"}}\n\n'
    assert loadclient.normalise(a) == loadclient.normalise(b)
    assert loadclient.normalise(a) == b'data: {"id":"chatcmpl-0","created":0,"x":{"id":"call_0"}}\n\n'


def test_normalise_keeps_content_that_differs() -> None:
    assert loadclient.normalise(b'{"content":"tok1 "}') != loadclient.normalise(b'{"content":"tok2 "}')


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadclient.percentile(values, 50) == 50.0
    assert loadclient.percentile(values, 99) == 99.0
    assert loadclient.percentile([7.0], 99) == 7.0


def _cell(target: str, rnd: int, p50: float, digest: str = "d", counted: float | None = None) -> dict:
    return {
        "scenario": "ns-c1",
        "target": target,
        "round": rnd,
        "phase": "grid",
        "stream": False,
        "tokens": 20,
        "total_ms": {"50": p50},
        "digests": {digest: 10},
        "completed": 10,
        "errors": {},
        "counted": counted,
    }


def test_added_latency_pairs_each_round_with_direct_of_the_same_round() -> None:
    cells = report.Cells(
        [
            _cell("direct", 1, 1.0),
            _cell("llmobs", 1, 1.5),
            _cell("direct", 2, 9.0),
            _cell("llmobs", 2, 9.2),
            _cell("direct", 3, 2.0),
            _cell("llmobs", 3, 2.3),
        ]
    )
    assert abs(cells.added("ns-c1", "llmobs", report.p("total_ms", "50")) - 0.3) < 1e-9


def test_identity_flags_a_body_that_differs_from_direct() -> None:
    same = report.identity([_cell("direct", 1, 1.0), _cell("llmobs", 1, 1.0)])
    differs = report.identity([_cell("direct", 1, 1.0), _cell("llmobs", 1, 1.0, digest="other")])
    assert same["ok"] and same["checked"] == 20
    assert not differs["ok"] and differs["mismatched"] == 10


def test_metrics_check_wants_exact_counts() -> None:
    assert report.metrics_exact([_cell("llmobs", 1, 1.0, counted=10)])["ok"]
    assert not report.metrics_exact([_cell("llmobs", 1, 1.0, counted=11)])["ok"]
