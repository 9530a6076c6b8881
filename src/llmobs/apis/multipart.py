"""Find a few small text fields of a multipart/form-data body (RFC 7578) without parsing it.

The proxy reads only `model` (and `stream`, `response_format`) from an upload; the rest, the
files above all, goes upstream untouched. So this is a scanner, not a parser: it walks the
parts by their delimiter lines (`CRLF--boundary`, RFC 2046 §5.1.1) with `bytes.find`, reads
each part's header block, and slices out a wanted field's value only when it is at most
MAX_VALUE bytes. A file's bytes are searched for the next delimiter (~0.1 ms per MB), never
copied or decoded. A body that cannot be walked to its closing delimiter (no boundary, a
truncated body, a part without a header block) yields no fields at all: the proxy forwards
it as it came and the upstream judges it. The body itself is already bounded by the proxy's
max_body_bytes: it is read, within that limit, before anyone scans it.
"""

from __future__ import annotations

import re

WANTED = frozenset({"model", "stream", "response_format"})
MAX_VALUE = 256  # bytes: a longer value is no model name or flag; ignored
MAX_HEADERS = 4096  # bytes of one part's header block; a part with more is skipped
MAX_BOUNDARY = 70  # RFC 2046 §5.1.1
_MAX_PADDING = 64  # transport padding (spaces, tabs) allowed after a delimiter

_CRLF = b"\r\n"
_BLANK = b"\r\n\r\n"
# `; name=value` or `; name="quoted \" value"` (RFC 9110 parameters, RFC 7578 §4.2).
_PARAM = re.compile(rb';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\\r\n]|\\.)*"|[^;\s"]*)')
_ESCAPE = re.compile(rb"\\(.)")


def boundary(content_type: bytes) -> bytes | None:
    """The boundary of a `multipart/form-data` content type; None for any other, or a bad one."""
    kind, _, rest = content_type.partition(b";")
    if kind.strip().lower() != b"multipart/form-data":
        return None
    value = _params(b";" + rest).get(b"boundary")
    if value is None or not 1 <= len(value) <= MAX_BOUNDARY:
        return None
    return value


def form_fields(content_type: bytes, body: bytes, wanted: frozenset[str] = WANTED) -> dict[str, str]:
    """The `wanted` text fields of a well-formed form body (the first of each), else {}."""
    mark = boundary(content_type)
    if mark is None:
        return {}
    dash = b"--" + mark
    names = {name.encode(): name for name in wanted}
    found = _first_delimiter(body, dash)
    if found is None:
        return {}
    line_end, close = found
    fields: dict[str, str] = {}
    while not close:
        following = _next_delimiter(body, dash, line_end)
        if following is None:
            return {}  # truncated: no closing delimiter
        end, next_line_end, next_close = following
        head_end = body.find(_BLANK, line_end, end + 2)
        if head_end < 0:
            return {}  # a part without the blank line that ends its headers
        if head_end - line_end <= MAX_HEADERS:
            name = _field_name(body[line_end + 2 : head_end])
            start = head_end + 4  # past `end` when a part ends right after its headers: an empty value
            if name in names and names[name] not in fields and end - start <= MAX_VALUE:
                try:
                    fields[names[name]] = body[start:end].decode("utf-8")
                except UnicodeDecodeError:
                    pass
        line_end, close = next_line_end, next_close
    return fields


def _first_delimiter(body: bytes, dash: bytes) -> tuple[int, bool] | None:
    """The first delimiter line, at the start of the body or after a preamble."""
    if body.startswith(dash):
        return _line_end(body, len(dash))
    found = _next_delimiter(body, dash, 0)
    return None if found is None else found[1:]


def _next_delimiter(body: bytes, dash: bytes, start: int) -> tuple[int, int, bool] | None:
    """The next `CRLF--boundary` line from `start`: (where its CRLF is, where its line ends, is it the close).

    `CRLF--boundary` followed by anything but `--` or padding and CRLF is not a delimiter
    (a boundary that is a prefix of other text); the search goes on past it.
    """
    needle = _CRLF + dash
    at = body.find(needle, start)
    while at >= 0:
        line = _line_end(body, at + len(needle))
        if line is not None:
            return at, line[0], line[1]
        at = body.find(needle, at + 1)
    return None


def _line_end(body: bytes, after: int) -> tuple[int, bool] | None:
    """What follows `--boundary` at `after`: `--` (the close) or padding and CRLF; None otherwise."""
    if body.startswith(b"--", after):
        return after + 2, True
    at = after
    stop = min(len(body), after + _MAX_PADDING)
    while at < stop and body[at] in b" \t":
        at += 1
    return (at, False) if body.startswith(_CRLF, at) else None


def _field_name(headers: bytes) -> bytes | None:
    """The name of a text field from a part's headers; None for a file or no form-data name."""
    for line in headers.split(_CRLF):
        key, colon, value = line.partition(b":")
        if not colon or key.strip().lower() != b"content-disposition":
            continue
        kind, _, rest = value.partition(b";")
        if kind.strip().lower() != b"form-data":
            return None
        params = _params(b";" + rest)
        if b"filename" in params or b"filename*" in params:
            return None
        return params.get(b"name")
    return None


def _params(text: bytes) -> dict[bytes, bytes]:
    """Header parameters by lower-case name (the first of each), quoted values unescaped."""
    out: dict[bytes, bytes] = {}
    for name, value in _PARAM.findall(text):
        if value.startswith(b'"'):
            value = _ESCAPE.sub(rb"\1", value[1:-1])
        out.setdefault(name.lower(), value)
    return out
