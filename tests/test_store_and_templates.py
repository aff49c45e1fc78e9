"""The state file, templates and pacing: behaviour a user would notice."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.alerts.message import alert_message
from bot.config.render import Renderer
from bot.errors import ConfigError, StateError
from bot.models import TaskSession
from bot.slack.client import Pacer
from bot.store.opening import open_trouble
from bot.store.schema import ANNOUNCED, PROBLEMS
from bot.store.store import Store

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def session(uid: str = "urn:veeam:ReplicaTaskSession:1", reason: str = "disk full") -> TaskSession:
    return TaskSession(
        uid,
        "ReplicaTaskSession",
        "vm@x",
        "sql01",
        "Job",
        "js-1",
        "srv",
        "Completed",
        "Failed",
        reason,
        NOW - timedelta(minutes=9),
        NOW - timedelta(minutes=4),
        1,
    )


def test_values_are_json_never_pickle(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path, now=NOW)
    store.mark_pending([session()], "C1", NOW)
    store.record_sent([session("urn:veeam:ReplicaTaskSession:2")], "C1", "1.2", NOW)
    store.set_checkpoint("ReplicaTaskSession", NOW)
    store.close()
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [r for name in tables for r in conn.execute(f'SELECT key, value FROM "{name}"')]
    assert rows
    for _key, value in rows:
        assert isinstance(value, str), "sqlite TEXT holding JSON, not a pickle BLOB"
        json.loads(value)


def test_a_corrupt_store_is_moved_aside_and_the_bot_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite"
    path.write_bytes(b"this is not a database" * 200)
    store = Store(path, now=NOW)
    assert store.pending() == [] and store.all_records(ANNOUNCED) == {}
    store.close()
    aside = list(tmp_path.glob("state.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert "is corrupt; moved it to" in caplog.text


def test_a_missing_store_is_a_first_run_and_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.sqlite"
    store = Store(path, now=NOW)
    assert store.known([session().uid]) == (set(), set()) and store.pending() == []
    store.record_sent([session()], "C1", "9.9", NOW)
    store.commit()
    store.close()
    again = Store(path, now=NOW)
    assert again.known([session().uid])[0] == {session().uid}
    assert again.records(ANNOUNCED, [session().uid])[session().uid] == {
        "c": "C1",
        "ts": "9.9",
        "at": NOW.timestamp(),
        "r": "Failed",
    }
    again.close()


def test_commits_are_written_through_to_disk(tmp_path: Path) -> None:
    """sqlitedict turns fsync off (`synchronous=OFF`); after power loss the pending marks,
    which stop a repeat post, could be gone or the file corrupt. The store turns it back on."""
    store = Store(tmp_path / "state.sqlite", now=NOW)
    try:
        assert store._db.conn.select_one("PRAGMA synchronous") == (2,)  # FULL
    finally:
        store.close()


def test_retention_prunes_old_announcements_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", now=NOW)
    store.record_sent([session("old")], "C1", "1", NOW - timedelta(days=20))
    store.record_sent([session("new")], "C1", "2", NOW - timedelta(days=2))
    store.mark_pending([session("waiting")], "C1", NOW - timedelta(days=30))
    assert store.prune(NOW - timedelta(days=14)) == 1
    assert store.known(["old", "new"])[0] == {"new"}
    assert [p.session.uid for p in store.pending()] == ["waiting"], "pending is never pruned"
    assert store.count_announced_since(NOW - timedelta(days=3)) == 1
    store.close()


def test_open_problems_are_counted_per_enterprise_manager(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", now=NOW)
    rows = {}
    for em, vm, state in [
        ("em-a", "v1", "open"),
        ("em-a", "v2", "open"),
        ("em-a", "v3", "recovered"),
        ("em-a2", "v1", "open"),  # a name that starts like another
        ("em-b", "v1", "open"),
        ("Ünïcode", "v1", "open"),
    ]:
        pid = json.dumps([em, "ReplicaTaskSession", "Job", vm], ensure_ascii=False)
        rows[pid] = {"id": pid, "state": state}
    store.put_records(PROBLEMS, rows)
    store.commit()
    assert [store.count_open_problems(em) for em in ("em-a", "em-a2", "em-b", "Ünïcode", "x")] == [
        2,
        1,
        1,
        1,
        0,
    ]
    assert store.open_problems_by_em() == {"em-a": 2, "em-a2": 1, "em-b": 1, "Ünïcode": 1}
    store.close()


def test_user_templates_override_the_packaged_ones(tmp_path: Path) -> None:
    (tmp_path / "alert_header.txt.j2").write_text("CUSTOM {{ vm }} <{{ result }}>")
    message = alert_message(Renderer(str(tmp_path)), [session()])
    assert message.blocks[0]["text"]["text"] == "CUSTOM sql01 <Failed>"


def test_a_broken_template_fails_at_start_up_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "alert_vm.md.j2").write_text("fine\n{{ vm }\nmore\n")
    with pytest.raises(ConfigError) as err:
        Renderer(str(tmp_path))
    text = str(err.value)
    assert "alert_vm.md.j2" in text and "line 2" in text


def test_pacer_allows_a_burst_then_one_per_second() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        clock[0] += seconds

    pacer = Pacer(1.0, 3, clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        pacer.acquire("C1")
    assert slept == [1.0, 1.0]
    pacer.acquire("C2")  # another channel has its own budget
    assert slept == [1.0, 1.0]
    Pacer(0, 1, clock=lambda: clock[0], sleep=sleep).acquire("C1")
    assert slept == [1.0, 1.0], "rate 0 turns pacing off"


def test_a_broken_digest_override_also_fails_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "digest_job.md.j2").write_text("{% for row in rows %}\nno end\n")
    with pytest.raises(ConfigError, match=r"digest_job\.md\.j2"):
        Renderer(str(tmp_path))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (sqlite3.DatabaseError("file is not a database"), "corrupt"),
        (sqlite3.DatabaseError("database disk image is malformed"), "corrupt"),
        (sqlite3.DatabaseError("quick_check: *** in database main ***"), "corrupt"),
        (sqlite3.OperationalError("database is locked"), "locked"),
        (sqlite3.OperationalError("database table is locked"), "locked"),
        (sqlite3.OperationalError("unable to open database file"), "unavailable"),
        (sqlite3.OperationalError("disk I/O error"), "unavailable"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "unavailable"),
        (PermissionError(13, "Permission denied"), "unavailable"),
        (OSError(5, "Input/output error"), "unavailable"),
    ],
)
def test_only_corruption_counts_as_corrupt(error: BaseException, kind: str) -> None:
    assert open_trouble(error) == kind


def test_a_locked_store_is_waited_for_then_refused_and_never_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite"
    store = Store(path, now=NOW)
    store.record_sent([session()], "C1", "9.9", NOW)
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # someone's sqlite3 shell, mid-transaction
    try:
        with pytest.raises(StateError, match="is locked by another program") as err:
            Store(path, now=NOW, busy_timeout=0.2)
        assert err.value.exit_code == 75
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert list(tmp_path.glob("*.corrupt-*")) == [] and "corrupt" not in caplog.text
    again = Store(path, now=NOW)
    try:
        assert again.known([session().uid])[0] == {session().uid}
    finally:
        again.close()


def test_a_folder_in_place_of_the_store_exits_75_and_an_impossible_path_78(
    tmp_path: Path,
) -> None:
    (tmp_path / "state.sqlite").mkdir()
    with pytest.raises(StateError, match="cannot read the state file") as err:
        Store(tmp_path / "state.sqlite", now=NOW)
    assert err.value.exit_code == 75
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StateError, match="cannot create the state folder") as err:
        Store(tmp_path / "a-file" / "state.sqlite", now=NOW)
    assert err.value.exit_code == 78
    assert list(tmp_path.glob("*.corrupt-*")) == []


def test_the_writer_lock_is_reentrant_and_lets_others_in_while_its_holder_waits() -> None:
    import threading

    from bot.store.lock import WriterLock

    lock = WriterLock()
    got: list[str] = []

    def other() -> None:
        with lock:
            got.append("other")

    with lock, lock:  # re-entrant
        t = threading.Thread(target=other)
        t.start()
        t.join(0.2)
        assert got == []  # held: the other writer waits
        lock.sleep(0.01)  # a pacing wait lets it in
        t.join(5)
        assert got == ["other"] and lock.held
    assert not lock.held
    with pytest.raises(RuntimeError):
        lock.release()
