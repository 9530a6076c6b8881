"""A pure, incremental Server-Sent Events decoder (WHATWG HTML, "event stream interpretation").

It never does I/O and keeps the raw bytes of every event, so a caller can relay
events unchanged or leave one out. With `max_event_bytes`, memory stays bounded on a
malformed stream (one that never ends an event, or a line): an event over the limit is
dropped whole, as an empty event with no raw bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


def _line_ends(buf: bytes | bytearray, start: int) -> Iterator[tuple[int, int]]:
    """(where the line end starts, where it ends) for each line end in buf[start:]."""
    if buf.find(b"\r", start) < 0:  # the usual stream: LF only, found at memchr speed
        at = buf.find(b"\n", start)
        while at >= 0:
            yield at, at + 1
            at = buf.find(b"\n", at + 1)
        return
    for match in _LINE_END.finditer(buf, start):
        yield match.start(), match.end()


class Event(NamedTuple):
    """One event block. `data` is the joined data lines; `raw` is its wire bytes.

    A block with empty `data` (comments, a stray blank line) is not an event to a
    client; it is still returned so that the raw bytes of all blocks add up to the input.
    """

    data: bytes
    event: str = "message"
    raw: bytes = b""
    tail: bool = False  # the LF of a CRLF whose CR ended the previous event in an earlier chunk


class SSEDecoder:
    """Feed bytes in any chunking; get complete events out."""

    __slots__ = (
        "_buf",
        "_raw",
        "_data",
        "_event",
        "_skip_lf",
        "_started",
        "_taken",
        "_oversized",
        "_skip_line",
        "_cr_ended_event",
        "max_event_bytes",
        "dropped",
    )

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._buf = bytearray()  # bytes not yet split into lines
        self._raw = bytearray()  # raw bytes of the event being built (complete lines only)
        self._data: list[bytes] = []
        self._event = ""
        self._skip_lf = False  # the last chunk ended in CR: a leading LF belongs to that line end
        self._cr_ended_event = False  # ... and that CR ended an event, already returned
        self._started = False
        self._taken = 0  # leading bytes of _buf already handed out by take_pending()
        self._oversized = False  # the current event went over max_event_bytes: drop it
        self._skip_line = False  # the current line went over max_event_bytes: drop it
        self.max_event_bytes = max_event_bytes
        self.dropped = 0  # events over max_event_bytes, dropped whole so far

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode `chunk`, returning the events it completed."""
        if not chunk:
            return []
        if (
            # The common case: nothing pending, and the chunk is whole LF-ended events.
            self._started
            and not self._skip_lf
            and not self._buf
            and not self._raw
            and not self._data
            and not self._oversized
            and not self._skip_line
            and chunk.endswith(b"\n\n")
            and chunk[:1] != b"\n"
            and b"\r" not in chunk
            and b"\n\n\n" not in chunk
            and (self.max_event_bytes is None or len(chunk) <= self.max_event_bytes)
        ):
            return self._whole_events(chunk)
        events: list[Event] = []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if self._cr_ended_event:
                    # The rest of an event returned earlier: a caller that left that event
                    # out leaves this out too.
                    events.append(Event(data=b"", event="", raw=b"\n", tail=True))
                else:
                    self._raw += b"\n"
            self._cr_ended_event = False
            if not chunk:
                return events
        # Linear in the bytes fed: a long unfinished line is appended to, never copied whole
        # again, and only the new bytes are searched for line ends (a CR ending the old bytes
        # was already taken as a line end, see _skip_lf).
        buf: bytes | bytearray
        if self._buf:
            scan_from = len(self._buf)
            self._buf += chunk
            buf = self._buf
        else:
            scan_from = 0
            buf = chunk
        if not self._started:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = bytearray(buf)
                return events
            self._started = True
            scan_from = 0
            if buf.startswith(_BOM):
                self._raw += _BOM
                buf = buf[3:]
        pos = 0
        taken = self._taken
        blank = False
        for start, end in _line_ends(buf, scan_from):
            if end == len(buf) and buf[end - 1] == 0x0D:
                self._skip_lf = True  # a CRLF may be split across chunks
            line = bytes(buf[pos:start])
            if taken <= pos:
                self._raw += buf[pos:end]
            elif taken < end:
                self._raw += buf[taken:end]
            pos = end
            blank = not line and not self._skip_line
            if self._skip_line:
                self._skip_line = False  # the end of a line too long to keep; not a blank line
            elif line:
                self._field(line)
            else:
                events.append(self._dispatch())
        self._cr_ended_event = self._skip_lf and blank
        if buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        self._taken = max(0, taken - pos)
        if self.max_event_bytes is not None and len(self._raw) + len(self._buf) > self.max_event_bytes:
            self._overflow()
        return events

    def _whole_events(self, chunk: bytes) -> list[Event]:
        events = []
        for block in chunk[:-2].split(b"\n\n"):
            if b"\n" not in block and block[:5] == b"data:":  # one `data:` line
                data = block[6:] if block[5:6] == b" " else block[5:]
                events.append(Event(data, "message" if data else "", block + b"\n\n"))
                continue
            for line in block.split(b"\n"):
                self._field(line)
            self._raw += block + b"\n\n"
            events.append(self._dispatch())
        return events

    def take_pending(self) -> bytes:
        """Hand out the pending raw bytes now; they will not be part of any later event's raw."""
        out = self.pending
        self._raw.clear()
        self._taken = len(self._buf)
        return out

    def _overflow(self) -> None:
        self._oversized = True
        self.dropped += 1
        self._raw.clear()
        self._data.clear()
        if len(self._buf) > (self.max_event_bytes or 0):
            self._buf = bytearray()
            self._taken = 0
            self._skip_line = True

    def flush(self) -> list[Event]:
        """End of stream: an unterminated event is discarded, as the specification says."""
        self._buf = bytearray()
        self._raw.clear()
        self._data.clear()
        self._event = ""
        self._taken = 0
        self._oversized = self._skip_line = False
        return []

    @property
    def pending(self) -> bytes:
        """Raw bytes received but not yet part of a dispatched event (nor taken)."""
        return bytes(self._raw) + bytes(self._buf[self._taken :] if self._taken else self._buf)

    @property
    def pending_size(self) -> int:
        """len(self.pending), without copying."""
        return len(self._raw) + len(self._buf) - self._taken

    def _field(self, line: bytes) -> None:
        if line[0] == 0x3A or self._oversized:  # ":" starts a comment
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id" and "retry" do not matter to accounting; unknown fields are ignored.

    def _dispatch(self) -> Event:
        # Every blank line yields an Event so that the raw bytes of all events add up to the
        # input. One with empty data is not dispatched in the specification's sense.
        raw = bytes(self._raw)
        self._raw.clear()
        if self._oversized:
            self._oversized = False
            self._event = ""
            return Event(data=b"", event="", raw=b"")
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = Event(data=data, event=(self._event or "message") if data else "", raw=raw)
        self._data = []
        self._event = ""
        return event
