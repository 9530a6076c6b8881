"""Opt-in capture of Anthropic Messages prompts and completions, in the GenAI message shape.

The same shape and budget as apis/content.py gives OpenAI's: `system` becomes the system
instructions; `messages` content blocks become parts (text, tool_call for `tool_use`,
tool_call_response for `tool_result`, reasoning for `thinking`). Untrusted JSON: wrong types
are skipped, never raised on.
"""

from __future__ import annotations

import json
from typing import Any

from llmobs.apis.content import MAX_CHARS, Budget, OutputCapture, _text, _tool_call, _tool_response
from llmobs.records import Content

# stop_reason -> the output message's finish_reason in the conventions' words.
_SEMCONV_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_call",
    "refusal": "content_filter",
}


def semconv_finish(reasons: dict[int, str]) -> dict[int, str]:
    """Anthropic stop reasons as the conventions name finish reasons (others kept as they are)."""
    return {index: _SEMCONV_FINISH.get(reason, reason) for index, reason in reasons.items()}


def input_content(body: dict[str, Any], limit: int = MAX_CHARS) -> Content:
    """The prompt of a Messages request: `system` and `messages`."""
    budget = Budget(limit)
    system = tuple(_blocks(body.get("system"), budget))
    messages = []
    for message in _list(body.get("messages")):
        if not isinstance(message, dict):
            continue
        if not budget.part():
            break
        role = message.get("role") if isinstance(message.get("role"), str) else "user"
        messages.append({"role": role, "parts": _blocks(message.get("content"), budget)})
    return Content(messages=tuple(messages), system=system, truncated=budget.truncated)


def _blocks(content: Any, budget: Budget) -> list[dict[str, Any]]:
    """A string or a list of content blocks, as semconv parts."""
    if isinstance(content, str):
        return [_text(content, budget)] if budget.part() else []
    parts = []
    for block in _list(content):
        if isinstance(block, dict) and budget.part():
            parts.append(_block(block, budget))
    return parts


def _block(block: dict[str, Any], budget: Budget) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return _text(block["text"], budget)
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return {"type": "reasoning", "content": budget.take(block["thinking"])}
    if kind == "tool_use":
        return _tool_call(block.get("id"), block.get("name"), _arguments(block.get("input")), budget)
    if kind == "tool_result":
        return _tool_response(block.get("tool_use_id"), block.get("content"), budget)
    source = block.get("source")
    url = source.get("url") if isinstance(source, dict) and source.get("type") == "url" else None
    if kind in ("image", "document") and isinstance(url, str) and url.startswith(("http://", "https://")):
        modality = "image" if kind == "image" else "document"
        return {"type": "uri", "modality": modality, "uri": url[:2048]}
    return {"type": kind if isinstance(kind, str) else "generic"}  # inline data is not kept


def _arguments(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- output ---------------------------------------------------------------------------------


def capture_blocks(output: OutputCapture, content: Any) -> None:
    """A whole message's content blocks (one generation: choice 0)."""
    for position, block in enumerate(_list(content)):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            output.text(0, block.get("text"))
        elif kind == "thinking":
            output.reasoning(0, block.get("thinking"))
        elif kind == "tool_use":
            output.tool_call(0, position, block.get("id"), block.get("name"), _arguments(block.get("input")))


def capture_event(output: OutputCapture, kind: str, obj: dict[str, Any] | None) -> None:
    """A streamed `content_block_start` (a tool call's id and name) or `content_block_delta`."""
    if obj is None:
        return
    index = obj.get("index")
    index = index if isinstance(index, int) and not isinstance(index, bool) else 0
    if kind == "content_block_start":
        block = obj.get("content_block")
        if isinstance(block, dict) and block.get("type") == "tool_use":
            output.tool_call(0, index, block.get("id"), block.get("name"), None)
        return
    delta = obj.get("delta")
    if not isinstance(delta, dict):
        return
    delta_type = delta.get("type")
    if delta_type == "text_delta":
        output.text(0, delta.get("text"))
    elif delta_type == "thinking_delta":
        output.reasoning(0, delta.get("thinking"))
    elif delta_type == "input_json_delta":
        output.tool_call(0, index, None, None, delta.get("partial_json"))
