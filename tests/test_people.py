"""What people do to the bot's things: they delete its alerts, archive its channel and
change the configuration with problems open. None of it stalls a poll or repeats an alert."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.config.settings import Settings
from bot.emulator.server import Emulator
from bot.store.schema import CATCHUPS, HELD
from tests.fake_slack import FakeSlack
from tests.helpers import Rig, job_run, settings_for
from tests.test_lifecycle import text_of

M = timedelta(minutes=1)


def alert_of(slack: FakeSlack, vm: str, channel: str = "C0ALERTS") -> dict[str, object]:
    (alert,) = [
        m
        for m in slack.posted(channel)
        if m.get("subtype") != "thread_broadcast"
        and any(
            s["vm"] == vm
            for s in (m.get("metadata") or {}).get("event_payload", {}).get("sessions", [])
        )
    ]
    return alert


def test_a_deleted_alert_blocks_nothing_and_its_next_repeat_is_a_new_alert(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    job_run(em, now, [("sql01", "Failed", "disk full")], job="SQL", ended_ago=60 * M)
    job_run(em, now, [("web01", "Failed", "timeout")], job="Web", ended_ago=59 * M)
    assert rig.pipeline.poll_once(now - 55 * M).announced == 2
    deleted = alert_of(slack, "sql01")
    web = alert_of(slack, "web01")
    slack.delete(str(deleted["ts"]))  # someone tidies the channel
    (repeat,) = job_run(em, now, [("sql01", "Failed", "still full")], job="SQL", ended_ago=30 * M)
    (new,) = job_run(em, now, [("app01", "Warning", "slow")], job="App", ended_ago=29 * M)
    job_run(em, now, [("web01", "Success", "")], job="Web", ended_ago=28 * M)
    r = rig.pipeline.poll_once(now - 25 * M)
    assert (r.exit_code, r.pending, r.announced, r.recovered) == (0, 0, 2, 1), r
    # the repeat is a new top-level alert that says it is not the first failure
    again = alert_of(slack, "sql01")
    assert again["metadata"]["event_payload"]["sessions"][0]["uid"] == repeat.uid
    assert "still full" in text_of(again) and "failed again once" in text_of(again)
    assert alert_of(slack, "app01")["metadata"]["event_payload"]["sessions"][0]["uid"] == new.uid
    (recovery,) = slack.thread(str(web["ts"]))
    assert "Recovered" in text_of(recovery)
    assert "thread of sql01's alert" in caplog.text
    # from now on the new alert is the problem's: the next repeat goes to its thread
    (third,) = job_run(em, now, [("sql01", "Failed", "full again")], job="SQL", ended_ago=10 * M)
    r = rig.pipeline.poll_once(now - 5 * M)
    assert (r.exit_code, r.announced) == (0, 1)
    (reply,) = slack.thread(str(again["ts"]))
    assert reply["metadata"]["event_payload"]["sessions"][0]["uid"] == third.uid
    assert len(slack.posted()) == 3
    assert rig.pipeline.poll_once(now).exit_code == 0
    assert len(slack.announced_uids()) == len(set(slack.announced_uids()))


def test_a_deleted_alert_with_replies_keeps_its_thread_and_is_no_longer_updated(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    job_run(em, now, [("sql01", "Failed", "a")], ended_ago=60 * M)
    rig.pipeline.poll_once(now - 55 * M)
    (alert,) = slack.posted()
    job_run(em, now, [("sql01", "Failed", "b")], ended_ago=50 * M)
    rig.pipeline.poll_once(now - 45 * M)
    slack.delete(str(alert["ts"]))  # a tombstone: "This message was deleted."
    updates = len(slack.updates)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        job_run(em, now, [("sql01", "Failed", "c")], ended_ago=40 * M)
        r = rig.pipeline.poll_once(now - 35 * M)
        assert (r.exit_code, r.announced) == (0, 1)
        job_run(em, now, [("sql01", "Failed", "d")], ended_ago=30 * M)
        r = rig.pipeline.poll_once(now - 25 * M)
        assert (r.exit_code, r.announced) == (0, 1)
    assert len(slack.thread(str(alert["ts"]))) == 3  # the replies still go to the thread
    assert len(slack.updates) == updates  # nothing could be updated
    lines = [r.message for r in caplog.records if "cannot update the alert" in r.message]
    assert len(lines) == 1 and "message_not_found" in lines[0]


def moved(settings: Settings, channel: str) -> Settings:
    return replace(settings, alerts=replace(settings.alerts, channel=channel))


def test_changing_the_alert_channel_never_strands_an_open_problem(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """Open problems keep their threads in the old channel; new problems go to the new one."""
    settings = settings_for(em, slack, tmp_path)
    rig = Rig(settings, now - 55 * M)
    job_run(em, now, [("sql01", "Failed", "a")], job="SQL", ended_ago=60 * M)
    job_run(em, now, [("web01", "Failed", "b")], job="Web", ended_ago=60 * M)
    rig.pipeline.poll_once(now - 55 * M)
    rig.close()
    sql, web = alert_of(slack, "sql01"), alert_of(slack, "web01")
    rig = Rig(moved(settings, "#ops"), now - 25 * M)  # edited config, restarted bot
    try:
        job_run(em, now, [("sql01", "Failed", "again")], job="SQL", ended_ago=30 * M)
        job_run(em, now, [("web01", "Success", "")], job="Web", ended_ago=30 * M)
        (new,) = job_run(em, now, [("app01", "Failed", "new")], job="App", ended_ago=30 * M)
        r = rig.pipeline.poll_once(now - 25 * M)
        assert (r.exit_code, r.pending, r.announced, r.recovered) == (0, 0, 2, 1)
    finally:
        rig.close()
    assert "again" in text_of(slack.thread(str(sql["ts"]))[0])
    assert "Recovered" in text_of(slack.thread(str(web["ts"]))[0])
    assert "recovered" in text_of(alert_of(slack, "web01"))  # updated where it is
    (ops,) = slack.posted("C0OPS")
    assert ops["metadata"]["event_payload"]["sessions"][0]["uid"] == new.uid
    assert len(slack.posted("C0ALERTS")) == 2


def test_an_archived_channel_sends_the_next_repeat_to_the_alert_channel(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(em, slack, tmp_path)
    rig = Rig(settings, now - 55 * M)
    job_run(em, now, [("sql01", "Failed", "a")], ended_ago=60 * M)
    job_run(em, now, [("web01", "Failed", "b")], job="Web", ended_ago=60 * M)
    rig.pipeline.poll_once(now - 55 * M)
    rig.close()
    slack.archived.add("C0ALERTS")  # the old channel is archived; the config names #ops
    rig = Rig(moved(settings, "#ops"), now - 25 * M)
    try:
        (again,) = job_run(em, now, [("sql01", "Failed", "again")], ended_ago=30 * M)
        job_run(em, now, [("web01", "Success", "")], job="Web", ended_ago=30 * M)
        r = rig.pipeline.poll_once(now - 25 * M)
        assert (r.exit_code, r.pending, r.announced, r.recovered) == (0, 0, 1, 1)
        assert rig.pipeline.poll_once(now).exit_code == 0
    finally:
        rig.close()
    (ops,) = slack.posted("C0OPS")
    assert ops["metadata"]["event_payload"]["sessions"][0]["uid"] == again.uid
    assert Counter(slack.announced_uids("C0OPS")) == Counter([again.uid])


def test_slack_reads_are_retried_and_posts_are_not(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    """A 5xx on conversations.history is read again within the poll (backoff), so the
    poll's delivery goes on; a 5xx on a post is never re-sent blindly by the client."""
    rig.pipeline.poll_once(now - 40 * M)  # nothing yet; the channel's ID is known now
    job_run(em, now, [("sql01", "Failed", "a")], ended_ago=30 * M)
    slack.lose_answers = 1  # stored, answered 500: the pipeline looks in the channel
    slack.fail_reads = [500, 503]  # and that history read fails twice first
    r = rig.pipeline.poll_once(now - 25 * M)
    assert (r.exit_code, r.announced, r.pending) == (0, 1, 0)
    assert len(slack.method_calls("chat.postMessage")) == 1  # adopted, not posted again
    assert len(slack.method_calls("conversations.history")) == 3
    assert slack.fail_reads == []
    slack.fail_next = [500]  # a post answered 500 and not stored
    job_run(em, now, [("web01", "Failed", "b")], job="Web", ended_ago=20 * M)
    r = rig.pipeline.poll_once(now - 15 * M)
    assert r.announced == 1 and len(slack.posted()) == 2


D = timedelta(days=1)


def test_an_alert_open_for_20_days_outlives_a_14_day_retention(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """Retention forgets old alerts, but never the alert of a problem still open: twenty
    days on, its recovery is replied in its thread and the alert itself turns green."""
    settings = settings_for(em, slack, tmp_path, retention=14 * D)
    rig = Rig(settings, now - 20 * D)
    try:
        job_run(em, now, [("sql01", "Failed", "a")], ended_ago=20 * D)
        rig.pipeline.poll_once(now - 20 * D + 5 * M)
        (alert,) = slack.posted()
        job_run(em, now, [("sql01", "Failed", "b")], ended_ago=10 * D)  # still failing
        rig.pipeline.poll_once(now - 10 * D + 5 * M)
        rig.pipeline.prune(now - 5 * M)
        job_run(em, now, [("sql01", "Success", "")], ended_ago=2 * M)
        r = rig.pipeline.poll_once(now)
    finally:
        rig.close()
    assert (r.recovered, r.exit_code) == (1, 0)
    assert "Recovered" in text_of(slack.thread(str(alert["ts"]))[-1])
    assert "recovered" in text_of(slack.posted()[0])  # redrawn: its record was kept


def test_retention_forgets_what_nothing_reads_again(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    """Expired mutes, catch-up attempts, and the rows and state of an Enterprise Manager
    removed from the configuration go after `retention`; this server's state stays."""
    from bot.alerts.mutes import Mute, MuteBook
    from bot.store.codec import scoped

    (s,) = job_run(em, now, [("sql01", "Failed", "a")], ended_ago=5 * M)
    gone = rig.em_session(s.uid)._replace(em="old-em", uid="urn:old")
    store = rig.store
    long_ago = now - 30 * D
    book = MuteBook(store)
    book.add(Mute("m1", "vm", "a", "", (now - 20 * D).timestamp(), "", "U1", long_ago.timestamp()))
    book.add(Mute("m2", "vm", "b", "", (now + D).timestamp(), "", "U1", now.timestamp()))
    store.put_records(CATCHUPS, {"1-x": {"u": ["u1"], "t": long_ago.timestamp(), "e": ""}})
    store.mark_pending([gone], "C0ALERTS", long_ago)
    store.put_records(HELD, {"urn:old2": {"s": {**_json(gone), "uid": "urn:old2"}}})
    store.set_checkpoint("ReplicaTaskSession", long_ago, "old-em")
    store.set_meta(scoped("last_poll", "old-em"), {"at": long_ago.timestamp()})
    store.set_meta(scoped("source", "old-em"), {"down_since": None})
    rig.pipeline.poll_once(now)  # this server's own state
    store.commit()
    rig.pipeline.prune(now)
    assert [m.id for m in book.active(now - 25 * D)] == ["m2"]
    assert store.all_records(CATCHUPS) == {} and store.pending() == []
    assert store.all_records(HELD) == {}
    assert store.checkpoint("ReplicaTaskSession", "old-em") is None
    assert store.meta(scoped("last_poll", "old-em")) is None
    assert store.meta(scoped("source", "old-em")) is None
    assert store.checkpoint("ReplicaTaskSession") is not None
    assert store.meta("last_poll") is not None


def _json(s: object) -> dict[str, object]:
    from bot.store.codec import session_to_json

    return session_to_json(s)  # type: ignore[arg-type]


def test_follow_ups_slack_keeps_failing_keep_the_poll_from_ok(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    """Updates that meet a 5xx every time: the poll exits 2 (not 0), its outcome is a Slack
    error, and /healthz turns 503 once no poll has been whole for 3 intervals."""
    from bot.ops.health import health
    from bot.store.codec import scoped

    job_run(em, now, [("sql01", "Failed", "a")], ended_ago=60 * M)
    assert rig.pipeline.poll_once(now - 55 * M).exit_code == 0
    job_run(em, now, [("sql01", "Failed", "b")], ended_ago=50 * M)
    slack.fail_updates = [500] * 40
    for minutes in (45, 40, 35, 30, 25):
        r = rig.pipeline.poll_once(now - minutes * M)
        assert (r.exit_code, r.outcome, r.pending) == (2, "slack_error", 0)
    last = rig.store.meta(scoped("last_poll", ""))
    status, body = health(last, now - 25 * M, timedelta(minutes=5))
    assert status == 503 and "Slack" in body["reason"]
    slack.fail_updates = []
    assert rig.pipeline.poll_once(now - 20 * M).exit_code == 0
    assert "failed again once" in text_of(slack.posted()[0])
    status, _ = health(rig.store.meta(scoped("last_poll", "")), now - 20 * M, timedelta(minutes=5))
    assert status == 200
