"""Fetch a /metrics page with the standard library, turning every failure into one readable line."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:4000/metrics"
TIMEOUT = 2.0  # seconds; a refresh a second cannot wait long


class ScrapeError(Exception):
    """The scrape failed; the message says why, and never contains the token."""


def metrics_url(text: str) -> str:
    """The /metrics URL for what the user typed: a full URL, a base URL, or `host:port`."""
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"URL must be an http(s) URL, got {text!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/metrics"):
        path += "/metrics"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch(url: str, token: str | None = None, timeout: float = TIMEOUT) -> str:
    """The page's text; raises ScrapeError."""
    headers = {"Accept": "text/plain", "User-Agent": "llmobs-top"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response and its socket
        raise ScrapeError(_http_error(exc.code, exc.reason, token)) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise ScrapeError(f"timed out after {timeout:g}s") from None
        raise ScrapeError(f"unreachable: {exc.reason}") from None
    except TimeoutError:
        raise ScrapeError(f"timed out after {timeout:g}s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ScrapeError(f"scrape failed: {exc.__class__.__name__}: {exc}") from None
    return body.decode("utf-8", "replace")


def _http_error(code: int, reason: object, token: str | None) -> str:
    if code == 401:
        given = "wrong admin token" if token else "an admin token is required"
        return f"HTTP 401: {given} (--token or LLMOBS_ADMIN_TOKEN)"
    return f"HTTP {code} {reason}"
