"""The state file's tables: one sqlitedict table (`key TEXT PRIMARY KEY, value BLOB`, JSON
values) per kind of record. This is the one place that names them; `docs/state.md` explains
them to an operator (`sqlite3 state.sqlite .tables`).

Schema versions (`PRAGMA user_version`): 0 with a table `state` is 0.1.0 and 0.2.0 (one table,
one-letter key prefixes); 2 named the tables; 3 adds `notes`, `jobs` and `episodes` (job
sessions, the job inventory, jobs that stop running). `bot.store.migrate` brings either to 3.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = 3


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    fields: str
    writer: str
    retention: str
    legacy: str  # the key prefix of this kind of record in 0.2.0's single table ("": none)


ANNOUNCED = "announced"
PENDING = "pending"
HELD = "held"
PROBLEMS = "problems"
ALERTS = "alerts"
REDRAWS = "redraws"
RECOVERIES = "recoveries"
CATCHUPS = "catchups"
MUTES = "mutes"
CHECKPOINTS = "checkpoints"
FACTS = "facts"
NOTES = "notes"
JOBS = "jobs"
EPISODES = "episodes"

TABLES = (
    Table(ANNOUNCED, "session UID",
          "c channel, ts message, at epoch, r result, why (recorded without a message)",
          "record_sent, record_silently", "past retention and every query window", "a:"),
    Table(PENDING, "session UID", "s session, c channel, t marked at, l listed late by (s)",
          "mark_pending, before each post", "recorded as sent; its server gone", "p:"),
    Table(HELD, "session UID", "s session", "the retry hold",
          "announced, or fixed by a retry; its server gone", "h:"),
    Table(PROBLEMS, "identity: JSON [em, type, job, vm]", "Problem fields", "lifecycle",
          "no news for retention", "P:"),
    Table(ALERTS, "Slack message ts",
          "c channel, s sessions, part, part_count, late_by, kind, f folded, ack, gone, reopened, "
          "copies",
          "lifecycle, Acknowledge", "past retention, unless its problem is open", "M:"),
    Table(REDRAWS, "Slack message ts", "c channel", "lifecycle, Acknowledge",
          "redrawn, or the alert is gone", "u:"),
    Table(RECOVERIES, "session UID of the Success", "p problem id, s the Success",
          "lifecycle, before the reply", "replied, or its problem closed", "q:"),
    Table(CATCHUPS, "attempt id", "u UIDs, t at, e server, c channel", "before a catch-up post",
          "adopted or forgotten next poll; retention", "C:"),
    Table(MUTES, "mute id", "Mute fields", "/veeam mute, the Mute buttons",
          "unmuted; expired for retention", "x:"),
    Table(CHECKPOINTS, "session type[@em]", "ISO time EM was read up to", "each poll",
          "its server gone", "m:checkpoint:"),
    Table(FACTS, "name[@em]",
          "floor:<type>, last_poll, source, channel-id:<name>, digest:*, last_prune",
          "polls, the digest, retention", "its server gone; else never", "m:"),
    Table(NOTES, "job session UID", "m FailureMessage, t noted at (epoch)",
          "the job-session stage", "past retention", ""),
    Table(JOBS, "JSON [em, job UID]",
          "Job fields, seen (epoch last listed), enabled_before (schedule at the last refresh)",
          "the inventory refresh", "not listed by EM for retention", ""),
    Table(EPISODES, "JSON [em, kind, job UID]",
          "kind stale|disabled|running, c channel, ts alert, opened, closed, detail",
          "the stale stage", "closed for retention", ""),
)  # fmt: skip
NAMES = frozenset(t.name for t in TABLES)


def create_sql(table: str) -> str:
    """The table as sqlitedict makes it, so that `SqliteDict(path, tablename=…)` reads it."""
    assert table in NAMES, table
    return f'CREATE TABLE IF NOT EXISTS "{table}" (key TEXT PRIMARY KEY, value BLOB)'
