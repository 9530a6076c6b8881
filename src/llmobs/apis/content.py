"""Opt-in capture of prompts and completions, in the GenAI conventions' message shape.

Only ever called when the user turned content capture on. Everything here reads
untrusted JSON: wrong types are skipped, never raised on. Text is bounded by a budget
per request side, so a huge prompt or a long stream cannot grow memory or spans.
"""

from __future__ import annotations

from typing import Any

from llmobs.records import Content

MAX_CHARS = 64 * 1024  # per side (input, output) of one request
_PART_COST = 16  # what an empty part costs the budget, so many tiny parts are bounded too
_TEXT_TYPES = frozenset({"text", "input_text", "output_text", "summary_text", "reasoning_text"})
_TOOL_FINISH = frozenset({"tool_calls", "function_call"})


class Budget:
    """Characters left to capture; notes when something was cut."""

    __slots__ = ("left", "truncated")

    def __init__(self, limit: int = MAX_CHARS) -> None:
        self.left = limit
        self.truncated = False

    def take(self, text: str) -> str:
        """`text`, or as much of it as the budget still allows."""
        if len(text) <= self.left:
            self.left -= len(text)
            return text
        self.truncated = True
        cut, self.left = text[: self.left], 0
        return cut

    def part(self) -> bool:
        """Charge one part; False (and truncated) once the budget is spent."""
        if self.left < _PART_COST:
            self.truncated = True
            return False
        self.left -= _PART_COST
        return True


def _text(content: str, budget: Budget) -> dict[str, Any]:
    return {"type": "text", "content": budget.take(content)}


def _parts(content: Any, budget: Budget) -> list[dict[str, Any]]:
    """Message content (a string or a list of typed parts) as semconv parts."""
    if isinstance(content, str):
        return [_text(content, budget)] if budget.part() else []
    if not isinstance(content, list):
        return []
    parts = []
    for part in content:
        if not isinstance(part, dict) or not budget.part():
            continue
        kind = part.get("type")
        text = part.get("text", part.get("refusal"))
        if isinstance(text, str) and (kind in _TEXT_TYPES or kind == "refusal"):
            parts.append(_text(text, budget))
        else:
            parts.append(_media(part, kind))
    return parts


def _media(part: dict[str, Any], kind: Any) -> dict[str, Any]:
    """A non-text part: a web URL is kept, inline data is not (it is large and not text)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith(("http://", "https://")) and len(url) <= 2048:
        return {"type": "uri", "modality": "image", "uri": url}
    return {"type": str(kind) if isinstance(kind, str) else "generic"}


def _tool_call(call_id: Any, name: Any, arguments: Any, budget: Budget) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "tool_call", "name": name if isinstance(name, str) else ""}
    if isinstance(call_id, str):
        part["id"] = call_id
    if isinstance(arguments, str):
        part["arguments"] = budget.take(arguments)
    return part


def _tool_response(call_id: Any, output: Any, budget: Budget) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "tool_call_response"}
    if isinstance(call_id, str):
        part["id"] = call_id
    if isinstance(output, str):
        part["response"] = budget.take(output)
    elif isinstance(output, list):
        texts = [p["text"] for p in output if isinstance(p, dict) and isinstance(p.get("text"), str)]
        part["response"] = budget.take("".join(texts))
    return part


# --- input ----------------------------------------------------------------------------------


def input_content(endpoint: str, body: dict[str, Any], limit: int = MAX_CHARS) -> Content | None:
    """The prompt of a request body, or None for endpoints without one (embeddings, other)."""
    budget = Budget(limit)
    if endpoint == "chat_completions":
        messages = _chat_messages(body.get("messages"), budget)
        return Content(messages=tuple(messages), truncated=budget.truncated)
    if endpoint == "completions":
        return Content(messages=tuple(_prompts(body.get("prompt"), budget)), truncated=budget.truncated)
    if endpoint == "responses":
        instructions = body.get("instructions")
        system = (_text(instructions, budget),) if isinstance(instructions, str) and budget.part() else ()
        messages = _responses_input(body.get("input"), budget)
        return Content(messages=tuple(messages), system=system, truncated=budget.truncated)
    return None


def _chat_messages(messages: Any, budget: Budget) -> list[dict[str, Any]]:
    out = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        if not budget.part():
            break
        out.append(_chat_message(message, budget))
    return out


def _chat_message(message: dict[str, Any], budget: Budget) -> dict[str, Any]:
    role = message.get("role") if isinstance(message.get("role"), str) else "user"
    content = message.get("content")
    if role == "tool":
        parts = [_tool_response(message.get("tool_call_id"), content, budget)]
    else:
        parts = _parts(content, budget)
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(_text(refusal, budget))
    parts.extend(_chat_tool_calls(message, budget))
    out: dict[str, Any] = {"role": role, "parts": parts}
    if isinstance(message.get("name"), str):
        out["name"] = message["name"]
    return out


def chat_tool_calls(message: dict[str, Any]) -> list[Any]:
    """The tool calls of a chat message or delta: its `tool_calls`, else its legacy `function_call`.

    Some servers (llama-cpp-python) send each call in both: the mirror is the same call, so it
    counts only when there is no `tool_calls` list.
    """
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        return calls
    legacy = message.get("function_call")
    return [{"function": legacy}] if isinstance(legacy, dict) else []


def _chat_tool_calls(message: dict[str, Any], budget: Budget) -> list[dict[str, Any]]:
    parts = []
    for call in chat_tool_calls(message):
        if isinstance(call, dict) and isinstance(call.get("function"), dict) and budget.part():
            function = call["function"]
            parts.append(_tool_call(call.get("id"), function.get("name"), function.get("arguments"), budget))
    return parts


def _prompts(prompt: Any, budget: Budget) -> list[dict[str, Any]]:
    """Legacy completions: a string or a list of strings; token-id prompts carry no text."""
    texts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []
    out = []
    for text in texts:
        if isinstance(text, str) and budget.part():
            out.append({"role": "user", "parts": [_text(text, budget)]})
    return out


def _responses_input(items: Any, budget: Budget) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "parts": [_text(items, budget)]}] if budget.part() else []
    out = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if not budget.part():
            break
        message = _responses_item(item, budget)
        if message is not None:
            out.append(message)
    return out


def _responses_item(item: dict[str, Any], budget: Budget) -> dict[str, Any] | None:
    kind = item.get("type")
    if kind == "function_call":
        part = _tool_call(item.get("call_id"), item.get("name"), item.get("arguments"), budget)
        return {"role": "assistant", "parts": [part]}
    if kind == "function_call_output":
        return {"role": "tool", "parts": [_tool_response(item.get("call_id"), item.get("output"), budget)]}
    if isinstance(item.get("role"), str):
        return {"role": item["role"], "parts": _parts(item.get("content"), budget)}
    return None


# --- output ---------------------------------------------------------------------------------


class _Choice:
    __slots__ = ("reasoning", "text", "tools")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tools: dict[int, list[Any]] = {}  # position -> [id, name, argument pieces]


class OutputCapture:
    """Collects generated text per choice, from stream deltas or whole bodies, within a budget."""

    def __init__(self, limit: int = MAX_CHARS) -> None:
        self.limit = limit
        self.budget = Budget(limit)
        self.choices: dict[int, _Choice] = {}

    def _choice(self, index: int) -> _Choice:
        choice = self.choices.get(index)
        if choice is None:
            choice = self.choices[index] = _Choice()
        return choice

    def text(self, index: int, text: Any) -> None:
        if isinstance(text, str) and text and self.budget.left:
            self._choice(index).text.append(self.budget.take(text))
        elif isinstance(text, str) and text:
            self.budget.truncated = True

    def reasoning(self, index: int, text: Any) -> None:
        if isinstance(text, str) and text and self.budget.left:
            self._choice(index).reasoning.append(self.budget.take(text))
        elif isinstance(text, str) and text:
            self.budget.truncated = True

    def tool_call(self, index: int, position: int, call_id: Any, name: Any, arguments: Any) -> None:
        """A tool call, or a piece of one: id and name arrive once, arguments in pieces."""
        tools = self._choice(index).tools
        call = tools.get(position)
        if call is None:
            if not self.budget.part():
                return
            call = tools[position] = [None, None, []]
        if isinstance(call_id, str) and call_id:
            call[0] = call_id
        if isinstance(name, str) and name:
            call[1] = name
        if isinstance(arguments, str) and arguments:
            call[2].append(self.budget.take(arguments))

    # -- whole bodies -----------------------------------------------------------------------

    def chat_choices(self, choices: list[Any]) -> None:
        """Non-streamed chat or legacy completion choices."""
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            index = _int(choice.get("index"), position)
            message = choice.get("message")
            if isinstance(message, dict):
                self.message(index, message)
            else:
                self.text(index, choice.get("text"))

    def delta(self, index: int, delta: dict[str, Any]) -> None:
        """One streamed chat delta."""
        self.reasoning(index, delta.get("reasoning_content") or delta.get("reasoning"))
        self.text(index, delta.get("content"))
        self.text(index, delta.get("refusal"))
        self._tool_calls(index, delta)

    def message(self, index: int, message: dict[str, Any]) -> None:
        """One whole chat message."""
        self.delta(index, message)

    def _tool_calls(self, index: int, message: dict[str, Any]) -> None:
        for position, call in enumerate(chat_tool_calls(message)):
            if isinstance(call, dict):
                function = call.get("function")
                function = function if isinstance(function, dict) else {}
                at = _int(call.get("index"), position)
                self.tool_call(index, at, call.get("id"), function.get("name"), function.get("arguments"))

    def responses_output(self, output: list[Any]) -> None:
        """The `output` items of a finished Responses API response (one generation: choice 0).

        They replace what the stream's deltas gave: the final response is complete.
        """
        self.choices.clear()
        self.budget = Budget(self.limit)
        for position, item in enumerate(output):
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "message":
                for part in _list(item.get("content")):
                    if isinstance(part, dict):
                        self.text(0, part.get("text", part.get("refusal")))
            elif kind == "reasoning":
                for key in ("summary", "content"):
                    for part in _list(item.get(key)):
                        if isinstance(part, dict):
                            self.reasoning(0, part.get("text"))
            elif kind == "function_call":
                self.tool_call(0, position, item.get("call_id"), item.get("name"), item.get("arguments"))

    # -- result -----------------------------------------------------------------------------

    def result(self, reasons: dict[int, str], failed: bool) -> Content:
        """The captured output messages, one per choice, with semconv finish reasons."""
        messages = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            parts: list[dict[str, Any]] = []
            if choice.reasoning:
                parts.append({"type": "reasoning", "content": "".join(choice.reasoning)})
            if choice.text:
                parts.append({"type": "text", "content": "".join(choice.text)})
            for position in sorted(choice.tools):
                call_id, name, pieces = choice.tools[position]
                parts.append(_tool_call(call_id, name, "".join(pieces), Budget()))
            messages.append({"role": "assistant", "parts": parts, "finish_reason": _finish(reasons.get(index), failed)})
        return Content(messages=tuple(messages), truncated=self.budget.truncated)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _finish(reason: str | None, failed: bool) -> str:
    """The output message's finish reason: the conventions say `tool_call` and `error`."""
    if reason is None:
        return "error" if failed else "stop"
    return "tool_call" if reason in _TOOL_FINISH else reason
