"""Opening the state file: what an error met while opening it means, and the check that an
existing file is a sound database this process can lock for writing.

A missing file is a first run. Only a corrupt file ("file is not a database", "malformed", a
failed quick_check) is moved aside (`.corrupt-<time>`) for a fresh start; a lock held by
another program is waited out (`busy_timeout`) and then refused with exit 75, like a
permission or I/O error; a path that cannot be created exits 78 (`bot.store.lock`).
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from pathlib import Path

from bot.errors import StateError
from bot.store.schema import NAMES

log = logging.getLogger(__name__)
LEGACY = "state"  # the one table of 0.1.0 and 0.2.0


# How long opening the state file waits for another program's lock on it (sqlite3's
# busy timeout), before the command gives up with exit 75.
BUSY_TIMEOUT = 5.0
# What sqlite says of a file that is not, or no longer, a database: only these move it aside.
CORRUPT = ("file is not a database", "database disk image is malformed", "quick_check: ")


def open_trouble(exc: BaseException) -> str:
    """What an error met while opening the state file means: "corrupt" (move it aside and
    start afresh), "locked" (another program holds it) or "unavailable" (permissions, I/O,
    a folder in its place). Only "corrupt" ever leads to a first run."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.DatabaseError) and any(c in text for c in CORRUPT):
        return "corrupt"
    if "locked" in text or "busy" in text:
        return "locked"
    return "unavailable"


def check(path: Path, busy_timeout: float) -> None:
    """Raise what is wrong with an existing state file, if anything: it must be a sound
    sqlite database (quick_check) that this process can lock for writing."""
    conn = sqlite3.connect(path, timeout=busy_timeout)
    try:
        ok = conn.execute("PRAGMA quick_check").fetchone()
        if not ok or ok[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {ok[0] if ok else 'no answer'}")
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for name in sorted(names & (NAMES | {LEGACY})):  # a row of each: unreadable pages show
            conn.execute(f'SELECT key, value FROM "{name}" LIMIT 1').fetchall()
        conn.execute("BEGIN IMMEDIATE")  # the write lock: a program holding it is waited out
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def refuse(path: Path, exc: BaseException, kind: str, busy_timeout: float) -> None:
    """Raise the StateError for a state file that is locked or unavailable (`kind`, from
    `open_trouble`); return for a corrupt one."""
    if kind == "locked":
        raise StateError(
            f"the state file {path} is locked by another program ({exc}, waited "
            f"{busy_timeout:g}s); close what holds it (an sqlite3 shell, a backup "
            "agent) and the next run goes on where this one would have"
        ) from None
    if kind == "unavailable":
        raise StateError(
            f"cannot read the state file {path}: {exc}; check that it is a file "
            "the bot may read and write"
        ) from None


def move_aside(path: Path, exc: BaseException, now: datetime) -> None:
    """A corrupt state file is renamed `.corrupt-<time>`; the bot starts as on a first run."""
    aside = path.with_name(f"{path.name}.corrupt-{now:%Y%m%dT%H%M%SZ}")
    path.rename(aside)
    log.warning(
        "state store %s is corrupt; moved it to %s and starting as on a first run "
        "(alerts of the last initial_lookback may be announced again): %s",
        path,
        aside,
        exc,
    )
