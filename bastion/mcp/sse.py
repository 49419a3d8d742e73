"""Server-Sent Events from an upstream, parsed in linear time with bounded memory. Pure.

The WHATWG event-stream format: lines end with CRLF, LF or a lone CR; a blank line ends an
event; ``field: value`` lines (one optional space after the colon), ``:comment`` lines. The
gateway parses every event an upstream streams (to tag event ids, filter list results and
decide what the upstream asks of the client) and writes each one back in one canonical form
(LF endings), so a client never sees a framing the gateway did not parse.

Each chunk is scanned once (the line ends are found by a compiled pattern over the new bytes
only), so a line that never ends costs linear time; a line or an event over
``max_event_bytes`` raises ``SseTooLarge`` instead of growing without bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_EVENT_BYTES", "SseEvent", "SseParser", "SseTooLarge", "encode_event"]

MAX_EVENT_BYTES = 8 * 1024 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")


class SseTooLarge(ValueError):
    """An event (or a line) longer than the parser's limit."""


@dataclass(slots=True)
class SseEvent:
    """One event as (field, value) lines in order; a comment has the field ``b""``."""

    lines: list[tuple[bytes, bytes]]

    @property
    def data(self) -> bytes | None:
        """The event's data (its ``data`` values joined with LF), or None without any."""
        values = [v for f, v in self.lines if f == b"data"]
        return b"\n".join(values) if values else None

    def with_data(self, data: bytes) -> SseEvent:
        """This event with its data replaced (one ``data`` line per line of ``data``)."""
        out: list[tuple[bytes, bytes]] = []
        placed = False
        for f, v in self.lines:
            if f != b"data":
                out.append((f, v))
            elif not placed:
                out.extend((b"data", part) for part in data.split(b"\n"))
                placed = True
        return SseEvent(out)


def _split_field(line: bytes) -> tuple[bytes, bytes]:
    if line.startswith(b":"):
        return b"", line[1:]
    name, colon, value = line.partition(b":")
    if not colon:
        return name, b""
    return name, value[1:] if value.startswith(b" ") else value


def encode_event(event: SseEvent) -> bytes:
    """The event in canonical form: ``field: value`` lines ending in LF, then a blank line."""
    out = []
    for name, value in event.lines:
        out.append(b":" + value if not name else name + b": " + value if value else name)
    return b"\n".join(out) + b"\n\n"


class SseParser:
    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._partial: list[bytes] = []  # pieces of the line not yet ended
        self._partial_size = 0
        self._lines: list[tuple[bytes, bytes]] = []  # the event being read
        self._event_size = 0
        self._after_cr = False  # the last chunk ended with CR: an LF next is part of it

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by ``chunk``."""
        events: list[SseEvent] = []
        start = 0
        if self._after_cr and chunk.startswith(b"\n"):
            start = 1
        self._after_cr = False
        for match in _LINE_END.finditer(chunk, start):
            piece = chunk[start:match.start()]
            if self._partial:
                self._partial.append(piece)
                line = b"".join(self._partial)
                self._partial, self._partial_size = [], 0
            else:
                line = piece
            start = match.end()
            if match.group() == b"\r" and start == len(chunk):
                self._after_cr = True
            self._line(line, events)
        rest = chunk[start:]
        if rest:
            self._partial.append(rest)
            self._partial_size += len(rest)
            if self._partial_size + self._event_size > self.max_event_bytes:
                raise SseTooLarge(f"an event is longer than {self.max_event_bytes} bytes")
        return events

    def _line(self, line: bytes, events: list[SseEvent]) -> None:
        if not line:
            if self._lines:
                events.append(SseEvent(self._lines))
                self._lines, self._event_size = [], 0
            return
        self._event_size += len(line) + 1
        if self._event_size > self.max_event_bytes:
            raise SseTooLarge(f"an event is longer than {self.max_event_bytes} bytes")
        self._lines.append(_split_field(line))

    def close(self) -> SseEvent | None:
        """At the end of the stream: an event that was never ended by a blank line, if any.
        (The WHATWG parser discards it; the caller decides.)"""
        if self._partial:
            self._lines.append(_split_field(b"".join(self._partial)))
            self._partial, self._partial_size = [], 0
        lines, self._lines, self._event_size = self._lines, [], 0
        return SseEvent(lines) if lines else None
