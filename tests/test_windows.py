"""Maintenance windows: the pure occurrences (past midnight, DST changes, days), then a
failure held through a window and announced at its end, one a later Success settled, and
`/veeam mutes` naming the windows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from bot.alerts.windows import held_until, occurrence_end
from bot.config.load import load_settings
from bot.config.settings import Window
from bot.emulator.server import Emulator
from bot.errors import ConfigError
from bot.models import TaskSession
from tests.fake_slack import FakeSlack
from tests.helpers import Rig, job_run, settings_for

M = timedelta(minutes=1)
SAT, SUN = 5, 6
WEEKEND = Window("weekend patching", (SAT, SUN), time(22, 0), time(6, 0), "Europe/Berlin")
BERLIN_NIGHTLY = Window("nightly", tuple(range(7)), time(1, 0), time(4, 0), "Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "at", "end"),
    [
        # Saturday 2026-11-21 22:00 Berlin (21:00 UTC) to Sunday 06:00 (05:00 UTC)
        (WEEKEND, "2026-11-21T20:59:00", None),
        (WEEKEND, "2026-11-21T21:00:00", "2026-11-22T05:00:00"),
        (WEEKEND, "2026-11-22T04:59:00", "2026-11-22T05:00:00"),  # past midnight
        (WEEKEND, "2026-11-22T05:00:00", None),  # the end is outside
        (WEEKEND, "2026-11-22T21:30:00", "2026-11-23T05:00:00"),  # Sunday's, into Monday
        (WEEKEND, "2026-11-23T04:00:00", "2026-11-23T05:00:00"),  # Monday morning: Sunday's
        (WEEKEND, "2026-11-23T21:30:00", None),  # Monday night: not a window day
        (WEEKEND, "2026-11-20T23:00:00", None),  # Friday night
        # the clocks go back on 2026-10-25 at 03:00 CEST: 01:00-04:00 local is 4 hours
        (BERLIN_NIGHTLY, "2026-10-24T23:00:00", "2026-10-25T03:00:00"),
        (BERLIN_NIGHTLY, "2026-10-25T02:30:00", "2026-10-25T03:00:00"),
        (BERLIN_NIGHTLY, "2026-10-25T03:00:00", None),
        # the clocks go forward on 2026-03-29 at 02:00 CET: 01:00-04:00 local is 2 hours
        (BERLIN_NIGHTLY, "2026-03-29T00:00:00", "2026-03-29T02:00:00"),
        (BERLIN_NIGHTLY, "2026-03-29T01:59:00", "2026-03-29T02:00:00"),
        (BERLIN_NIGHTLY, "2026-03-29T02:00:00", None),
        (BERLIN_NIGHTLY, "2026-03-28T23:59:00", None),  # 00:59 CET: not yet
    ],
)
def test_occurrence_end(window: Window, at: str, end: str | None) -> None:
    assert occurrence_end(window, utc(at)) == (utc(end) if end else None)


def session(job: str, ended: str, em: str = "") -> TaskSession:
    t = utc(ended)
    return TaskSession("u", "BackupTaskSession", "n", "vm", job, "j", "srv", "Completed",
                       "Failed", "", t, t, 0, em)  # fmt: skip


def test_a_window_applies_to_its_jobs_and_servers_only() -> None:
    sql = replace(WEEKEND, jobs=("SQL*",), servers=("em-east",))
    inside = "2026-11-21T23:00:00"
    assert held_until((sql,), session("sql nightly", inside, "EM-EAST")) == utc(
        "2026-11-22T05:00:00"
    )
    assert held_until((sql,), session("Files", inside, "em-east")) is None
    assert held_until((sql,), session("SQL Nightly", inside, "em-west")) is None
    assert held_until((WEEKEND,), session("Files", inside)) == utc("2026-11-22T05:00:00")


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('days = ["sat"]\nfrom = "22:00"\n', "expected a time of day"),
        ('days = ["someday"]\nfrom = "22:00"\nto = "06:00"\n', "days must list some of"),
        ('from = "22:00"\nto = "06:00"\ntimezone = "Mars/Olympus"\n', "IANA time zone"),
        ('from = "22:00"\nto = "22:00"\n', "from and to are the same time"),
    ],
)
def test_a_bad_window_is_a_clear_configuration_error(
    tmp_path: Path, toml: str, problem: str
) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[[mutes.windows]]\nname = "w"\n' + toml)
    with pytest.raises(ConfigError) as err:
        load_settings({"BOT_CONFIG": str(path)})
    assert problem in str(err.value)


def window_around(now: datetime, minutes: int) -> Window:
    """A window in force at `now`, ending `minutes` later (UTC, every day)."""
    start = (now - 30 * M).time().replace(second=0, microsecond=0)
    end = (now + minutes * M).time().replace(second=0, microsecond=0)
    return Window("patching", tuple(range(7)), start, end, "UTC")


def test_a_failure_is_held_through_the_window_and_announced_at_its_end(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    now = datetime(2026, 11, 20, 12, 0, 30, tzinfo=UTC)  # far from midnight, UTC
    settings = settings_for(em, slack, tmp_path)
    settings = replace(settings, mutes=replace(settings.mutes, windows=(window_around(now, 60),)))
    job_run(em, now, [("db01", "Failed", "disk full"), ("web01", "Failed", "x")], ended_ago=5 * M)
    rig = Rig(settings, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 0  # inside the window: held
        job_run(em, now, [("web01", "Success", "")], job="Replication Job 2", ended_ago=-20 * M)
        assert rig.pipeline.poll_once(now + 30 * M).announced == 0  # web01 recovered meanwhile
        assert slack.posted() == []
        r = rig.pipeline.poll_once(now + 61 * M)  # the window is over: db01 still failing
        assert r.announced == 1
        (alert,) = slack.posted()
        assert [s["vm"] for s in alert["metadata"]["event_payload"]["sessions"]] == ["db01"]
        assert rig.pipeline.poll_once(now + 66 * M).announced == 0
    finally:
        rig.close()
