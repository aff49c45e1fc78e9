"""The digest's 7-day strip: one mark per job and local day (the day's worst job-session
result, ⬜ for a day with no run), worst jobs first, at most 30. The table pins the pure
strip; the scenario posts a digest through the fake Slack from the emulator's job runs."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from bot.config.render import Renderer
from bot.config.settings import AlertSettings, DigestSettings, Secret, Settings, SlackSettings
from bot.digest.run import DigestRunner
from bot.digest.strip import DayStrip
from bot.emulator.server import Emulator
from bot.models import JobSession
from bot.slack.client import Pacer, web_client
from bot.slack.web import SlackNotifier
from bot.store.store import Store
from bot.veeam.client import EMClient
from tests.conftest import veeam_settings
from tests.fake_slack import TOKEN, FakeSlack, _texts
from tests.helpers import job_run

END = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)  # 08:00 in Berlin: the digest's hour
D = timedelta(days=1)
H = timedelta(hours=1)


def js(job: str, ended: datetime, result: str = "Success", state: str = "Stopped") -> JobSession:
    return JobSession(f"urn:veeam:BackupJobSession:{job}-{ended.isoformat()}", "BackupJobSession",
                      f"{job}@x", job, "urn:veeam:Job:1", "Backup", "vbr01", state, result, "",
                      False, 100, ended - H, ended)  # fmt: skip


# (days before the digest's day, hours after 01:00 local, result) → the strip
@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        # a nightly job, each day at 01:00 local; the last mark is the digest's own morning
        ([(d, 0, "Success") for d in range(7)], "🟩🟩🟩🟩🟩🟩🟩"),
        # a failure two days ago, retried into a Warning the same day: the worst stays
        ([(0, 0, "Success"), (2, 0, "Failed"), (2, 1, "Warning"), (1, 0, "Success")],
         "⬜⬜⬜⬜🟥🟩🟩"),
        # it stopped running four days ago
        ([(6, 0, "Success"), (5, 0, "Success"), (4, 0, "Success")], "🟩🟩🟩⬜⬜⬜⬜"),
        # older than the seven days, or after the window's end: left out
        ([(8, 0, "Failed"), (-1, 0, "Failed")], None),
    ],
)  # fmt: skip
def test_the_strip_of_one_job(runs: list[tuple[int, int, str]], expected: str | None) -> None:
    strip = DayStrip(END, "Europe/Berlin")
    for days, hours, result in runs:
        strip.add(js("Nightly SQL", END - days * D - 7 * H + hours * H, result), "Nightly SQL")
    rows, more = strip.rows()
    assert rows == ([(expected, "Nightly SQL")] if expected else []) and more == 0


def test_days_are_local_days() -> None:
    strip = DayStrip(END, "America/New_York")  # END is 02:00 there: its day began 2 h ago
    strip.add(js("J", END - 1 * H), "J")  # 01:00 New York: today
    strip.add(js("J", END - 3 * H), "J")  # 23:00 New York: yesterday
    assert strip.rows()[0] == [("⬜⬜⬜⬜⬜🟩🟩", "J")]


def test_a_running_session_marks_nothing() -> None:
    strip = DayStrip(END, "UTC")
    strip.add(js("J", END - H, "None", state="Working"), "J")
    assert strip.rows() == ([], 0)


def test_worst_first_and_at_most_thirty() -> None:
    strip = DayStrip(END, "UTC")
    for n in range(40):
        strip.add(js(f"ok{n:02}", END - H), f"ok{n:02}")
    strip.add(js("stopped", END - 6 * D), "stopped")
    strip.add(js("warned", END - H, "Warning"), "warned")
    strip.add(js("broken", END - H, "Failed"), "broken")
    rows, more = strip.rows()
    assert [job for _, job in rows[:3]] == ["broken", "warned", "stopped"]
    assert len(rows) == 30 and more == 13


def test_the_digest_posts_the_strip(em: Emulator, slack: FakeSlack, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)
    for days in (1, 2, 3):
        job_run(em, now, [("sql01", "Success", "")], job="Nightly SQL", ended_ago=days * D)
    job_run(em, now, [("web01", "Failed", "x")], job="Web <Replica> & co", ended_ago=2 * H)
    job_run(em, now, [("old01", "Success", "")], job="Old job", ended_ago=5 * D)
    settings = Settings(
        veeam=veeam_settings(em),
        alerts=AlertSettings(channel="C0ALERTS", max_posts_per_second=0),
        digest=DigestSettings(
            channel="C0DIGEST", at=time(8, 0), timezone="UTC", grace=timedelta(hours=6)
        ),
        slack=SlackSettings(bot_token=Secret(TOKEN), api_url=slack.url),
        state_path=str(tmp_path / "state.sqlite"),
    )
    client, store = EMClient(settings.veeam), Store(settings.state_path, now=now)
    notifier = SlackNotifier(web_client(TOKEN, settings.slack.api_url), Pacer(0, 1))
    try:
        DigestRunner(settings, client, store, notifier, Renderer()).run_scheduled(now)
    finally:
        client.close()
        store.close()
    (digest,) = slack.posted("C0DIGEST")
    text = "\n".join(_texts(digest["blocks"]))
    assert "*Last 7 days* (one mark a day" in text
    lines = [line for line in text.splitlines() if line[:1] in "🟩🟨🟥⬜"]
    assert lines == [
        "⬜⬜⬜⬜⬜⬜🟥 Web &lt;Replica&gt; &amp; co",  # the failing job first, escaped
        "⬜🟩⬜⬜⬜⬜⬜ Old job",  # stopped running four days ago
        "⬜⬜⬜🟩🟩🟩⬜ Nightly SQL",
    ]
