"""The simulator's pure multipart/form-data parser."""

from __future__ import annotations

import httpx2
import pytest

from llmobs.sim.multipart import MultipartError, boundary_of, parse_form


def encoded(files: dict[str, tuple[str, bytes, str]], data: dict[str, str]) -> tuple[str, bytes]:
    """A body as httpx encodes it, so the parser is checked against a real client's framing."""
    request = httpx2.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def test_fields_and_binary_files_survive_crlf_and_boundary_like_bytes() -> None:
    payload = b"\r\n--\r\n\x00\xff" * 100
    content_type, body = encoded({"file": ("a b.wav", payload, "audio/wav")}, {"model": "whisper-1", "n": "2"})
    boundary = boundary_of(content_type)
    assert boundary is not None
    form = parse_form(body, boundary)
    assert form.fields == {"model": ["whisper-1"], "n": ["2"]}
    (upload,) = form.files["file"]
    assert (upload.filename, upload.content_type, upload.data) == ("a b.wav", "audio/wav", payload)


def test_repeated_names_keep_their_order() -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image[]"; filename="1.png"\r\n\r\none\r\n'
        b'--b\r\nContent-Disposition: form-data; name="image[]"; filename="2.png"\r\n\r\ntwo\r\n--b--\r\n'
    )
    assert [f.data for f in parse_form(body, "b").files["image[]"]] == [b"one", b"two"]


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", "abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a;b"', "a;b"),
        ("application/json", None),
        ("multipart/form-data", None),
    ],
)
def test_boundary_of(content_type: str, boundary: str | None) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "body",
    [
        b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n',  # no closing boundary
        b"--b\r\nContent-Disposition: form-data\r\n\r\n1\r\n--b--",  # no name
        b'--b\r\nContent-Disposition: form-data; name="x"\r\n1\r\n--b--',  # no blank line
    ],
)
def test_malformed_bodies_raise(body: bytes) -> None:
    with pytest.raises(MultipartError):
        parse_form(body, "b")
