"""Sessions EM lists late, quiet weeks and retention: the clock is an argument throughout."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.alerts.fetch import is_sweep_due, sweep_start
from bot.alerts.record import next_checkpoint, prune_cutoff
from bot.alerts.select import late_by
from bot.config.settings import AlertSettings, PollSettings, Settings
from bot.emulator.server import Emulator
from bot.store.schema import ANNOUNCED
from tests.fake_slack import FakeSlack
from tests.helpers import Rig, job_run, settings_for

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
S = Settings(
    poll=PollSettings(
        initial_lookback=24 * H, overlap=30 * M, late_window=24 * H, sweep_interval=H
    ),
    alerts=AlertSettings(retention=14 * 24 * H),
)


@pytest.mark.parametrize(
    ("checkpoint", "floor", "expected"),
    [
        (T - 5 * M, None, T - 24 * H),  # the late window back from now
        (T - 5 * M, T - 2 * H, T - 2 * H),  # not before what a first run left out
        (T - 30 * H, None, T - 30 * H - 30 * M),  # never later than an ordinary poll
        (None, None, T - 24 * H),  # a first run: the initial lookback
    ],
)
def test_sweep_start(
    checkpoint: datetime | None, floor: datetime | None, expected: datetime
) -> None:
    assert sweep_start(checkpoint, floor, T, S) == expected


@pytest.mark.parametrize(
    ("last", "expected"),
    [(None, True), (T - 59 * M, False), (T - H, True), (T - 5 * H, True)],
)
def test_is_sweep_due(last: datetime | None, expected: bool) -> None:
    assert is_sweep_due(last, T, H) is expected


@pytest.mark.parametrize(
    ("top", "waiting", "expected"),
    [
        (T - 2 * M, [], T - 2 * M),  # the latest end time EM listed
        (None, [], T - 30 * M),  # nothing listed: a quiet poll still moves it
        (T - 3 * H, [], T - 30 * M),  # an old session does not hold it back
        (T - 2 * M, [T - 4 * H], T - 4 * H),  # a pending session does
        (T + 5 * M, [], T + 5 * M),  # EM's clock ahead of ours
    ],
)
def test_next_checkpoint(top: datetime | None, waiting: list[datetime], expected: datetime) -> None:
    assert next_checkpoint(top, T, waiting, 30 * M) == expected


@pytest.mark.parametrize(
    ("ended", "expected"),
    [(T - 3 * H, 3 * 3600.0), (T - 20 * M, None), (None, None)],
)
def test_late_by(ended: datetime | None, expected: float | None) -> None:
    assert late_by(ended, T - 35 * M, T) == expected


@pytest.mark.parametrize(
    ("retention", "checkpoints", "expected"),
    [
        (14 * 24 * H, [T - 5 * M], T - 14 * 24 * H),
        # retention shorter than the late window: the late window wins
        (2 * H, [T - 5 * M], T - 24 * H - 30 * M),
        # a checkpoint held back by a pending session keeps what its window can return
        (2 * H, [T - 40 * H, None], T - 40 * H - 30 * M),
    ],
)
def test_prune_cutoff_never_forgets_what_a_window_can_return(
    retention: timedelta, checkpoints: list[datetime | None], expected: datetime
) -> None:
    settings = replace(S, alerts=AlertSettings(retention=retention))
    assert prune_cutoff(T, settings, checkpoints) == expected


# ---------------------------------------------------------------- scenarios
def rig_for(em: Emulator, slack: FakeSlack, tmp: Path, now: datetime, **poll: object) -> Rig:
    settings = settings_for(em, slack, tmp)
    return Rig(replace(settings, poll=replace(settings.poll, **poll)), now)


def alert_texts(slack: FakeSlack) -> list[str]:
    out = []
    for m in slack.posted():
        blocks = [b for a in m["attachments"] for b in a["blocks"]]
        out.append("\n".join([m["text"], *(b["text"]["text"] for b in blocks if "text" in b)]))
    return out


def test_a_session_em_lists_hours_late_is_announced_once_and_says_so(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = rig_for(em, slack, tmp_path, now)
    try:
        job_run(em, now, [("web01", "Failed", "first")], job="Job A")
        assert rig.pipeline.poll_once(now).announced == 1  # first poll: a sweep
        # A backup server that was offline for hours brings a failure that ended 3 h ago.
        (late,) = job_run(em, now, [("db07", "Failed", "disk")], job="Job B", ended_ago=3 * H)
        r = rig.pipeline.poll_once(now + 10 * M)  # an ordinary poll cannot see it
        assert r.announced == 0
        r = rig.pipeline.poll_once(now + 61 * M)  # the hourly sweep does
        assert r.announced == 1
        assert slack.announced_uids()[-1] == late.uid
        assert "ended 4 h before Enterprise Manager listed it" in alert_texts(slack)[-1]
        for minutes in (70, 125, 185, 600):  # later polls and sweeps: nothing again
            assert rig.pipeline.poll_once(now + minutes * M).announced == 0
    finally:
        rig.close()
    assert Counter(slack.announced_uids()) == Counter(
        s.uid for s in em.store.all() if s.result == "Failed"
    )


def test_every_new_process_sweeps_on_its_first_poll(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = rig_for(em, slack, tmp_path, now)
    assert rig.pipeline.poll_once(now).announced == 0
    rig.close()
    job_run(em, now, [("db07", "Failed", "disk")], ended_ago=5 * H)
    rig = rig_for(em, slack, tmp_path, now + 5 * M)  # a restart, or the next `poll --once`
    try:
        assert rig.pipeline.poll_once(now + 5 * M).announced == 1
    finally:
        rig.close()


def test_a_session_listed_after_the_late_window_is_not_announced(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = rig_for(em, slack, tmp_path, now, late_window=2 * H)
    try:
        rig.pipeline.poll_once(now)
        job_run(em, now, [("db07", "Failed", "disk")], ended_ago=3 * H)
        assert rig.pipeline.poll_once(now + 2 * H).announced == 0
    finally:
        rig.close()


def test_a_first_run_does_not_announce_what_its_lookback_leaves_out(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """initial_lookback 1h, late window 24h: the failure of 5 h ago stays out on the first
    run and on every sweep after it."""
    job_run(em, now, [("old01", "Failed", "old")], ended_ago=5 * H)
    job_run(em, now, [("new01", "Failed", "new")], job="Job N", ended_ago=10 * M)
    rig = rig_for(em, slack, tmp_path, now, initial_lookback=H)
    try:
        assert rig.pipeline.poll_once(now).announced == 1
        assert rig.pipeline.poll_once(now + 2 * H).announced == 0
    finally:
        rig.close()


def test_fifteen_quiet_days_post_nothing(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """A failure, then two weeks and a day without any: retention (14 d) forgets the
    failure, and no query window reaches back to it, so it is never announced again."""
    job_run(em, now, [("sql01", "Failed", "once")], ended_ago=2 * M)
    rig = rig_for(em, slack, tmp_path, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 1
        for hour in range(1, 15 * 24 + 1):
            t = now + hour * H
            if hour % 24 == 0:  # the daily retention job
                rig.pipeline.prune(t)
            result = rig.pipeline.poll_once(t)
            assert (result.announced, result.exit_code) == (0, 0), t
        assert rig.store.records(ANNOUNCED, slack.announced_uids()[:1]) == {}  # forgotten
    finally:
        rig.close()
    assert len(slack.posted()) == 1


def test_a_cron_driven_bot_prunes_once_a_day(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    job_run(em, now, [("sql01", "Failed", "once")], ended_ago=2 * M)
    rig = rig_for(em, slack, tmp_path, now)
    try:
        rig.pipeline.poll_once(now)
        assert rig.pipeline.prune_if_due(now) == 0  # the first poll of a new store prunes
        assert rig.pipeline.prune_if_due(now + 23 * H) is None
        uid = slack.announced_uids()[0]
        rig.pipeline.poll_once(now + 15 * 24 * H)
        # the VM's session, and its job session (recorded: its task session told it)
        assert rig.pipeline.prune_if_due(now + 15 * 24 * H) == 2
        assert rig.store.records(ANNOUNCED, [uid]) == {}
    finally:
        rig.close()
