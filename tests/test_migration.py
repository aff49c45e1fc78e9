"""A state file written by 0.2.0 (tests/fixtures/state-0.2.0, made by its make.py with the
release's own code) is migrated in place on first open, and the bot goes on where 0.2.0 left
off: nothing is announced again, repeats go to the old threads, the mute holds, the ack shows."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import pytest

from bot.emulator.data import EmSession, SessionStore
from bot.emulator.server import Emulator
from bot.errors import StateError
from bot.store.schema import ANNOUNCED, HELD, MUTES, NAMES, PENDING, PROBLEMS
from bot.store.store import Store
from tests import helpers
from tests.fake_slack import FakeSlack
from tests.helpers import Rig, job_run, settings_for

OLD = Path(__file__).resolve().parent / "fixtures" / "state-0.2.0"
SCENARIO: dict[str, Any] = json.loads((OLD / "scenario.json").read_text())
THEN = datetime.fromisoformat(SCENARIO["now"])  # the clock when 0.2.0 last wrote the file


def _sessions() -> list[EmSession]:
    out = []
    for d in json.loads((OLD / "em.json").read_text()):
        for k in ("created", "ended"):
            d[k] = datetime.fromisoformat(d[k]) if d[k] else None
        out.append(EmSession(**d))
    return out


@pytest.fixture
def old_em() -> Iterator[Emulator]:
    """The Enterprise Manager 0.2.0 polled, with every session it had."""
    emu = Emulator(SessionStore(_sessions())).start()
    yield emu
    emu.stop()


@pytest.fixture
def old_slack() -> Iterator[FakeSlack]:
    """The Slack 0.2.0 posted to, with its messages and threads."""
    saved = json.loads((OLD / "slack.json").read_text())
    fake = FakeSlack()
    fake.messages = saved["messages"]
    for key, replies in saved["replies"].items():
        channel, ts = key.split(" ")
        fake.replies[(channel, ts)] = replies
    fake._ts = saved["ts"]
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fresh_uids(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests.helpers draws UIDs from a seeded generator, as make.py's run of 0.2.0 did: a
    seed of its own keeps this test's sessions from taking the UIDs of the fixture's."""
    monkeypatch.setattr(helpers, "_rng", Random(2027))


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_a_0_2_0_state_file_is_backed_up_then_migrated_in_place_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite"
    shutil.copy(OLD / "state.sqlite", path)
    caplog.set_level(logging.INFO, logger="bot")
    store = Store(path, now=THEN)
    store.close()
    assert (tmp_path / "state.sqlite.0.2.0.bak").read_bytes() == (OLD / "state.sqlite").read_bytes()
    assert tables(path) == set(NAMES), "sqlite3 .tables lists the named tables, not `state`"
    said = [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()]
    assert len(said) == 1 and "from 0.2.0" in said[0] and str(path) in said[0]
    again = Store(path, now=THEN)  # a second open finds nothing to migrate
    try:
        assert len(again.all_records(PROBLEMS)) == 5 and len(again.all_records(MUTES)) == 1
        assert set(again.all_records(PENDING)) == {SCENARIO["pending_uid"]}
        assert set(again.all_records(HELD)) == {SCENARIO["held_uid"]}
        assert len(again.all_records(ANNOUNCED)) == 7
        assert again.checkpoint("ReplicaTaskSession") is not None
    finally:
        again.close()
    assert sum("migrated" in r.getMessage() for r in caplog.records) == 1


def test_after_the_migration_the_bot_goes_on_where_0_2_0_left_off(
    old_em: Emulator, old_slack: FakeSlack, tmp_path: Path
) -> None:
    shutil.copy(OLD / "state.sqlite", tmp_path / "state.sqlite")
    before = len(old_slack.posted("C0ALERTS"))
    now = THEN + timedelta(minutes=10)
    rig = Rig(settings_for(old_em, old_slack, tmp_path), now)
    try:
        # The first poll sweeps every session 0.2.0 saw: only the pending alert and the
        # failure held for retries (the hold is off now) are announced, nothing again.
        first = rig.pipeline.poll_once(now)
        posted = old_slack.posted("C0ALERTS")[before:]
        uids = {u for m in posted for u in _uids(m)}
        assert uids == {SCENARIO["pending_uid"], SCENARIO["held_uid"]}, first
        assert first.pending == 0 and first.exit_code == 0
        # A repeat of sql01 goes to the thread 0.2.0 opened, and the alert, redrawn for
        # it, still shows who acknowledged it.
        alert_ts = SCENARIO["alert_ts"]
        thread_before = len(old_slack.thread(alert_ts))
        later = now + timedelta(minutes=20)
        job_run(old_em, later, [("sql01", "Failed", "Disk full again")], job="SQL Replication")
        # A failure of the muted job, and a repeat of a VM of the catch-up message.
        job_run(old_em, later, [("dev01", "Failed", "Patched again")], job="Dev Replication")
        job_run(old_em, later, [("web01", "Failed", "web01 down")], job="Web Replication")
        count = len(old_slack.posted("C0ALERTS"))
        rig.pipeline.poll_once(later)
        assert len(old_slack.posted("C0ALERTS")) == count, "no new top-level alert"
        assert len(old_slack.thread(alert_ts)) == thread_before + 1
        assert len(old_slack.thread(SCENARIO["catchup_ts"])) == 1
        redrawn = [body for _c, ts, body in old_slack.updates if ts == alert_ts]
        assert redrawn and "U0ADMIN" in json.dumps(redrawn[-1]), "the ack is still shown"
        assert "dev01" not in json.dumps(old_slack.calls[-20:]), "the mute still holds"
    finally:
        rig.close()


def test_a_state_file_of_a_later_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    Store(path, now=THEN).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    body = path.read_bytes()
    with pytest.raises(StateError, match="written by a later release") as err:
        Store(path, now=THEN)
    assert err.value.exit_code == 78 and path.read_bytes() == body


def _uids(message: dict[str, Any]) -> list[str]:
    meta = message.get("metadata") or {}
    return [s["uid"] for s in meta.get("event_payload", {}).get("sessions", [])]


SCHEMA_2 = ("announced", "pending", "held", "problems", "alerts", "redraws", "recoveries",
            "catchups", "mutes", "checkpoints", "facts")  # fmt: skip


def test_a_schema_2_file_gains_the_job_tables_and_keeps_its_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.sqlite"
    conn = sqlite3.connect(path)
    for name in SCHEMA_2:  # as the release before this one wrote them
        conn.execute(f'CREATE TABLE "{name}" (key TEXT PRIMARY KEY, value BLOB)')
    record = {"c": "C0ALERTS", "ts": "1.000100", "at": THEN.timestamp(), "r": "Failed"}
    conn.execute('INSERT INTO "announced" VALUES (?, ?)', ("urn:veeam:x", json.dumps(record)))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with caplog.at_level(logging.INFO, logger="bot.store.migrate"):
        store = Store(path, now=THEN)
    try:
        assert store.records(ANNOUNCED, ["urn:veeam:x"]) == {"urn:veeam:x": record}
        assert store.known(["urn:veeam:x"])[0] == {"urn:veeam:x"}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    conn.close()
    assert {"notes", "jobs", "episodes"} <= tables <= NAMES
    assert "from schema 2 to 3" in caplog.text
