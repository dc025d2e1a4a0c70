"""Local append-only spool for settlements Redis could not take.

Each process appends to its own file (``settle-<pid>.jsonl``), one JSON object
per line, flushed per write. Replay claims a file by renaming it (atomic, so
two workers never replay the same file), re-runs each settlement — the settle
script is idempotent by request id, so a record that did reach Redis before a
timeout is not counted twice — and deletes the file only when every line went
through. Lines that fail again are appended back to the live spool.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import monotonic
from typing import Any

import orjson


class Spool:
    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.dir / f"settle-{os.getpid()}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        line = orjson.dumps(entry) + b"\n"
        with self._lock, open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def extend(self, entries: list[dict[str, Any]]) -> None:
        """Append many entries with one fsync (the replication guard spools a burst at once)."""
        if not entries:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        with self._lock, open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def pending(self) -> int:
        n = 0
        for p in self._files():
            with open(p, "rb") as f:
                n += sum(1 for line in f if line.strip())
        return n

    def _files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if p.name.startswith("settle-") and ".jsonl" in p.name)

    async def replay(self, apply: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
        """Apply every spooled entry; returns how many went through. ``apply`` raises on failure."""
        done = 0
        for p in self._files():
            claimed = p.with_name(f"{p.name}.replaying-{os.getpid()}")
            if ".replaying-" in p.name:
                if _pid_alive(int(p.name.rsplit("-", 1)[1])):
                    continue  # someone else is on it
                claimed = p
            else:
                try:
                    os.rename(p, claimed)
                except OSError:
                    continue
            with open(claimed, "rb") as f:
                lines = [line for line in f if line.strip()]
            failed: list[bytes] = []
            for i, line in enumerate(lines):
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn last line from a crash mid-write; nothing to settle
                try:
                    await apply(entry)
                    done += 1
                except Exception:  # noqa: BLE001 - keep the rest for the next replay
                    failed.extend(lines[i:])
                    break
            if failed:
                self.dir.mkdir(parents=True, exist_ok=True)
                with self._lock, open(self.path, "ab") as f:
                    f.writelines(failed)
                    f.flush()
                    os.fsync(f.fileno())
            claimed.unlink(missing_ok=True)
            if failed:
                break
        return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def entry(keys: list[str], args: list[Any]) -> dict[str, Any]:
    """A settle script call as the spool stores it (JSON: the record's bytes as text)."""
    return {"keys": keys, "args": [a.decode() if isinstance(a, bytes) else a for a in args]}


class RecentSettles:
    """Settles acknowledged in the last ``window_s`` seconds, for the replication guard: a master
    that dies can take its last acknowledged writes with it. ``drain`` hands them to the spool.

    Kept as the script call's own keys and args: a spool entry is built only for the few a failure drains."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._q: deque[tuple[float, list[str], list[Any]]] = deque()

    def add(self, keys: list[str], args: list[Any]) -> None:
        if self.window_s <= 0:
            return
        now = monotonic()
        q = self._q
        q.append((now, keys, args))
        cutoff = now - self.window_s
        while q[0][0] < cutoff:
            q.popleft()

    def drain(self) -> list[dict[str, Any]]:
        cutoff = monotonic() - self.window_s
        out = [entry(k, a) for t, k, a in self._q if t >= cutoff]
        self._q.clear()
        return out
