"""Mask secrets and personal data in captured text before it leaves the process.

Pure and fast. Python's regex engine gets slow when many patterns are tried at every
position, so each rule first finds where it could match with a plain substring search
(`sk-`, `@`, a run of digits, ...) and runs its regex only there. Prose with nothing
sensitive in it costs a handful of `str.find` calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

Span = tuple[int, int, str]  # start, end, what replaces text[start:end]
Scanner = Callable[[str, str], Iterator[Span]]  # (text, text.lower()) -> spans to mask


def mask(kind: str) -> str:
    """What a match of `kind` is replaced with."""
    return f"[REDACTED:{kind}]"


def luhn(text: str) -> bool:
    """True when the digits of `text` are 13 to 19 long and pass the Luhn checksum."""
    digits = [ord(c) - 48 for c in text if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _word_char(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] == "_")


def _prefixed(kind: str, prefixes: tuple[str, ...], pattern: str, *, fold: bool = False, group: int = 0) -> Scanner:
    """A token that starts with one of `prefixes` (at a word start) and continues as `pattern`.

    `group` is the part that gets masked, so `Bearer ` or a key name can stay readable.
    """
    regex = re.compile(pattern, re.IGNORECASE if fold else 0)

    def scan(text: str, lower: str) -> Iterator[Span]:
        hay = lower if fold else text
        for prefix in prefixes:
            index = hay.find(prefix)
            while index != -1:
                if not _word_char(text, index - 1):
                    match = regex.match(text, index)
                    if match is not None:
                        yield match.start(group), match.end(group), mask(kind)
                index = hay.find(prefix, index + 1)

    return scan


def _key_names() -> tuple[str, ...]:
    stems = (
        "api{}key",
        "access{}key",
        "secret{}key",
        "private{}key",
        "client{}secret",
        "access{}token",
        "auth{}token",
        "refresh{}token",
    )
    joined = (stem.format(sep) for stem in stems for sep in ("_", "-", ""))
    return (*joined, "secret", "token", "password", "passwd", "pwd")


_SECRET_KEYS = _key_names()
# After a hint: the rest of the key word, an optional closing quote, `:` or `=`, the value.
_ASSIGNMENT = re.compile(r"([A-Za-z]{0,5})[\"']?[ \t]*[:=][ \t]*[\"']?([^\s\"'&,;\[\]{}<>]{6,})")
_SECRET_HINTS = ("key", "secret", "token", "passw", "pwd")


def _secret_assignment(text: str, lower: str) -> Iterator[Span]:
    """The value in `api_key=...`, `"token": "..."`, `password: ...`; the key stays."""
    for hint in _SECRET_HINTS:
        index = lower.find(hint)
        while index != -1:
            found = _ASSIGNMENT.match(text, index + len(hint))
            if found is not None and _is_secret_key(lower, found.end(1)):
                yield found.start(2), found.end(2), mask("secret")
            index = lower.find(hint, index + 1)


def _is_secret_key(lower: str, key_end: int) -> bool:
    """A known key name ends at `key_end`, and does not merely end a longer word (`mytoken`)."""
    if not lower.endswith(_SECRET_KEYS, 0, key_end):
        return False
    for key in _SECRET_KEYS:
        if lower.endswith(key, 0, key_end):
            before = key_end - len(key) - 1
            return before < 0 or not lower[before].isalnum()
    return False


_EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def _email(text: str, lower: str) -> Iterator[Span]:
    at = text.find("@")
    while at != -1:
        domain = _EMAIL_DOMAIN.match(text, at)
        start = at
        while start > 0 and at - start < 64 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if domain is not None and start < at:
            yield start, domain.end(), mask("email")
        at = text.find("@", at + 1)


# Digit rules look only inside runs of digits and separators; the window around a run is
# widened by a little so their own boundary checks see the characters next to it.
_DROP_DIGITS = str.maketrans("", "", "0123456789")
_DIGIT_RUN = re.compile(r"\d[\d ().+-]{5,}\d")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)")
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}(?![\w-]|\.\d)"
    r"|(?<![\w.+-])(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)"
)
_IP = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w.]*\w)")


def _phone_digits(text: str) -> bool:
    return 7 <= sum(c.isdigit() for c in text) <= 15


# kind: (regex, the least digits a run needs to hold one, a check of the match)
_DIGIT_RULES: dict[str, tuple[re.Pattern[str], int, Callable[[str], bool] | None]] = {
    "card_number": (_CARD, 13, luhn),
    "phone": (_PHONE, 7, _phone_digits),
    "ip_address": (_IP, 4, None),
}


def _plausible(kind: str, run: str, digits: int, plus: bool) -> bool:
    """Cheap tests that spare most runs the regex: an IP has dots, a phone without + ten digits."""
    if kind == "ip_address":
        return run.count(".") >= 3
    if kind == "phone":
        return plus or digits >= 10
    return True


def _digits_scanner(kinds: Iterable[str]) -> Scanner:
    """One pass over the digit runs for every digit rule in `kinds`."""
    rules = [_DIGIT_RULES[kind] + (kind,) for kind in kinds]

    def scan(text: str, lower: str) -> Iterator[Span]:
        for run in _DIGIT_RUN.finditer(text):
            chars = run.group()
            digits = len(chars) - len(chars.translate(_DROP_DIGITS))
            start, end = run.span()
            plus = "+" in text[start - 2 if start > 1 else 0 : start]
            for regex, least, check, kind in rules:
                if digits < least or not _plausible(kind, chars, digits, plus):
                    continue
                for match in regex.finditer(text, start - 2 if start > 1 else 0, end + 2):
                    if check is None or check(match.group()):
                        yield match.start(), match.end(), mask(kind)

    return scan


_B64 = r"[A-Za-z0-9_-]"

RULES: dict[str, Scanner] = {
    "private_key": _prefixed(
        "private_key", ("-----BEGIN ",), r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    ),
    "jwt": _prefixed("jwt", ("eyJ",), rf"eyJ{_B64}{{8,}}\.{_B64}{{8,}}\.{_B64}{{8,}}"),
    "bearer_token": _prefixed("bearer_token", ("bearer",), r"bearer[ \t]+([A-Za-z0-9._~+/=-]{8,})", fold=True, group=1),
    "basic_auth": _prefixed("basic_auth", ("basic",), r"basic[ \t]+([A-Za-z0-9+/]{12,}={0,2})", fold=True, group=1),
    # OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-...) keys.
    "api_key": _prefixed("api_key", ("sk-",), rf"sk-{_B64}{{16,}}"),
    "aws_access_key": _prefixed(
        "aws_access_key", ("AKIA", "ASIA", "ABIA", "ACCA"), r"[A-Z]{4}[A-Z0-9]{16}(?![A-Za-z0-9])"
    ),
    "github_token": _prefixed(
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    "slack_token": _prefixed(
        "slack_token", ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-"), r"xox[a-z]-[A-Za-z0-9-]{10,}"
    ),
    "google_api_key": _prefixed("google_api_key", ("AIza",), rf"AIza{_B64}{{35}}"),
    "stripe_key": _prefixed(
        "stripe_key", ("sk_live_", "sk_test_", "rk_live_", "rk_test_"), r"[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    ),
    "huggingface_token": _prefixed("huggingface_token", ("hf_",), r"hf_[A-Za-z0-9]{30,}"),
    "secret": _secret_assignment,
    "email": _email,
}
DEFAULT_KINDS = (*RULES, *_DIGIT_RULES)


class Redactor:
    """Masks sensitive text as `[REDACTED:<kind>]`: the built-in rules plus user regexes.

    `kinds` picks built-in rules by name (default: all of RULES); `extra_patterns` are
    Python regexes whose matches become `[REDACTED:custom]`; `enabled=False` passes text
    through untouched. A bad pattern raises ValueError naming it.
    """

    def __init__(
        self, *, enabled: bool = True, extra_patterns: Iterable[str] = (), kinds: Iterable[str] = DEFAULT_KINDS
    ) -> None:
        kinds = tuple(kinds)
        unknown = [kind for kind in kinds if kind not in DEFAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown redaction rule {unknown[0]!r}; known: {', '.join(DEFAULT_KINDS)}")
        self.enabled = enabled
        scanners = [RULES[kind] for kind in kinds if kind in RULES]
        digit_kinds = [kind for kind in kinds if kind in _DIGIT_RULES]
        if digit_kinds:
            scanners.append(_digits_scanner(digit_kinds))
        self._scanners = tuple(scanners)
        self._extra = tuple(compile_pattern(pattern) for pattern in extra_patterns)

    def redact(self, text: str) -> str:
        """`text` with every sensitive match masked."""
        if not self.enabled or not text:
            return text
        lower = text.lower()
        spans = [span for scan in self._scanners for span in scan(text, lower)]
        for pattern in self._extra:
            spans.extend((m.start(), m.end(), mask("custom")) for m in pattern.finditer(text) if m.end() > m.start())
        return _apply(text, spans) if spans else text

    def redact_value(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string in it (keys aside) redacted."""
        if not self.enabled:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.redact_value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(item) for item in value]
        return value


def _apply(text: str, spans: list[Span]) -> str:
    """Replace the spans; where two overlap, the one that starts first (then the longer) wins."""
    spans.sort(key=lambda span: (span[0], -span[1]))
    out: list[str] = []
    done = 0
    for start, end, replacement in spans:
        if start < done:
            continue
        out.append(text[done:start])
        out.append(replacement)
        done = end
    out.append(text[done:])
    return "".join(out)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A user redaction regex, or ValueError naming the pattern and what is wrong with it."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"redact_patterns: invalid regex {pattern!r}: {exc}") from None
    if compiled.fullmatch(""):
        raise ValueError(f"redact_patterns: regex {pattern!r} matches the empty string")
    return compiled
