"""The YAML files users hand the proxy (prices, budgets, tenant names), read one strict way.

Safe loading; duplicate keys refused (PyYAML silently keeps the last, so a copied line would
change a price or a budget without a word); numbers kept as written, so that they become
exact Decimals and a name written `2024:` keeps its text. Every error names the file.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml


class Number(str):
    """A YAML int or float scalar kept as written."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _construct_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Number:
    return Number(node.value)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_number)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_number)
# YAML 1.1 (PyYAML) reads `1e-6` as a string; read it as the number YAML 1.2 and users expect.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_section(path: Path, key: str, *, what: str, maps: str, error: type[ValueError]) -> dict[Any, Any]:
    """The mapping under `key`, the file's single top-level key; `error("<what> <path>: ...")` else.

    `maps` says what the mapping holds, for the message when it is not one ("model names to prices").
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path}: cannot read it: {exc}") from exc
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: invalid YAML: {exc}") from exc
    if not isinstance(document, dict) or set(document) != {key}:
        raise error(f"{what} {path}: expected a mapping with the single key {key!r}")
    section = document[key]
    if not isinstance(section, dict):
        raise error(f"{what} {path}: {key!r} must map {maps}")
    return section


def amount(where: str, key: str, value: object, *, unit: str, error: type[ValueError]) -> Decimal:
    """A non-negative, finite number (prices, budgets), exactly as written; `error` names `key` else."""
    if not isinstance(value, Number):
        hint = "; write numbers unquoted" if isinstance(value, str) else ""
        raise error(f"{where}: {key} must be a number ({unit}), got {value!r}{hint}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or number < 0:
        raise error(f"{where}: {key} must be a finite number >= 0, got {str(value)!r}")
    return number
