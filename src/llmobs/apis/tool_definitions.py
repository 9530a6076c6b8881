"""Opt-in capture of the tools a request offers, as the conventions' gen_ai.tool.definitions.

Only called with content capture on. One shape for every API (the conventions' Tool
Definitions schema): `{"type": "function", "name", "description", "parameters"}` for a function
tool, `{"type", "name"}` for any other (a built-in like `web_search`, a custom free-form tool).
Descriptions are text and spend the budget like captured messages do; a parameter schema is
kept whole or dropped (a cut schema would not be JSON Schema), and either way the cut is noted.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from llmobs.apis.content import MAX_CHARS, Budget
from llmobs.records import Content

# Where each API puts a function tool's fields: chat nests them under `function` (or `custom`);
# the Responses API and Anthropic do not (Anthropic names its schema `input_schema`).
_NESTED = ("function", "custom")
_SCHEMA_KEYS = ("parameters", "input_schema")


def with_tools(content: Content, *tool_lists: Any, limit: int = MAX_CHARS) -> Content:
    """`content` with the tools of a request (`tools`, chat's legacy `functions`) added.

    The tools have a budget of their own, so that large schemas never crowd out the messages.
    """
    budget = Budget(limit)
    tools = [d for tools in tool_lists for d in tool_definitions(tools, budget)]
    if not tools:
        return content
    return dataclasses.replace(content, tools=tuple(tools), truncated=content.truncated or budget.truncated)


def tool_definitions(tools: Any, budget: Budget) -> list[dict[str, Any]]:
    """A list of tools as tool definitions, within `budget`; what is not a tool is skipped."""
    out = []
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and budget.part():
            definition = _definition(tool, budget)
            if definition is not None:
                out.append(definition)
    return out


def _definition(tool: dict[str, Any], budget: Budget) -> dict[str, Any] | None:
    kind = tool.get("type")
    nested = tool.get(kind) if kind in _NESTED else None
    spec: dict[str, Any] = nested if isinstance(nested, dict) else tool
    name = spec.get("name")
    schema = next((spec[key] for key in _SCHEMA_KEYS if key in spec), None)
    # Untyped: chat's legacy functions and Anthropic's client tools; Anthropic may also type
    # those `custom`, which chat uses for free-form tools (no schema).
    if kind == "function" or kind is None or (kind == "custom" and "input_schema" in spec):
        if not isinstance(name, str):
            return None
        definition: dict[str, Any] = {"type": "function", "name": name}
        description = spec.get("description")
        if isinstance(description, str):
            definition["description"] = budget.take(description)
        if isinstance(schema, dict):
            _schema(definition, schema, budget)
        return definition
    if not isinstance(kind, str):
        return None
    return {"type": kind, "name": name if isinstance(name, str) else kind}


def _schema(definition: dict[str, Any], schema: dict[str, Any], budget: Budget) -> None:
    try:
        size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        return
    if size <= budget.left:
        budget.left -= size
        definition["parameters"] = schema
    else:
        budget.truncated = True
