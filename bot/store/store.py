"""The bot's state: one sqlite file with one sqlitedict table per kind of record
(`bot.store.schema`), JSON values (never pickle), explicit commits. Reads and range work run
as SQL on sqlitedict's own connection, batched, since the dict interface reads one key at a
time and has no ranges.

Opening, and what a locked, unreadable or corrupt file leads to: `bot.store.opening`. A
file of 0.2.0 is migrated in place (`bot.store.migrate`).

Writers: every change goes through `Store.lock` (a `WriterLock`): polls, redraws,
retention, buttons, mutes, the digest. Retention runs once a day (`Pipeline.prune`).

The layout for operators is in `docs/state.md`; `bot.store.schema` is its source.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from bot.errors import StateError
from bot.models import TaskSession, iso_z
from bot.store.codec import Pending, scoped, session_from_json, session_to_json
from bot.store.lock import StateLock, WriterLock
from bot.store.migrate import prepare
from bot.store.opening import BUSY_TIMEOUT, check, move_aside, open_trouble, refuse
from bot.store.schema import (
    ALERTS,
    ANNOUNCED,
    CATCHUPS,
    CHECKPOINTS,
    EPISODES,
    FACTS,
    HELD,
    MUTES,
    NAMES,
    NOTES,
    PENDING,
    PROBLEMS,
)
from bot.veeam.fields import parse_time

log = logging.getLogger(__name__)
_ROWS = 400  # rows per statement: 800 parameters, under old SQLite's limit of 999


class Store:
    """Single-process state store. Call `commit()` to make writes durable."""

    def __init__(
        self, path: str | Path, *, now: datetime, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        # Held by whoever changes the state (polls, buttons, mutes, the digest, redraws).
        self.lock = WriterLock()
        self._lock = StateLock(self.path)
        self._lock.acquire(now)  # one bot process per state file (StateLocked otherwise)
        try:
            self._open(now)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, now: datetime) -> None:
        if self.path.exists():
            try:
                check(self.path, self.busy_timeout)
            except (sqlite3.Error, OSError) as exc:
                self._trouble(exc, now)
        try:
            prepare(self.path, self.busy_timeout)  # the tables; a 0.2.0 file is migrated
        except (sqlite3.Error, OSError) as exc:
            self._trouble(exc, now, corrupt_too=True)
        self._sent: list[tuple[str, str]] = []
        # Called with the sessions of each delivery record (the metrics count them).
        self.on_sent: Callable[[list[TaskSession]], None] | None = None
        self._unmark: list[tuple[str, str]] = []  # (table, key) to delete at the next flush
        self._buffer_lock = threading.Lock()
        try:
            self._db = SqliteDict(
                str(self.path),
                tablename=FACTS,
                autocommit=False,
                encode=json.dumps,
                decode=json.loads,
                outer_stack=False,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open the state file {self.path}: {exc}") from None
        # sqlitedict opens its connection with `PRAGMA synchronous=OFF`: a commit survives the
        # process being killed, but power loss or an OS crash can lose it or corrupt the
        # file. The pending marks committed before each post are what keep an alert from
        # being posted twice, so commits go to disk again (SQLite's default).
        self._db.conn.execute("PRAGMA synchronous=FULL")
        # Another program's short lock (an sqlite3 shell, a backup agent) is waited out.
        self._db.conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def _trouble(self, exc: BaseException, now: datetime, *, corrupt_too: bool = False) -> None:
        """Move a corrupt file aside, or raise a StateError (`corrupt_too`: the file passed
        its check, so even "corrupt" is raised: a migration never discards the file)."""
        kind = open_trouble(exc)
        if corrupt_too and kind == "corrupt":
            kind = "unavailable"
        refuse(self.path, exc, kind, self.busy_timeout)
        move_aside(self.path, exc, now)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def close(self) -> None:
        try:
            self._flush()
            self._db.commit()
            self._db.close()
        finally:
            self._lock.release()

    def commit(self, *, wait: bool = True) -> None:
        """Make buffered writes durable. `wait=False` lets sqlitedict's thread do the work
        while the caller goes on; use it only where a crash before it lands loses nothing
        (delivery records: the committed pending marks cover them)."""
        self._flush()
        self._db.commit(blocking=wait)

    # ---------------------------------------------------------------- announced
    def record_sent(
        self, sessions: list[TaskSession], channel: str, ts: str, now: datetime
    ) -> None:
        """Record delivery and drop the pending marks, durable at the next `commit()`.
        The rows are buffered and written in one batch then: until the commit they would
        not survive a crash anyway, and the pending marks (already committed) cover that."""
        at = now.timestamp()
        if self.on_sent is not None:
            self.on_sent(sessions)
        for s in sessions:
            receipt = {"c": channel, "ts": ts, "at": at, "r": s.result}
            self._sent.append((s.uid, json.dumps(receipt)))
            self._unmark.append((PENDING, s.uid))

    def _flush(self) -> None:
        """Hand buffered writes to sqlitedict's thread (reads call this first, from the poll
        and from the slash command's workers alike)."""
        with self._buffer_lock:  # queued in order, so a read queued after this sees them
            sent, self._sent = self._sent, []
            unmark, self._unmark = self._unmark, []
            if sent:
                self._replace(ANNOUNCED, sent)
            by_table: dict[str, list[str]] = {}
            for table, key in unmark:
                by_table.setdefault(table, []).append(key)
            for table, keys in by_table.items():
                for i in range(0, len(keys), _ROWS):
                    chunk = keys[i : i + _ROWS]
                    marks = ",".join("?" * len(chunk))
                    self._sql(f'DELETE FROM "{table}" WHERE key IN ({marks})', chunk)

    def _sql(self, sql: str, params: Sequence[object] = ()) -> None:
        self._db.conn.execute(sql, tuple(params))

    def _one(self, sql: str, params: Sequence[object] = ()) -> Any:
        """The first column of the first row (None when no row)."""
        row = self._db.conn.select_one(sql, tuple(params))
        return row[0] if row else None

    def _replace(self, table: str, rows: list[tuple[str, str]]) -> None:
        """Write rows, 400 per statement (sqlitedict's executemany costs one thread hop each)."""
        assert table in NAMES, table
        for i in range(0, len(rows), _ROWS):
            chunk = rows[i : i + _ROWS]
            values = ",".join(["(?,?)"] * len(chunk))
            flat = [x for row in chunk for x in row]
            self._sql(f'REPLACE INTO "{table}" (key, value) VALUES {values}', flat)

    def known(self, uids: list[str]) -> tuple[set[str], set[str]]:
        """(announced, pending or held back) among `uids`, one query per 260 UIDs."""
        self._flush()
        announced: set[str] = set()
        pending: set[str] = set()
        for i in range(0, len(uids), 260):
            chunk = uids[i : i + 260]
            marks = ",".join("?" * len(chunk))
            # One row for the whole chunk: sqlitedict hands each result row through a queue
            # between threads, which cost more than the lookup (a 24 h sweep of 5,000
            # announced sessions spent about 100 ms there).
            union = " UNION ALL ".join(
                f"SELECT '{mark}' || key AS k FROM \"{table}\" WHERE key IN ({marks})"
                for mark, table in (("a", ANNOUNCED), ("p", PENDING), ("h", HELD))
            )
            found = self._one(f"SELECT json_group_array(k) FROM ({union})", chunk * 3)
            for key in json.loads(found) if found else ():
                (announced if key[0] == "a" else pending).add(key[1:])
        return announced, pending

    def alerts_of_job_session(self, job_session_uid: str) -> list[str]:
        """The ts of every alert that shows sessions of this job session (its "Job: …"
        line is redrawn when the job session's own failure arrives after it)."""
        needle = json.dumps({"jsu": job_session_uid})[1:-1]  # "jsu": "urn:…", as stored
        rows = self._db.conn.select(
            f'SELECT key FROM "{ALERTS}" WHERE instr(value, ?) > 0', (needle,)
        )
        return [key for (key,) in rows]

    def alerts_with_copies_pending(self) -> dict[str, dict[str, Any]]:
        """Alerts whose `continue` copies are marked and not all posted (ts → record)."""
        rows = self._db.conn.select(
            f'SELECT key, value FROM "{ALERTS}" WHERE instr(value, \'"copies"\') > 0'
        )
        out = {}
        for key, raw in rows:
            record = json.loads(raw)
            if any(not v for v in (record.get("copies") or {}).values()):
                out[key] = record
        return out

    def count_announced_since(self, since: datetime) -> int:
        self._flush()
        sql = f"SELECT COUNT(*) FROM \"{ANNOUNCED}\" WHERE json_extract(value, '$.at') >= ?"
        return int(self._one(sql, (since.timestamp(),)) or 0)

    # ------------------------------------------------------------------ pending
    def record_silently(self, sessions: list[TaskSession], now: datetime, why: str) -> None:
        """Remember sessions as handled without a message (a retry fixed them)."""
        at = now.timestamp()
        for s in sessions:
            row = {"c": "", "ts": "", "at": at, "r": s.result, "why": why}
            self._sent.append((s.uid, json.dumps(row)))
            self._unmark += [(PENDING, s.uid), (HELD, s.uid)]

    def mark_pending(
        self,
        sessions: list[TaskSession],
        channel: str,
        now: datetime,
        *,
        late: dict[str, float] | None = None,
    ) -> None:
        """Mark sessions pending and commit, before anything is posted. `late` (UID →
        seconds) travels with them, so a redelivered alert still says it came late."""
        late = late or {}
        rows = []
        for s in sessions:
            row: dict[str, Any] = {"s": session_to_json(s), "c": channel, "t": now.timestamp()}
            if s.uid in late:
                row["l"] = late[s.uid]
            rows.append((s.uid, json.dumps(row)))
        self._flush()
        self._replace(PENDING, rows)
        self.commit()

    def pending(self) -> list[Pending]:
        self._flush()
        rows = self._db.conn.select(f'SELECT key, value FROM "{PENDING}" ORDER BY rowid')
        out = []
        for _key, raw in rows:
            d = json.loads(raw)
            out.append(Pending(session_from_json(d["s"]), d["c"], d["t"], d.get("l")))
        return out

    # ------------------------------------------------------------- other tables
    def records(self, table: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The JSON records of `table` whose keys are among `ids`, one query per 400 ids."""
        assert table in NAMES, table
        self._flush()
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), _ROWS):
            chunk = ids[i : i + _ROWS]
            marks = ",".join("?" * len(chunk))
            sql = (
                f'SELECT json_group_object(key, json(value)) FROM "{table}" WHERE key IN ({marks})'
            )
            found = self._one(sql, chunk)
            out.update(json.loads(found) if found else {})
        return out

    def all_records(self, table: str) -> dict[str, dict[str, Any]]:
        assert table in NAMES, table
        self._flush()
        found = self._one(f'SELECT json_group_object(key, json(value)) FROM "{table}"')
        return dict(json.loads(found)) if found else {}

    def records_of(self, table: str, em: str) -> dict[str, dict[str, Any]]:
        """The records of one Enterprise Manager in a table keyed by JSON `[em, …]` (jobs,
        episodes): a key range, as `count_open_problems` reads problems."""
        assert table in NAMES, table
        self._flush()
        low = json.dumps([em])[:-1] + ","
        found = self._one(
            f'SELECT json_group_object(key, json(value)) FROM "{table}" WHERE key >= ? AND key < ?',
            (low, low[:-1] + "-"),
        )
        return dict(json.loads(found)) if found else {}

    def put_records(self, table: str, items: dict[str, dict[str, Any]]) -> None:
        """Write records, durable at the next `commit()`."""
        if items:
            self._flush()
            self._replace(table, [(k, json.dumps(v)) for k, v in items.items()])

    def drop_records(self, table: str, ids: list[str]) -> None:
        assert table in NAMES, table
        with self._buffer_lock:
            self._unmark += [(table, x) for x in ids]

    def count_open_problems(self, em: str) -> int:
        """Open problems whose identity starts with `em`: a key range on the primary key
        (from `["em1",` to `["em1"-`: "-" follows "," in every collation used here)."""
        self._flush()
        low = json.dumps([em], ensure_ascii=False)[:-1] + ","
        sql = f'SELECT COUNT(*) FROM "{PROBLEMS}" WHERE key >= ? AND key < ? AND '
        return int(
            self._one(sql + "json_extract(value, '$.state') = 'open'", (low, low[:-1] + "-")) or 0
        )

    def count_open_job_problems(self, em: str) -> int:
        """Open problems of job sessions' own failures (no VM: the identity ends `, ""]`)."""
        self._flush()
        low = json.dumps([em], ensure_ascii=False)[:-1] + ","
        sql = (
            f'SELECT COUNT(*) FROM "{PROBLEMS}" WHERE key >= ? AND key < ? AND '
            "substr(key, -5) = ', \"\"]' AND json_extract(value, '$.state') = 'open'"
        )
        return int(self._one(sql, (low, low[:-1] + "-")) or 0)

    def open_problems_by_em(self) -> dict[str, int]:
        """Open problems per Enterprise Manager (the first item of a problem's identity)."""
        self._flush()
        rows = self._db.conn.select(
            "SELECT json_extract(json_extract(value, '$.id'), '$[0]'), COUNT(*) "
            f"FROM \"{PROBLEMS}\" WHERE json_extract(value, '$.state') = 'open' GROUP BY 1"
        )
        return {str(em): int(n) for em, n in rows}

    # ------------------------------------------------------ checkpoints, facts
    def checkpoint(self, session_type: str, server: str = "") -> datetime | None:
        self._flush()
        sql = f'SELECT value FROM "{CHECKPOINTS}" WHERE key = ?'
        value = self._one(sql, (scoped(session_type, server),))
        value = json.loads(value) if value is not None else None
        return parse_time(value) if isinstance(value, str) else None

    def set_checkpoint(self, session_type: str, value: datetime, server: str = "") -> None:
        self._replace(CHECKPOINTS, [(scoped(session_type, server), json.dumps(iso_z(value)))])

    def meta(self, name: str, default: Any = None) -> Any:
        """A small fact: a first run's floor, the last poll, the digest's day (`facts`)."""
        return self._db.get(name, default)

    def set_meta(self, name: str, value: Any) -> None:
        self._db[name] = value

    def remember(self, name: str, value: Any) -> None:
        """Write one fact and commit, as one writer of the state (the store's lock)."""
        with self.lock:
            self.set_meta(name, value)
            self.commit()

    # ---------------------------------------------------------------- retention
    def prune(self, before: datetime) -> int:
        """Forget sessions announced before `before`; returns how many. The caller chooses
        `before` so that no query window can return them again (alerts.record.prune_cutoff)."""
        cutoff = before.timestamp()
        where = f"FROM \"{ANNOUNCED}\" WHERE json_extract(value, '$.at') < ?"
        count = int(self._one(f"SELECT COUNT(*) {where}", (cutoff,)) or 0)
        if count:
            self._sql(f"DELETE {where}", (cutoff,))
            self.commit()
        return count

    def prune_lifecycle(self, before: datetime) -> int:
        """Forget problems with no news since `before` (recovered, or a VM that stopped
        failing and never succeeded: a later failure opens a new one) and the alerts they
        were drawn in."""
        cutoff = before.timestamp()
        problems = (
            f'FROM "{PROBLEMS}" WHERE COALESCE('
            "json_extract(value, '$.recovered_at'), json_extract(value, '$.last_end')) < ?"
        )
        # The alert of a problem still open is kept, however old: its thread and its
        # redraws (recovery, acknowledgement) still need it.
        alerts = (
            f'FROM "{ALERTS}" WHERE CAST(key AS REAL) < ? AND key NOT IN ('
            f"SELECT json_extract(value, '$.ts') FROM \"{PROBLEMS}\" "
            "WHERE json_extract(value, '$.state') = 'open')"
        )
        notes = f"FROM \"{NOTES}\" WHERE json_extract(value, '$.t') < ?"
        episodes = (
            f"FROM \"{EPISODES}\" WHERE json_extract(value, '$.state') = 'closed' AND "
            "json_extract(value, '$.closed') < ?"
        )
        removed = 0
        for where in (problems, alerts, notes, episodes):
            removed += int(self._one(f"SELECT COUNT(*) {where}", (cutoff,)) or 0)
            self._sql(f"DELETE {where}", (cutoff,))
        self.commit()
        return removed

    def prune_orphans(self, before: datetime, servers: set[str]) -> int:
        """Forget what nothing will read again: mutes that expired before `before`, catch-up
        attempts older than it, pending and held rows of Enterprise Managers no longer
        configured (`servers`: the names the bot watches now, "" included), and the state
        of those servers (checkpoints, floors, last poll, self-monitoring) once their last
        poll is older than `before`."""
        cutoff = before.timestamp()
        doomed: list[tuple[str, str]] = []
        for key, mute in self.all_records(MUTES).items():
            if float(mute.get("until") or 0) < cutoff:
                doomed.append((MUTES, key))
        for key, attempt in self.all_records(CATCHUPS).items():
            if float(attempt.get("t") or 0) < cutoff or attempt.get("e", "") not in servers:
                doomed.append((CATCHUPS, key))
        for table in (PENDING, HELD):
            for key, row in self.all_records(table).items():
                if row["s"].get("em", "") not in servers:
                    doomed.append((table, key))
        doomed += self._servers_gone(cutoff, servers)
        with self._buffer_lock:
            self._unmark += doomed
        self.commit()
        return len(doomed)

    def _servers_gone(self, cutoff: float, servers: set[str]) -> list[tuple[str, str]]:
        """The facts and checkpoints of servers not in `servers` whose last poll is older
        than `cutoff`."""
        doomed: list[tuple[str, str]] = []
        gone: dict[str, list[tuple[str, str]]] = {}
        last: dict[str, float] = {}
        for table in (FACTS, CHECKPOINTS):
            rows = self._db.conn.select(
                f"SELECT key, value FROM \"{table}\" WHERE instr(key, '@') > 0"
            )
            for key, raw in rows:
                name, _, server = key.partition("@")
                if server in servers:
                    continue
                gone.setdefault(server, []).append((table, key))
                if table == FACTS and name == "last_poll":
                    last[server] = float((json.loads(raw) or {}).get("at") or 0)
        for server, keys in gone.items():
            if last.get(server, 0) < cutoff:
                doomed += keys
                log.info("forgot the state of %s, no longer configured", server)
        return doomed
