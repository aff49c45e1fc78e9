"""Locks on the state: one bot process per state file (`StateLock`, through `filelock`,
held for the process's life), and one writer at a time within it (`WriterLock`).

Two processes on one state file would both mark, post and record the same sessions: each
alert could go out twice. The lock file sits beside the state file; the holder's process
ID and command go into a second file, since the lock file itself is truncated by every
process that tries to take it. The operating system releases the lock when the process
ends, however it ends, so a killed bot never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from bot.errors import StateError


class StateLocked(StateError):
    """Another bot process holds the state file (exit 75)."""


class StateLock:
    def __init__(self, state_path: str | Path) -> None:
        self.state_path = Path(state_path)
        self.holder_file = self.state_path.with_name(self.state_path.name + ".pid")
        self._lock = FileLock(str(self.state_path) + ".lock", timeout=0)

    def acquire(self, now: datetime) -> None:
        """Take the lock at once, or raise StateLocked naming the process that holds it."""
        folder = self.state_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"cannot create the state folder {folder}: {exc.strerror or exc}; "
                "set BOT_STATE_PATH to a path the bot may create",
                exit_code=78,
            ) from None
        try:
            self._lock.acquire()
        except Timeout:
            raise StateLocked(self._held_by()) from None
        except OSError as exc:
            raise StateError(
                f"cannot take the lock file {self._lock.lock_file}: {exc.strerror or exc}; "
                "check the permissions of the state folder"
            ) from None
        holder = {"pid": os.getpid(), "since": now.isoformat(), "command": _command()}
        self.holder_file.write_text(json.dumps(holder), encoding="utf-8")

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                self.holder_file.unlink()
            self._lock.release()

    def _held_by(self) -> str:
        try:
            holder = json.loads(self.holder_file.read_text(encoding="utf-8"))
            who = f"process {holder['pid']} ({holder['command']}, since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        return (
            f"the state file {self.state_path} is in use by {who}; run one bot per state "
            "file (BOT_STATE_PATH)"
        )


def _command() -> str:
    args = [a for a in sys.argv[1:] if not a.startswith("-")][:1]
    return " ".join(["python -m bot", *args])


class WriterLock:
    """One writer of the state at a time, within the process: the polls of every server,
    redraws, retention, the buttons, mutes and the digest's records all hold it while they
    read and change the store.

    Re-entrant. `paused()` (and `sleep()`) let the others in while the holder only waits
    (Slack pacing, a Retry-After, backoff), and take it back after: a button click is never
    queued behind a long delivery. Whoever pauses must read again what it depends on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return
        self._lock.acquire()
        self._owner, self._depth = me, 1

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("release of a WriterLock this thread does not hold")
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        """Whether this thread holds it."""
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Let go while the body runs (it must not touch the store), if this thread holds it."""
        if not self.held:
            yield
            return
        depth, self._depth, self._owner = self._depth, 0, None
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()
            self._owner, self._depth = threading.get_ident(), depth

    def sleep(self, seconds: float) -> None:
        """Wait without holding the lock (Slack pacing and backoff call this)."""
        with self.paused():
            time.sleep(seconds)
