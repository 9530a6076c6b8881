"""Tool calls and cheap quality signals of one answer, judged without a model.

A `Judge` is fed by an accumulator: the tool calls the model asked for (name, argument
pieces), the answer text (kept only when the request asked for JSON: otherwise only whether
there was any), and refusals. At the end it names the calls and gives a `Quality`. What it
holds is bounded by one budget of characters: past it, no new call is recorded and JSON is
not judged, rather than judged on a part.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from itertools import product
from typing import Any

from llmobs.jsonio import loads, too_complex
from llmobs.records import Quality

MAX_CHARS = 1024 * 1024  # answer text, arguments and names held per response

# Finish reasons of an answer that ended on its own (OpenAI's and Anthropic's words); any
# other (length, max_tokens, content_filter, pause_turn, ...) cut it short, and a cut answer
# is not judged: the finish reason already tells.
NATURAL_ENDS = frozenset({"stop", "tool_calls", "function_call", "end_turn", "stop_sequence", "tool_use", "refusal"})

# Every verdict there can be, built once: a Quality is frozen, and building one per request
# would cost more than judging.
_VERDICTS = {key: Quality(*key) for key in product((None, False, True), repeat=3)}
NOT_JUDGED = _VERDICTS[None, None, None]


class _Call:
    __slots__ = ("name", "pieces")

    def __init__(self, json_arguments: bool) -> None:
        self.name: str | None = None
        self.pieces: list[str] | None = [] if json_arguments else None  # None: free-form input


class Judge:
    """What the quality signals need from one response, fed as it arrives."""

    __slots__ = ("expects_json", "can_refuse", "calls", "texts", "left", "answered", "refused")

    def __init__(self, expects_json: bool, can_refuse: bool = True, limit: int = MAX_CHARS) -> None:
        self.expects_json = expects_json
        self.can_refuse = can_refuse  # False: the API has no way to refuse (legacy completions)
        self.calls: dict[Hashable, _Call] = {}
        self.texts: dict[int, list[str]] = {}  # answer text per choice, only when JSON was asked for
        self.left = limit  # negative once the budget is spent
        self.answered = False  # some answer text, or a tool call, arrived
        self.refused = False

    @property
    def spent(self) -> bool:
        return self.left < 0

    def _charge(self, size: int) -> bool:
        if self.left < 0:
            return False
        self.left -= size
        return self.left >= 0

    def text(self, index: int, text: Any) -> None:
        """A piece of answer text of choice `index`."""
        if not isinstance(text, str) or not text:
            return
        self.answered = True
        if self.expects_json and self._charge(len(text)):
            pieces = self.texts.get(index)
            if pieces is None:
                pieces = self.texts[index] = []
            pieces.append(text)

    def refusal(self, text: Any = True) -> None:
        """A refusal (a non-empty `refusal` text, or a refusal stop reason)."""
        if text:
            self.refused = True

    def tool_call(self, key: Hashable, name: Any, arguments: Any, *, json_arguments: bool = True) -> None:
        """A tool call, or a piece of one: its name arrives once, its arguments in pieces.

        `json_arguments` False: the call's input is free-form text (a custom tool), not judged.
        """
        call = self.calls.get(key)
        if call is None:
            if not self._charge(64):  # a call costs its entry, even without a name
                return
            call = self.calls[key] = _Call(json_arguments)
            self.answered = True
        if call.name is None and isinstance(name, str) and name and self._charge(len(name)):
            call.name = name
        if call.pieces is not None and isinstance(arguments, str) and arguments and self._charge(len(arguments)):
            call.pieces.append(arguments)

    def names(self) -> tuple[str, ...]:
        """The names of the tools called, in the order the calls began (nameless calls left out)."""
        if not self.calls:
            return ()
        return tuple(call.name for call in self.calls.values() if call.name is not None)

    def verdict(self, completed: bool, reasons: Collection[str]) -> Quality:
        """The signals of an answer that ended (`completed`) with these finish reasons."""
        if not completed:
            return NOT_JUDGED
        if not reasons or not NATURAL_ENDS.issuperset(reasons):
            return _VERDICTS[None, None, True] if self.refused else NOT_JUDGED
        invalid = self._invalid_json(judge_text=not self.refused) if self.calls or self.texts else None
        if self.refused:
            return _VERDICTS[invalid, None, True]
        return _VERDICTS[invalid, not self.answered, False if self.can_refuse else None]

    def _invalid_json(self, *, judge_text: bool) -> bool | None:
        """Whether some JSON did not parse; None when none was due (or it was too large to hold)."""
        if self.spent:
            return None
        due = [call.pieces for call in self.calls.values() if call.pieces is not None]
        if judge_text and self.expects_json:
            due.extend(self.texts.values())  # an empty answer is counted as empty, not as bad JSON
        if not due:
            return None
        verdicts = [parses("".join(pieces)) for pieces in due]
        if None in verdicts:
            return None
        return not all(verdicts)


def parses(text: str) -> bool | None:
    """Whether `text` is JSON (an empty text means no arguments: it is); None: too costly to say."""
    if not text:
        return True
    try:
        data = text.encode()
    except UnicodeEncodeError:  # halves of a surrogate pair that came in separate pieces
        data = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
    if too_complex(data):
        return None
    try:
        loads(data)
    except (ValueError, RecursionError):
        return False
    return True
