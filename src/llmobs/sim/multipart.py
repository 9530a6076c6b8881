"""A pure ``multipart/form-data`` parser (RFC 7578) for the uploads of the media endpoints.

No new runtime dependency: the stdlib ``email`` parser is line-oriented and not made for
binary parts, and ``python-multipart`` is not a dependency of llmobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass(frozen=True)
class Upload:
    """One file part."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    """The fields (text parts) and files (parts with a filename) of a form, by name, in order."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[Upload]] = field(default_factory=dict)


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


def boundary_of(content_type: str) -> str | None:
    """The boundary parameter of a multipart/form-data content type, else None."""
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    params = _params(";" + rest)
    return params.get("boundary") or None


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in _PARAM.findall(text):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[name.lower()] = value
    return out


def parse_form(body: bytes, boundary: str) -> Form:
    """Split a multipart/form-data body into fields and files."""
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise MultipartError("multipart body has no closing boundary")
    form = Form()
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise MultipartError("multipart part is not framed by CRLF")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("multipart part has no blank line after its headers")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = _params(";" + headers.get("content-disposition", "").partition(";")[2])
        field_name = disposition.get("name")
        if field_name is None:
            raise MultipartError("multipart part has no name")
        if "filename" in disposition:
            upload = Upload(disposition["filename"], headers.get("content-type", "application/octet-stream"), data)
            form.files.setdefault(field_name, []).append(upload)
        else:
            form.fields.setdefault(field_name, []).append(data.decode("utf-8", "replace"))
    return form
