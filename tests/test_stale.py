"""Jobs that stop running, decided from the inventory, the job's history and `now`: the
interval learned from successful runs, stale or not (learned, configured, or from NextRun),
running too long, a schedule disabled or enabled, and episodes told once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.alerts.episodes import closing_words, conditions
from bot.alerts.stale import episode, expected_interval, is_stale, runs_too_long, schedule_change
from bot.config.settings import StaleSettings
from bot.models import Job

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
JOB = Job("urn:veeam:Job:1", "Nightly SQL", "Backup", "VMware", "vbr01", "", True, True,
          T + 12 * H, 3, 10)  # fmt: skip


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        ([], None),
        ([0, 24], None),  # two runs: too little to learn from
        ([0, 24, 48], 48 * H),  # daily: twice the median gap
        ([0, 24, 48, 49], 48 * H),  # a manual run between does not halve it
        ([0, 1, 2, 3], 2 * H),  # hourly: twice is 2 h, the floor
        ([0, 0.25, 0.5, 0.75], 2 * H),  # every 15 min: the floor, not 30 min
        ([48, 0, 24], 48 * H),  # in any order
        ([0, 0, 0], None),  # the same start thrice: no gap to learn
        ([0, 168, 336, 504], 336 * H),  # weekly
    ],
)
def test_expected_interval(hours: list[float], expected: timedelta | None) -> None:
    assert expected_interval([T + h * H for h in hours]) == expected


# last success and last start (hours before T; None: never), interval, next run (hours
# from T), schedule configured/enabled → stale?
@pytest.mark.parametrize(
    ("success", "start", "interval", "next_run", "enabled", "stale"),
    [
        (10, 10, 48 * H, 14, True, False),  # succeeded 10 h ago, daily: fine
        (49, 1, 48 * H, 14, True, True),  # runs, but no success for 49 h: stale
        (None, None, 48 * H, 14, True, True),  # never succeeded
        (49, 49, 48 * H, 14, False, False),  # schedule disabled: told apart, not stale
        # not enough history: NextRun decides, with a 1 h grace
        (None, None, None, -0.5, True, False),  # NextRun 30 min ago: within the grace
        (None, None, None, -2, True, True),  # NextRun 2 h ago, nothing started since
        (None, 1, None, -2, True, False),  # a run started since that NextRun
        (None, 3, None, -2, True, True),  # the last start was before that NextRun
        (None, 1, None, -0.5, True, False),
        (None, None, None, None, True, False),  # no NextRun, no history: nothing to say
    ],
)
def test_is_stale(
    success: float | None,
    start: float | None,
    interval: timedelta | None,
    next_run: float | None,
    enabled: bool,
    stale: bool,
) -> None:
    job = JOB._replace(schedule_enabled=enabled,
                  next_run=None if next_run is None else T + next_run * H)  # fmt: skip
    assert (
        is_stale(
            job,
            last_success=None if success is None else T - success * H,
            last_start=None if start is None else T - start * H,
            interval=interval,
            grace=H,
            now=T,
        )
        is stale
    )


def test_a_run_that_started_after_the_missed_next_run_is_not_stale() -> None:
    job = JOB._replace(next_run=T - 3 * H)
    assert not is_stale(job, last_success=None, last_start=T - 2 * H, interval=None,
                        grace=H, now=T)  # fmt: skip


def test_a_job_without_a_schedule_is_never_stale() -> None:
    job = JOB._replace(schedule_configured=False, next_run=None)
    assert not is_stale(job, last_success=None, last_start=None, interval=2 * H, grace=H, now=T)


# started (hours before T), finished runs' durations (hours), minimum → too long?
@pytest.mark.parametrize(
    ("started", "durations", "minimum", "too_long"),
    [
        (1, [1, 1, 1], 2 * H, False),  # median 1 h: 3 h allowed
        (4, [1, 1, 1], 2 * H, True),
        (2.5, [], 2 * H, True),  # no history: the minimum alone
        (1.5, [], 2 * H, False),
        (5, [0.1, 0.1, 0.2], 2 * H, True),  # short job: the 2 h minimum, not 18 min
        (1.9, [0.1, 0.1, 0.2], 2 * H, False),
        (20, [6, 8, 7], 2 * H, False),  # a 7 h job may take 21 h
        (22, [6, 8, 7], 2 * H, True),
    ],
)
def test_runs_too_long(started: float, durations: list[float], minimum: timedelta,
                       too_long: bool) -> None:  # fmt: skip
    got = runs_too_long(T - started * H, [d * H for d in durations], minimum=minimum, now=T)
    assert got is too_long


@pytest.mark.parametrize(
    ("before", "after", "change"),
    [(None, True, ""), (None, False, ""), (True, True, ""), (True, False, "disabled"),
     (False, False, ""), (False, True, "enabled")],
)  # fmt: skip
def test_schedule_change(before: bool | None, after: bool, change: str) -> None:
    assert schedule_change(before, after) == change


@pytest.mark.parametrize(
    ("is_open", "condition", "step"),
    [(False, False, ""), (False, True, "open"), (True, True, ""), (True, False, "close")],
)
def test_episode(is_open: bool, condition: bool, step: str) -> None:
    assert episode(is_open, condition) == step


# ---------------------------------------------------------------- the stage's judgement

NOW = T.timestamp()
DAILY = [NOW - d * 86400 for d in (6, 5, 4)]  # three daily successes: a learned 48 h


def record(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"uid": "urn:veeam:Job:1", "name": "Nightly SQL", "server": "vbr01",
                               "listed": True, "sched": True, "enabled": True, "was": True,
                               "ok": DAILY, "last_ok": DAILY[-1] + 1800, "working": {},
                               "dur": [1800.0] * 4, "next": None, "gone": None}  # fmt: skip
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("rec", "settings", "kinds"),
    [
        (record(last_ok=NOW - 3600), StaleSettings(), []),  # succeeded an hour ago
        (record(), StaleSettings(), ["stale"]),  # 4 d without success, daily job
        (record(working={"r": NOW - 600}), StaleSettings(), []),  # running now: not stale
        (record(gone=NOW), StaleSettings(), []),  # EM no longer lists it
        (record(), StaleSettings(jobs=(("Nightly SQL", None),)), []),  # [stale.jobs] off
        (record(), StaleSettings(jobs=(("Nightly SQL", 5 * H * 24),)), []),  # 5 d allowed
        (record(), StaleSettings(after=H * 100), []),  # one interval for all: 100 h
        (record(enabled=False), StaleSettings(), ["disabled"]),  # turned off since
        (record(enabled=False, was=None), StaleSettings(), []),  # first seen disabled
        (record(enabled=False), StaleSettings(disabled=False), []),
        (record(last_ok=NOW, working={"r": NOW - 3 * 3600}), StaleSettings(), ["running"]),
        (record(last_ok=NOW, working={"r": NOW - 3600}), StaleSettings(), []),  # 1 h < 2 h
        (record(last_ok=NOW, dur=[], working={"r": NOW - 7300}), StaleSettings(), ["running"]),
        # too little history: NextRun decides
        (record(ok=[], last_ok=None, next="2026-11-20T09:00:00Z"), StaleSettings(), ["stale"]),
        (record(ok=[], last_ok=None, next="2026-11-20T11:30:00Z"), StaleSettings(), []),
    ],
)
def test_conditions(rec: dict[str, object], settings: StaleSettings, kinds: list[str]) -> None:
    assert [c.kind for c in conditions("em", rec, settings, T, set())] == kinds


@pytest.mark.parametrize(
    ("kind", "rec", "words"),
    [
        ("stale", None, "the job is no longer in Enterprise Manager"),
        ("stale", record(last_ok=NOW), "ran again: succeeded at 2026-11-20 12:00 UTC"),
        ("stale", record(enabled=False), "its schedule was disabled; no longer watched for runs"),
        ("disabled", record(enabled=True), "its schedule was enabled again"),
        ("running", record(last={"result": "Success", "end": NOW}), "the run finished (Success)"),
        ("running", record(last={"result": "Success", "end": NOW - 86400}), "no longer running"),
    ],
)
def test_closing_words(kind: str, rec: dict[str, object] | None, words: str) -> None:
    assert closing_words(kind, rec, NOW - 3600) == words


def test_closing_words_of_a_job_turned_off() -> None:
    off = StaleSettings(jobs=(("Nightly SQL", None),))
    assert closing_words("stale", record(), NOW - 3600, off).startswith("no longer watched")
