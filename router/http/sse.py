"""Server-sent events: incremental decoder and encoders shared by client and server.

The decoder works on arbitrary byte chunks rather than ``readline`` because
aiohttp's line reader rejects lines over its high-water mark (128 KiB), and a
single chunk carrying a large tool call can exceed that.
"""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
_dumps = orjson.dumps


def encode(obj: Any) -> bytes:
    """One ``data:`` event for a JSON-serialisable object."""
    return b"data: " + _dumps(obj) + b"\n\n"


def encode_event(event: str, obj: Any) -> bytes:
    """A named event (Anthropic-style ``event: x`` + ``data: {...}``)."""
    return b"event: " + event.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"


class SSEDecoder:
    """Feed raw bytes, get back the ``data`` payload of every completed event.

    Follows the SSE framing rules that matter in practice: events end at a
    blank line, several ``data:`` lines join with ``\\n``, ``:`` lines are
    comments (OpenRouter keep-alives), ``\\r\\n`` line ends are accepted.
    ``event``/``id``/``retry`` fields are ignored except that the last event
    name is kept in ``.event`` for callers that care.
    """

    __slots__ = ("_buf", "_data", "event")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self.event: bytes | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        out: list[bytes] = []
        start = 0
        find = buf.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    out.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(b"data:"):
                v = line[5:]
                self._data.append(v[1:] if v.startswith(b" ") else v)
            elif line.startswith(b"event:"):
                self.event = line[6:].strip()
            # comments (":...") and other fields are ignored by design
        self._buf = buf[start:]
        return out

    def flush(self) -> list[bytes]:
        """Dispatch a final event that was not followed by a blank line (EOF)."""
        if self._buf:
            rest, self._buf = self._buf, b""
            out = self.feed(rest + b"\n\n")
        else:
            out = []
            if self._data:
                out.append(b"\n".join(self._data))
                self._data = []
        return out
