"""Bringing a state file to this release's schema, in place, on first open.

A file of 0.1.0 or 0.2.0 (one table, `state`, with one-letter key prefixes) is first copied
to `state.sqlite.0.2.0.bak`, then moved into the named tables of `bot.store.schema` in one
transaction (a crash leaves it as it was), and one line is logged. A file of a newer schema
is refused: its reader is a later release.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

from bot.errors import StateError
from bot.store.opening import LEGACY
from bot.store.schema import CHECKPOINTS, FACTS, TABLES, VERSION, create_sql

log = logging.getLogger(__name__)
LEGACY_RELEASE = "0.2.0"


def _after(prefix: str) -> str:
    """The first key past every key that starts with `prefix` (a key range, not LIKE)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def backup_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{LEGACY_RELEASE}.bak")


def prepare(path: Path, busy_timeout: float) -> None:
    """Create this schema's tables in the state file, migrating an older layout first."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > VERSION:
            raise StateError(
                f"the state file {path} was written by a later release of the bot (schema "
                f"{version}, this one reads {VERSION}); run that release, or move the file "
                "aside to start afresh",
                exit_code=78,
            )
        if version == VERSION:
            return
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        conn.execute("BEGIN IMMEDIATE")  # no other program writes from here to the commit
        try:
            if LEGACY in names:
                _backup(path, backup_path(path))
            for table in TABLES:
                conn.execute(create_sql(table.name))
            moved = _move(conn) if LEGACY in names else 0
            conn.execute(f"PRAGMA user_version = {VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if LEGACY not in names and version:
            log.info("brought the state file %s from schema %d to %d (new tables)",
                     path, version, VERSION)  # fmt: skip
        if LEGACY in names:
            log.info(
                "migrated the state file %s from %s to schema %d (%d records in named "
                "tables); the file as it was is kept as %s",
                path, LEGACY_RELEASE, VERSION, moved, backup_path(path),
            )  # fmt: skip
    finally:
        conn.close()


def _backup(path: Path, to: Path) -> None:
    """The file as it is, byte for byte (the caller holds its write lock), in place only once
    complete."""
    part = to.with_name(to.name + ".part")
    shutil.copyfile(path, part)
    part.replace(to)


def _move(conn: sqlite3.Connection) -> int:
    """Each record of the legacy table into its own table, its key without the prefix; a key
    of no known kind goes to `facts` as it was, so nothing is lost."""
    total = int(conn.execute(f'SELECT COUNT(*) FROM "{LEGACY}"').fetchone()[0])
    ranges: list[tuple[str, str]] = []
    checkpoint = next(t.legacy for t in TABLES if t.name == CHECKPOINTS)
    for table in TABLES:
        if not table.legacy:  # a kind of record 0.2.0 did not have
            continue
        low, high = table.legacy, _after(table.legacy)
        where = "key >= ? AND key < ?"
        params: tuple[str, ...] = (low, high)
        if table.name == FACTS:  # m: holds the checkpoints too, which have their own table
            where += " AND NOT (key >= ? AND key < ?)"
            params += (checkpoint, _after(checkpoint))
        conn.execute(
            f'INSERT OR REPLACE INTO "{table.name}" (key, value) '
            f'SELECT substr(key, {len(low) + 1}), value FROM "{LEGACY}" WHERE {where}',
            params,
        )
        ranges.append((low, high))
    outside = " AND ".join("NOT (key >= ? AND key < ?)" for _ in ranges)
    conn.execute(
        f'INSERT OR REPLACE INTO "{FACTS}" (key, value) '
        f'SELECT key, value FROM "{LEGACY}" WHERE {outside}',
        tuple(x for r in ranges for x in r),
    )
    conn.execute(f'DROP TABLE "{LEGACY}"')
    return total
