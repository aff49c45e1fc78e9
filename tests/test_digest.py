"""The daily digest against the emulator and the fake Slack."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config.render import Renderer
from bot.config.settings import AlertSettings, DigestSettings, Secret, Settings, SlackSettings
from bot.digest.build import Summary, digest_window, due, scheduled_for
from bot.digest.run import DigestRunner
from bot.emulator.data import EmSession, SessionStore, generate
from bot.emulator.server import Emulator
from bot.models import TaskSession
from bot.schedule import digest_trigger
from bot.slack.client import Pacer, web_client
from bot.slack.web import SlackNotifier
from bot.store.store import Store
from bot.veeam.client import EMClient
from tests.conftest import veeam_settings
from tests.fake_slack import TOKEN, FakeSlack
from tests.helpers import bot_env, job_run, limit_problems, run_bot

ROOT = Path(__file__).resolve().parents[1]
BOTH = ("ReplicaTaskSession", "BackupTaskSession")


@pytest.fixture
def em(now: datetime) -> Iterator[Emulator]:
    emu = Emulator(SessionStore(generate(1500, now=now, seed=31, span=timedelta(days=3)))).start()
    yield emu
    emu.stop()


def settings_for(emu: Emulator, slack: FakeSlack, tmp: Path, **digest: object) -> Settings:
    return Settings(
        veeam=veeam_settings(emu, session_types=BOTH, page_size=200),
        alerts=AlertSettings(channel="C0ALERTS", max_posts_per_second=0),
        digest=DigestSettings(channel="C0DIGEST", **digest),  # type: ignore[arg-type]
        slack=SlackSettings(bot_token=Secret(TOKEN), api_url=slack.url),
        state_path=str(tmp / "state.sqlite"),
    )


def runner_for(settings: Settings, now: datetime) -> tuple[DigestRunner, EMClient, Store]:
    em, store = EMClient(settings.veeam), Store(settings.state_path, now=now)
    notifier = SlackNotifier(web_client(TOKEN, settings.slack.api_url), Pacer(0, 1))
    return DigestRunner(settings, em, store, notifier, Renderer()), em, store


def expected_counts(emu: Emulator, start: datetime, end: datetime) -> dict[str, int]:
    c = Counter(
        s.result
        for s in emu.store.all()
        if s.state == "Completed" and s.ended and start <= s.ended < end
    )
    return {k: c.get(k, 0) for k in ("Success", "Warning", "Failed")}


def test_counts_equal_what_em_holds_for_the_window(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    runner, client, store = runner_for(settings_for(em, slack, tmp_path), now)
    try:
        runner.post(runner.build(now))
    finally:
        client.close()
        store.close()
    (msg,) = slack.posted("C0DIGEST")
    payload = msg["metadata"]["event_payload"]
    exp = expected_counts(em, now - timedelta(hours=24), now)
    assert {k: payload[k.lower()] for k in exp} == exp
    assert all(type(payload[k]) is int for k in ("success", "warning", "failed"))
    assert msg["metadata"]["event_type"] == "veeam_digest"
    assert payload["window_end"] == now.isoformat().replace("+00:00", "Z")
    assert datetime.fromisoformat(payload["window_start"]) == now - timedelta(hours=24)
    prev = expected_counts(em, now - timedelta(hours=48), now - timedelta(hours=24))
    text = "\n".join(b["text"]["text"] for b in msg["blocks"] if b["type"] == "section")
    arrow = (
        "↑" if exp["Failed"] > prev["Failed"] else "↓" if exp["Failed"] < prev["Failed"] else "="
    )
    assert f"Failed {exp['Failed']} ({arrow}" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text


def test_still_failing_after_fail_success_fail(
    slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    emu = Emulator(SessionStore([])).start()
    try:
        job_run(emu, now, [("erp01", "Failed", "first")], job="ERP", ended_ago=timedelta(hours=9))
        job_run(emu, now, [("erp01", "Success", "")], job="ERP", ended_ago=timedelta(hours=6))
        job_run(emu, now, [("erp01", "Failed", "again")], job="ERP", ended_ago=timedelta(hours=1))
        job_run(emu, now, [("crm01", "Failed", "x")], job="CRM", ended_ago=timedelta(hours=5))
        job_run(emu, now, [("crm01", "Success", "")], job="CRM", ended_ago=timedelta(hours=2))
        runner, client, store = runner_for(settings_for(emu, slack, tmp_path), now)
        message = runner.build(now)
        client.close()
        store.close()
    finally:
        emu.stop()
    section = next(
        b["text"]["text"]
        for b in message.blocks
        if "Still failing" in b.get("text", {}).get("text", "")
    )
    assert "erp01 (ERP)" in section and "last success 5h 00m earlier" in section
    assert "crm01" not in section


def test_summary_memory_is_per_vm_not_per_session(now: datetime) -> None:
    s = Summary(now - timedelta(days=1), now)
    for session in generate(
        20000, now=now, seed=2, span=timedelta(hours=23), failure_rate=0.3, extras=False
    ):
        s.add(_as_task(session))
    assert s.seen > 15000
    assert len(s.recent) <= 400 and len(s.vms) < 2000


def _as_task(e: EmSession) -> TaskSession:
    return TaskSession(
        e.uid,
        e.type,
        e.name,
        e.vm,
        e.job,
        e.job_session_uid,
        e.server,
        e.state,
        e.result,
        e.reason,
        e.created,
        e.ended,
        e.total_size,
    )


def test_a_window_with_5000_failures_fits_slacks_limits(
    slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    emu = Emulator(
        SessionStore(generate(11500, now=now, seed=8, span=timedelta(hours=23), failure_rate=0.9))
    ).start()
    try:
        runner, client, store = runner_for(settings_for(emu, slack, tmp_path), now)
        message = runner.build(now)
        runner.post(message)
        client.close()
        store.close()
        exp = expected_counts(emu, now - timedelta(hours=24), now)
    finally:
        emu.stop()
    assert exp["Failed"] >= 5000
    assert limit_problems(message) == []
    (msg,) = slack.posted("C0DIGEST")  # the fake rejects anything over Slack's limits
    assert msg["metadata"]["event_payload"]["failed"] == exp["Failed"]
    assert "more" in "".join(b["text"]["text"] for b in msg["blocks"] if b["type"] == "section")


def test_dry_run_posts_nothing(em: Emulator, slack: FakeSlack, tmp_path: Path) -> None:
    env = bot_env(
        tmp_path,
        em.url,
        slack.url,
        '[veeam]\nsession_types = ["ReplicaTaskSession", "BackupTaskSession"]\n',
    )
    env["SLACK_ALERT_CHANNEL"] = "C0ALERTS"
    proc = run_bot(env, "digest", "--dry-run", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Veeam digest · ") and "succeeded" in proc.stdout
    assert slack.method_calls("chat.postMessage") == []
    real = run_bot(env, "digest", "--window", "12h", timeout=60)
    assert real.returncode == 0, real.stderr
    assert real.stdout.startswith("posted the digest to C0ALERTS")


def test_never_twice_on_the_same_day_even_after_a_restart(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(
        em, slack, tmp_path, at=time(0, 0), timezone="UTC", grace=timedelta(hours=23, minutes=59)
    )
    for minutes in (0, 5, 20):  # three "processes", each checking whether the digest is due
        runner, client, store = runner_for(settings, now)
        runner.run_scheduled(now + timedelta(minutes=minutes))
        client.close()
        store.close()
    assert len(slack.posted("C0DIGEST")) == 1


def test_a_missed_digest_is_posted_on_start_within_the_grace_period(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    scheduled = datetime(2026, 11, 29, 8, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    settings = settings_for(
        em, slack, tmp_path, at=time(8, 0), timezone="Europe/Berlin", grace=timedelta(hours=6)
    )
    late = scheduled.astimezone(UTC) + timedelta(hours=7)
    runner, client, store = runner_for(settings, late)
    runner.run_scheduled(late)  # 7 h late: beyond the grace period, nothing
    assert slack.posted("C0DIGEST") == []
    runner.run_scheduled(scheduled.astimezone(UTC) + timedelta(hours=24 + 2))  # next day, 2 h late
    client.close()
    store.close()
    assert len(slack.posted("C0DIGEST")) == 1


def test_em_unreachable_says_so_once_then_retries(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(
        em, slack, tmp_path, at=time(0, 0), timezone="UTC", grace=timedelta(hours=23, minutes=59)
    )
    runner, client, store = runner_for(settings, now)
    try:
        em.fail_queries.extend([503] * 6)  # two digest runs fail all three attempts of a query
        runner.run_scheduled(now)
        runner.run_scheduled(now + timedelta(minutes=15))
        posted = slack.posted("C0DIGEST")
        assert len(posted) == 1
        assert posted[0]["text"].startswith("Veeam digest unavailable: EM rejected the query")
        runner.run_scheduled(now + timedelta(minutes=30))
    finally:
        client.close()
        store.close()
    posted = slack.posted("C0DIGEST")
    assert len(posted) == 2 and posted[1]["metadata"]["event_type"] == "veeam_digest"


def test_dst_zone_fires_at_the_right_local_hour() -> None:
    zone = ZoneInfo("Europe/Berlin")
    trigger = digest_trigger(time(8, 0), "Europe/Berlin")
    before = trigger.get_next_fire_time(None, datetime(2026, 3, 28, 9, 0, tzinfo=zone))
    after = trigger.get_next_fire_time(None, datetime(2026, 3, 29, 9, 0, tzinfo=zone))
    autumn = trigger.get_next_fire_time(None, datetime(2026, 10, 25, 0, 30, tzinfo=zone))
    assert before.astimezone(UTC).hour == 6  # 08:00 CEST on 29 March (after the switch)
    assert after.astimezone(UTC).hour == 6
    assert (
        trigger.get_next_fire_time(None, datetime(2026, 3, 27, 9, 0, tzinfo=zone))
        .astimezone(UTC)
        .hour
        == 7
    )
    assert autumn.astimezone(UTC).hour == 7 and autumn.astimezone(zone).hour == 8


@pytest.mark.parametrize(
    ("now", "posted", "expected"),
    [
        (datetime(2026, 11, 29, 7, 0, tzinfo=UTC), None, "2026-11-29"),  # 08:00 Berlin, on time
        (datetime(2026, 11, 29, 6, 59, tzinfo=UTC), None, None),  # yesterday's, too late
        (datetime(2026, 11, 29, 12, 0, tzinfo=UTC), None, "2026-11-29"),  # 5 h late, in grace
        (datetime(2026, 11, 29, 13, 1, tzinfo=UTC), None, None),  # 6 h 1 m late
        (datetime(2026, 11, 29, 9, 0, tzinfo=UTC), "2026-11-29", None),  # already posted
    ],
)
def test_due(now: datetime, posted: str | None, expected: str | None) -> None:
    day = due(now, time(8, 0), "Europe/Berlin", timedelta(hours=6), posted)
    assert (day.isoformat() if day else None) == expected


def test_scheduled_for_uses_the_local_day() -> None:
    day, when = scheduled_for(datetime(2026, 11, 29, 23, 30, tzinfo=UTC), time(8, 0), "Asia/Tokyo")
    assert day.isoformat() == "2026-11-30" and when == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        ("2026-03-28", 24),  # a Saturday like any other
        ("2026-03-29", 23),  # clocks go forward that night: 23 h from 08:00 to 08:00
        ("2026-10-25", 25),  # clocks go back: 25 h
        ("2026-10-26", 24),
    ],
)
def test_the_window_runs_from_the_previous_scheduled_time(day: str, hours: int) -> None:
    start, end = digest_window(date.fromisoformat(day), time(8, 0), "Europe/Berlin")
    assert end - start == timedelta(hours=hours)
    assert end.astimezone(BERLIN).hour == 8 and start.astimezone(BERLIN).hour == 8
    assert end.tzinfo is UTC


def test_a_late_digest_counts_the_same_window_and_each_hour_once(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """Posted 5 h late, the digest still covers 08:00 to 08:00 local: the hours after 08:00
    belong to tomorrow's digest, and none is counted twice or left out."""
    settings = settings_for(
        em, slack, tmp_path, at=time(8, 0), timezone="Europe/Berlin", grace=timedelta(hours=6)
    )
    today = now.astimezone(BERLIN).date()
    start, end = digest_window(today, time(8, 0), "Europe/Berlin")
    if end > now:  # the emulator's history ends now; use yesterday's digest
        start, end = digest_window(today - timedelta(days=1), time(8, 0), "Europe/Berlin")
    runner, client, store = runner_for(settings, now)
    try:
        runner.run_scheduled(end + timedelta(hours=5))
    finally:
        client.close()
        store.close()
    (posted,) = slack.posted("C0DIGEST")
    payload = posted["metadata"]["event_payload"]
    assert payload["window_start"] == start.isoformat().replace("+00:00", "Z")
    assert payload["window_end"] == end.isoformat().replace("+00:00", "Z")
    counts = expected_counts(em, start, end)
    assert (payload["success"], payload["warning"], payload["failed"]) == (
        counts["Success"],
        counts["Warning"],
        counts["Failed"],
    )


def test_a_digest_whose_answer_was_lost_is_not_posted_again(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """Slack stored the digest but answered 500: the next attempt finds it in the channel
    by its veeam_digest metadata and does not post a second one."""
    settings = settings_for(
        em, slack, tmp_path, at=time(0, 0), timezone="UTC", grace=timedelta(hours=23, minutes=59)
    )
    runner, client, store = runner_for(settings, now)
    try:
        slack.lose_answers = 1
        runner.run_scheduled(now)
        assert len(slack.posted("C0DIGEST")) == 1
        runner.run_scheduled(now + timedelta(minutes=15))
        runner.run_scheduled(now + timedelta(minutes=30))
        assert store.meta("digest:last_day") == now.date().isoformat()
    finally:
        client.close()
        store.close()
    assert len(slack.posted("C0DIGEST")) == 1
    assert len(slack.method_calls("conversations.history")) == 1


def test_a_digest_that_never_reached_slack_is_posted_on_the_next_attempt(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(
        em, slack, tmp_path, at=time(0, 0), timezone="UTC", grace=timedelta(hours=23, minutes=59)
    )
    runner, client, store = runner_for(settings, now)
    try:
        slack.fail_next = [500]
        runner.run_scheduled(now)
        assert slack.posted("C0DIGEST") == []
        runner.run_scheduled(now + timedelta(minutes=15))
    finally:
        client.close()
        store.close()
    assert len(slack.posted("C0DIGEST")) == 1
