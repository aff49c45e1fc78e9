"""End-to-end alert scenarios: emulator → real pipeline → fake Slack, real store file."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.emulator.server import Emulator
from tests.fake_slack import FakeSlack, _texts
from tests.helpers import Rig, job_run, limit_problems, settings_for


def all_text(message: dict) -> str:
    parts = [message["text"]]
    parts += _texts(message["blocks"]) + _texts(message["attachments"])
    return "\n".join(parts)


def test_a_failure_gives_one_post_and_the_next_poll_none(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    (s,) = job_run(em, now, [("sql01", "Failed", "Error: disk full on [E:]")])
    r = rig.pipeline.poll_once(now)
    # fetched: the VM's task session and its job session, which its failure already tells
    assert (r.fetched, r.new, r.announced, r.pending, r.exit_code) == (2, 1, 1, 0, 0)
    (msg,) = slack.posted()
    assert slack.announced_uids() == [s.uid]
    text = all_text(msg)
    for needle in (
        "sql01",
        "Replication Job 2",
        "enterprise06.tech.local",
        "Error: disk full on [E:]",
        s.uid,
        "<!date^",
    ):
        assert needle in text
    assert msg["attachments"][0]["color"] == "#E01E5A"
    # a reader meets header → details → Reason → actions; the colour bar beside the rest
    assert [b["type"] for b in msg["blocks"]] == ["header"]
    kinds = [b["type"] for b in msg["attachments"][0]["blocks"]]
    assert kinds == ["section", "section", "context", "actions"]
    assert "*Reason:*" in msg["attachments"][0]["blocks"][1]["text"]["text"]
    assert msg["metadata"]["event_payload"]["job_session_uid"] == s.job_session_uid
    assert msg["metadata"]["event_payload"]["sessions"] == [
        {"uid": s.uid, "vm": "sql01", "result": "Failed"}
    ]
    later = now + timedelta(minutes=5)
    r2 = rig.pipeline.poll_once(later)
    assert (r2.announced, r2.new) == (0, 0) and len(slack.posted()) == 1
    # each poll: one query for the task failures, one for the job sessions' own, one for
    # the successes that would close the open problem (or, in the first poll, the problem
    # it opens); the job inventory is off here
    types = [q.params["type"] for q in em.queries()]
    assert types == 2 * ["ReplicaTaskSession", "ReplicaJobSession", "ReplicaTaskSession"]
    assert 'Result=="Success"' in em.queries()[-1].params["filter"]


def test_only_new_completed_failures_and_warnings_within_the_window(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("web01", "Success", ""), ("web02", "Warning", "CBT disabled")])
    job_run(em, now, [("old01", "Failed", "too old")], job="Old Job", ended_ago=timedelta(hours=30))
    running = job_run(em, now, [("run01", "Success", "")], job="Running Job")
    em.store.add([])
    for s in running:
        s.state, s.ended = "InProgress", None
    em.store.add([])  # clears the emulator's query cache
    rig.pipeline.poll_once(now)
    assert [m["metadata"]["event_payload"]["sessions"][0]["vm"] for m in slack.posted()] == [
        "web02"
    ]
    assert slack.posted()[0]["attachments"][0]["color"] == "#ECB22E"
    later = now + timedelta(minutes=10)
    new = job_run(
        em,
        later,
        [("sql02", "Failed", "VSS error"), ("sql03", "Failed", "VSS error")],
        job="SQL Replica - Tier 1",
        ended_ago=timedelta(minutes=1),
    )
    r = rig.pipeline.poll_once(later)
    assert r.announced == 2 and len(slack.posted()) == 2, "one job session, one message"
    assert sorted(slack.announced_uids()[1:]) == sorted(s.uid for s in new)
    assert "SQL Replica - Tier 1: 2 failed" in slack.posted()[1]["blocks"][0]["text"]["text"]


def test_slack_500_leaves_the_alert_pending_then_posts_next_poll(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    (s,) = job_run(em, now, [("exch01", "Failed", "RPC unavailable")])
    slack.fail_next = [500, 500, 500]
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.pending, r.exit_code) == (0, 1, 2)
    assert "HTTP 500" in r.slack_error and slack.posted() == []
    r2 = rig.pipeline.poll_once(now + timedelta(minutes=5))
    assert (r2.announced, r2.pending, r2.exit_code) == (1, 0, 0)
    assert slack.announced_uids() == [s.uid]
    assert "delivered late" in all_text(slack.posted()[0])


def test_lost_answer_is_reconciled_not_doubled(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    (s,) = job_run(em, now, [("file01", "Failed", "network path not found")])
    slack.lose_answers = 1  # Slack stores the message but the bot sees a 500
    r = rig.pipeline.poll_once(now)
    assert r.announced == 1 and r.pending == 0
    assert slack.announced_uids() == [s.uid]
    assert slack.method_calls("conversations.history")[0]["include_all_metadata"] in (
        True,
        "true",
        "1",
    )


def test_429_waits_for_retry_after_and_delivers(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("dc01", "Failed", "snapshot timeout")])
    slack.fail_next, slack.retry_after = [429], 1
    import time

    started = time.monotonic()
    r = rig.pipeline.poll_once(now)
    assert r.announced == 1 and time.monotonic() - started >= 1.0
    assert len(slack.method_calls("chat.postMessage")) == 2


@pytest.mark.parametrize(
    "hostile", ["<!channel>", "<@U024BE7LH>", "<http://x|y>", "<!here> & <!everyone>"]
)
def test_markup_in_a_reason_reaches_slack_as_visible_text(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime, hostile: str
) -> None:
    job_run(
        em, now, [(f"vm {hostile}", "Failed", f"Error: {hostile} happened")], job=f"Job {hostile}"
    )
    rig.pipeline.poll_once(now)
    (msg,) = slack.posted()
    escaped = hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    mrkdwn = all_text(msg).replace(msg["blocks"][0]["text"]["text"], "")
    assert hostile not in mrkdwn and escaped in mrkdwn
    assert f"Error: {escaped} happened" in msg["text"], "fallback text is escaped too"
    assert msg["blocks"][0]["text"]["type"] == "plain_text"


def test_a_6000_char_reason_fits_and_says_it_was_cut(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    reason = "\n".join(f"line {i}: <&> failed to read block" for i in range(200))[:6000]
    assert len(reason) == 6000
    job_run(em, now, [("big01", "Failed", reason)])
    r = rig.pipeline.poll_once(now)
    assert r.announced == 1
    (msg,) = slack.posted()
    reason_block = msg["attachments"][0]["blocks"][1]["text"]["text"]
    assert len(reason_block) <= 3000
    assert reason_block.endswith("… (truncated, 6000 chars)")
    assert "line 0: &lt;&amp;&gt; failed" in reason_block and "\nline 1:" in reason_block


def test_300_failed_vms_in_one_job_session_all_delivered_within_limits(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    run = job_run(
        em,
        now,
        [(f"vm-{i:03d}", "Failed", f"Error {i}: " + "x" * 900) for i in range(300)],
        job="Big Replication Job",
    )
    r = rig.pipeline.poll_once(now)
    assert r.announced == 300 and r.pending == 0
    posted = slack.posted()
    assert len(posted) == 8  # ceil(300 / 40)
    uids = Counter(slack.announced_uids())
    assert set(uids) == {s.uid for s in run} and set(uids.values()) == {1}
    for m in posted:
        assert len(m["metadata"]["event_payload"]["sessions"]) <= 40
        blocks = m["blocks"] + m["attachments"][0]["blocks"]
        assert len(blocks) <= 50
        assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
        assert len(m["text"]) > 0
    assert "(part 1 of 8)" in all_text(posted[0])


def test_channel_errors_name_the_channel(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    slack.members.discard("C0OPS")
    rig = Rig(
        settings_for(em, slack, tmp_path).__class__(
            **{
                **settings_for(em, slack, tmp_path).__dict__,
                "alerts": settings_for(em, slack, tmp_path).alerts.__class__(
                    channel="#ops", max_posts_per_second=0
                ),
            }
        ),
        now,
    )
    try:
        job_run(em, now, [("app01", "Failed", "x")])
        r = rig.pipeline.poll_once(now)
        assert r.pending == 1 and r.exit_code == 2
        assert r.slack_error.startswith("Slack cannot post to channel #ops (C0OPS): not_in_channel")
    finally:
        rig.close()


def test_em_down_is_exit_1_and_nothing_lost(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("sql09", "Failed", "x")])
    em.fail_queries += [503] * 3  # every attempt of the first query
    r = rig.pipeline.poll_once(now)
    assert r.exit_code == 1 and "HTTP 503" in r.em_error and slack.posted() == []
    assert r.retries == 2
    r2 = rig.pipeline.poll_once(now + timedelta(minutes=1))
    assert r2.announced == 1 and r2.exit_code == 0


def test_one_em_hiccup_costs_a_retry_not_the_poll(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("sql09", "Failed", "x")])
    em.fail_queries.append(500)
    r = rig.pipeline.poll_once(now)
    assert (r.exit_code, r.announced, r.retries) == (0, 1, 1)
    assert ", retries 1, " in r.summary(0.1)


def test_rendered_messages_respect_limits_for_hostile_emulator_data(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    from bot.emulator.data import generate

    em.store.add(generate(300, now=now, seed=9))
    rig = Rig(settings_for(em, slack, tmp_path), now)
    try:
        r = rig.pipeline.poll_once(now)
    finally:
        rig.close()
    assert r.announced >= 10 and r.pending == 0
    hostile = [m for m in slack.posted() if "Hostile" in m["text"]]
    assert hostile
    text = all_text(hostile[0])
    assert "<!channel>" not in text.replace(hostile[0]["blocks"][0]["text"]["text"], "")
    assert "сервер-БД-01" in text and "数据库服务器" in text


def test_limit_checker_flags_oversize() -> None:
    from bot.config.render import Message

    bad = Message(
        text="", blocks=[{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]
    )
    assert limit_problems(bad) == ["no fallback text", "header of 151 chars"]


def test_invalid_token_is_one_clear_error_and_keeps_alerts_pending(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("sql04", "Failed", "x")])
    slack.token = "xoxb-rotated"
    r = rig.pipeline.poll_once(now)
    assert r.pending == 1 and r.exit_code == 2
    assert r.slack_error.startswith("Slack rejected the bot token (invalid_auth)")
    slack.token = "xoxb-test-token"
    assert rig.pipeline.poll_once(now).announced == 1


def test_stopping_leaves_the_rest_pending_for_the_next_run(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("a1", "Failed", "x")], job="A")
    job_run(em, now, [("b1", "Failed", "y")], job="B")
    rig.pipeline.stopping.set()  # SIGTERM arrived
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.pending) == (0, 2) and slack.posted() == []
    rig.pipeline.stopping.clear()
    assert rig.pipeline.poll_once(now + timedelta(minutes=1)).announced == 2
    assert len(slack.announced_uids()) == 2
