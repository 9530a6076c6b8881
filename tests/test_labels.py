"""LabelGuard: client-fed label values are bounded in number and length."""

from __future__ import annotations

from llmobs.telemetry.labels import LabelGuard
from llmobs.telemetry.names import OTHER


def test_the_first_values_are_kept_and_later_new_ones_become_other() -> None:
    guard = LabelGuard(2)
    assert [guard(v) for v in ("a", "b", "c", "a", "b", "d")] == ["a", "b", OTHER, "a", "b", OTHER]


def test_a_value_too_long_for_a_label_becomes_other_and_takes_no_slot() -> None:
    guard = LabelGuard(1)
    assert guard("x" * 129) == OTHER
    assert guard("short") == "short"
    assert guard("x" * 128) == OTHER  # the one slot is taken now


def test_no_value_is_the_empty_label() -> None:
    assert LabelGuard(0)(None) == ""
