"""One bot process per state file, through a `filelock` lock held for the process's life.

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
