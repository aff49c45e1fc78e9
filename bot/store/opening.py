"""Opening the state file: what an error met while opening it means, and the check that an
existing file is a sound database this process can lock for writing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

TABLE = "state"


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
        try:
            conn.execute(f'SELECT key, value FROM "{TABLE}" LIMIT 1').fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
        conn.execute("BEGIN IMMEDIATE")  # the write lock: a program holding it is waited out
        conn.execute("ROLLBACK")
    finally:
        conn.close()
