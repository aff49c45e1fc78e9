"""The bot's state: one sqlite file, one sqlitedict table (`state`), JSON values (never
pickle), explicit commits. Range work (retention, counts) runs as SQL on sqlitedict's own
connection, since the dict interface has no range queries.

Opening: a missing file is a first run. Only a corrupt file ("file is not a database",
"malformed", a failed quick_check) is moved aside (`.corrupt-<time>`) for a fresh start; a
lock held by another program is waited out (`busy_timeout`) and then refused with exit 75,
like a permission or I/O error; a path that cannot be created exits 78.

Writers: every change goes through `Store.lock` (a `WriterLock`): polls, redraws,
retention, buttons, mutes, the digest. Retention runs once a day (`Pipeline.prune`).

The layout (each kind of record, its key, fields, writer and retention) is in
`docs/state.md`; keep the two in step.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from bot.errors import StateError
from bot.models import TaskSession, iso_z
from bot.store.codec import Pending, scoped, session_from_json, session_to_json
from bot.store.lock import StateLock, WriterLock
from bot.store.opening import BUSY_TIMEOUT, TABLE, check, open_trouble
from bot.veeam.parse import parse_time

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
        self.first_run = not self.path.exists()
        if not self.first_run:
            try:
                check(self.path, self.busy_timeout)
            except (sqlite3.Error, OSError) as exc:
                self._trouble(exc, now)
        self._sent: list[tuple[str, str]] = []
        # Called with the sessions of each delivery record (the metrics count them).
        self.on_sent: Callable[[list[TaskSession]], None] | None = None
        self._unmark: list[str] = []
        self._buffer_lock = threading.Lock()
        try:
            self._db = SqliteDict(
                str(self.path),
                tablename=TABLE,
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

    def _trouble(self, exc: BaseException, now: datetime) -> None:
        """Move a corrupt file aside (the bot then starts as on a first run); raise a
        StateError for anything else, which leaves the file as it is."""
        kind = open_trouble(exc)
        if kind == "locked":
            raise StateError(
                f"the state file {self.path} is locked by another program ({exc}, waited "
                f"{self.busy_timeout:g}s); close what holds it (an sqlite3 shell, a backup "
                "agent) and the next run goes on where this one would have"
            ) from None
        if kind == "unavailable":
            raise StateError(
                f"cannot read the state file {self.path}: {exc}; check that it is a file "
                "the bot may read and write"
            ) from None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{now:%Y%m%dT%H%M%SZ}")
        self.path.rename(aside)
        log.warning(
            "state store %s is corrupt; moved it to %s and starting as on a first run "
            "(alerts of the last initial_lookback may be announced again): %s",
            self.path,
            aside,
            exc,
        )
        self.first_run = True

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
    def is_announced(self, uid: str) -> bool:
        self._flush()
        return f"a:{uid}" in self._db

    def receipt(self, uid: str) -> dict[str, Any] | None:
        self._flush()
        value: dict[str, Any] | None = self._db.get(f"a:{uid}")
        return value

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
            self._sent.append((f"a:{s.uid}", json.dumps(receipt)))
            self._unmark.append(f"p:{s.uid}")

    def _flush(self) -> None:
        """Hand buffered writes to sqlitedict's thread (reads call this first, from the poll
        and from the slash command's workers alike)."""
        with self._buffer_lock:  # queued in order, so a read queued after this sees them
            sent, self._sent = self._sent, []
            unmark, self._unmark = self._unmark, []
            if sent:
                self._replace(sent)
            for i in range(0, len(unmark), _ROWS):
                chunk = unmark[i : i + _ROWS]
                marks = ",".join("?" * len(chunk))
                self._db.conn.execute(f'DELETE FROM "{TABLE}" WHERE key IN ({marks})', chunk)

    def _replace(self, rows: list[tuple[str, str]]) -> None:
        """Write rows, several hundred per statement: sqlitedict's executemany queues one
        request per row to its thread, which costs more than the writes themselves."""
        for i in range(0, len(rows), _ROWS):
            chunk = rows[i : i + _ROWS]
            values = ",".join(["(?,?)"] * len(chunk))
            flat = [x for row in chunk for x in row]
            self._db.conn.execute(f'REPLACE INTO "{TABLE}" (key, value) VALUES {values}', flat)

    def known(self, uids: list[str]) -> tuple[set[str], set[str]]:
        """(announced, pending or held back) among `uids`, one query per 260 UIDs."""
        self._flush()
        announced: set[str] = set()
        pending: set[str] = set()
        for i in range(0, len(uids), 260):
            chunk = uids[i : i + 260]
            keys = [f"{kind}:{u}" for kind in "aph" for u in chunk]
            marks = ",".join("?" * len(keys))
            # One row for the whole chunk: sqlitedict hands each result row through a queue
            # between threads, which cost more than the lookup (a 24 h sweep of 5,000
            # announced sessions spent about 100 ms there).
            sql = f'SELECT json_group_array(key) FROM "{TABLE}" WHERE key IN ({marks})'
            row = self._db.conn.select_one(sql, tuple(keys))
            for key in json.loads(row[0]) if row and row[0] else ():
                (announced if key[0] == "a" else pending).add(key[2:])
        return announced, pending

    def count_announced_since(self, since: datetime) -> int:
        self._flush()
        row = self._db.conn.select_one(
            f"SELECT COUNT(*) FROM \"{TABLE}\" WHERE key >= 'a:' AND key < 'a;' "
            "AND json_extract(value, '$.at') >= ?",
            (since.timestamp(),),
        )
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ pending
    def record_silently(self, sessions: list[TaskSession], now: datetime, why: str) -> None:
        """Remember sessions as handled without a message (a retry fixed them)."""
        at = now.timestamp()
        for s in sessions:
            row = {"c": "", "ts": "", "at": at, "r": s.result, "why": why}
            self._sent.append((f"a:{s.uid}", json.dumps(row)))
            self._unmark += [f"p:{s.uid}", f"h:{s.uid}"]

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
            rows.append((f"p:{s.uid}", json.dumps(row)))
        self._flush()
        self._replace(rows)
        self.commit()

    def pending(self) -> list[Pending]:
        self._flush()
        rows = self._db.conn.select(
            # a key range, not LIKE: it walks the primary-key index, not the whole table
            f"SELECT key, value FROM \"{TABLE}\" WHERE key >= 'p:' AND key < 'p;' ORDER BY rowid"
        )
        out = []
        for _key, raw in rows:
            d = json.loads(raw)
            out.append(Pending(session_from_json(d["s"]), d["c"], d["t"], d.get("l")))
        return out

    # ------------------------------------------------- records (problems, threads)
    def records(self, prefix: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The JSON records `<prefix>:<id>` among `ids`, one query per 400 ids."""
        self._flush()
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), _ROWS):
            keys = [f"{prefix}:{x}" for x in ids[i : i + _ROWS]]
            marks = ",".join("?" * len(keys))
            sql = (
                f'SELECT json_group_object(key, json(value)) FROM "{TABLE}" WHERE key IN ({marks})'
            )
            row = self._db.conn.select_one(sql, tuple(keys))
            found = json.loads(row[0]) if row and row[0] else {}
            out.update({k[len(prefix) + 1 :]: v for k, v in found.items()})
        return out

    def all_records(self, prefix: str) -> dict[str, dict[str, Any]]:
        self._flush()
        low, high = f"{prefix}:", f"{prefix};"
        row = self._db.conn.select_one(
            f'SELECT json_group_object(key, json(value)) FROM "{TABLE}" WHERE key >= ? AND key < ?',
            (low, high),
        )
        found = json.loads(row[0]) if row and row[0] else {}
        return {k[len(prefix) + 1 :]: v for k, v in found.items()}

    def put_records(self, prefix: str, items: dict[str, dict[str, Any]]) -> None:
        """Write records, durable at the next `commit()`."""
        if items:
            self._flush()
            self._replace([(f"{prefix}:{k}", json.dumps(v)) for k, v in items.items()])

    def drop_records(self, prefix: str, ids: list[str]) -> None:
        with self._buffer_lock:
            self._unmark += [f"{prefix}:{x}" for x in ids]

    def count_where(self, prefix: str, field: str, value: str) -> int:
        self._flush()
        row = self._db.conn.select_one(
            f'SELECT COUNT(*) FROM "{TABLE}" WHERE key >= ? AND key < ? '
            "AND json_extract(value, ?) = ?",
            (f"{prefix}:", f"{prefix};", f"$.{field}", value),
        )
        return int(row[0]) if row else 0

    def count_open_problems(self, em: str) -> int:
        """Open problems whose identity starts with `em`: a key range on the primary key."""
        self._flush()
        low = "P:" + json.dumps([em], ensure_ascii=False)[:-1] + ","  # P:["em1",
        row = self._db.conn.select_one(
            f'SELECT COUNT(*) FROM "{TABLE}" WHERE key >= ? AND key < ? '
            "AND json_extract(value, '$.state') = 'open'",
            (low, low[:-1] + "-"),  # "-" follows "," in every collation SQLite uses here
        )
        return int(row[0]) if row else 0

    def open_problems_by_em(self) -> dict[str, int]:
        """Open problems per Enterprise Manager (the first item of a problem's identity)."""
        self._flush()
        rows = self._db.conn.select(
            "SELECT json_extract(json_extract(value, '$.id'), '$[0]'), COUNT(*) "
            f"FROM \"{TABLE}\" WHERE key >= 'P:' AND key < 'P;' "
            "AND json_extract(value, '$.state') = 'open' GROUP BY 1"
        )
        return {str(em): int(n) for em, n in rows}

    # --------------------------------------------------------- checkpoints, meta
    def checkpoint(self, session_type: str, server: str = "") -> datetime | None:
        value = self._db.get(f"m:checkpoint:{scoped(session_type, server)}")
        return parse_time(value) if isinstance(value, str) else None

    def set_checkpoint(self, session_type: str, value: datetime, server: str = "") -> None:
        self._db[f"m:checkpoint:{scoped(session_type, server)}"] = iso_z(value)

    def meta(self, name: str, default: Any = None) -> Any:
        return self._db.get(f"m:{name}", default)

    def set_meta(self, name: str, value: Any) -> None:
        self._db[f"m:{name}"] = value

    # ---------------------------------------------------------------- retention
    def prune(self, before: datetime) -> int:
        """Forget sessions announced before `before`; returns how many. The caller chooses
        `before` so that no query window can return them again (pipeline.prune_cutoff)."""
        cutoff = before.timestamp()
        where = (
            f"FROM \"{TABLE}\" WHERE key >= 'a:' AND key < 'a;' AND json_extract(value, '$.at') < ?"
        )
        row = self._db.conn.select_one(f"SELECT COUNT(*) {where}", (cutoff,))
        count = int(row[0]) if row else 0
        if count:
            self._db.conn.execute(f"DELETE {where}", (cutoff,))
            self.commit()
        return count

    def prune_lifecycle(self, before: datetime) -> int:
        """Forget problems with no news since `before` (recovered, or a VM that stopped
        failing and never succeeded: a later failure opens a new one) and the alerts they
        were drawn in."""
        cutoff = before.timestamp()
        problems = (
            f"FROM \"{TABLE}\" WHERE key >= 'P:' AND key < 'P;' AND COALESCE("
            "json_extract(value, '$.recovered_at'), json_extract(value, '$.last_end')) < ?"
        )
        # The alert of a problem still open is kept, however old: its thread and its
        # redraws (recovery, acknowledgement) still need it.
        alerts = (
            f"FROM \"{TABLE}\" WHERE key >= 'M:' AND key < 'M;' "
            "AND CAST(substr(key, 3) AS REAL) < ? AND substr(key, 3) NOT IN ("
            f"SELECT json_extract(value, '$.ts') FROM \"{TABLE}\" WHERE key >= 'P:' "
            "AND key < 'P;' AND json_extract(value, '$.state') = 'open')"
        )
        removed = 0
        for where in (problems, alerts):
            row = self._db.conn.select_one(f"SELECT COUNT(*) {where}", (cutoff,))
            removed += int(row[0]) if row else 0
            self._db.conn.execute(f"DELETE {where}", (cutoff,))
        self.commit()
        return removed

    def prune_orphans(self, before: datetime, servers: set[str]) -> int:
        """Forget what nothing will read again: mutes that expired before `before`, catch-up
        attempts older than it, pending and held rows of Enterprise Managers no longer
        configured (`servers`: the names the bot watches now, "" included), and the state
        of those servers (checkpoints, floors, last poll, self-monitoring) once their last
        poll is older than `before`."""
        cutoff = before.timestamp()
        doomed: list[str] = []
        for key, mute in self.all_records("x").items():
            if float(mute.get("until") or 0) < cutoff:
                doomed.append(f"x:{key}")
        for key, attempt in self.all_records("C").items():
            if float(attempt.get("t") or 0) < cutoff or attempt.get("e", "") not in servers:
                doomed.append(f"C:{key}")
        for prefix in ("p", "h"):
            for key, row in self.all_records(prefix).items():
                if row["s"].get("em", "") not in servers:
                    doomed.append(f"{prefix}:{key}")
        facts = self._db.conn.select(
            f"SELECT key, value FROM \"{TABLE}\" WHERE key >= 'm:' AND key < 'm;' "
            "AND instr(key, '@') > 0"
        )
        gone: dict[str, list[str]] = {}
        last: dict[str, float] = {}
        for key, raw in facts:
            name, _, server = key[2:].partition("@")
            if server in servers:
                continue
            gone.setdefault(server, []).append(key)
            if name == "last_poll":
                last[server] = float((json.loads(raw) or {}).get("at") or 0)
        for server, keys in gone.items():
            if last.get(server, 0) < cutoff:
                doomed += keys
                log.info("forgot the state of %s, no longer configured", server)
        with self._buffer_lock:
            self._unmark += doomed
        self.commit()
        return len(doomed)

    def bulk_announced(self, uids: list[str], channel: str, ts: str, now: datetime) -> None:
        """Load many announced UIDs at once (benchmarks, imports)."""
        at = now.timestamp()
        self._db.update({f"a:{u}": {"c": channel, "ts": ts, "at": at, "r": "Failed"} for u in uids})
        self.commit()
