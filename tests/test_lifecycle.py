"""Alerts follow problems: repeats in the thread, recoveries, restarts, escalation."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.alerts.problems import Problem, identity, opened_by, plan
from bot.digest.run import DigestRunner
from bot.emulator.server import Emulator
from bot.models import TaskSession
from bot.store.schema import ALERTS, CATCHUPS, PROBLEMS
from tests.fake_slack import FakeSlack, _texts
from tests.helpers import Rig, job_run, settings_for

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def sess(uid: str, result: str, minute: int, vm: str = "vm1") -> TaskSession:
    return TaskSession(
        uid, "ReplicaTaskSession", f"{vm}@x", vm, "Job", "js-" + uid, "srv", "Completed",
        result, "", T, T + minute * M, 0,
    )  # fmt: skip


def open_problem(vm: str = "vm1", minute: int = 0) -> dict[str, Problem]:
    s = sess("old", "Failed", minute, vm)
    pid = identity("em", s)
    return {pid: opened_by(pid, s, "C1", "1.0")}


@pytest.mark.parametrize(
    ("failures", "successes", "problems", "expected"),
    [
        # a first failure opens a problem; its retry in the same poll is folded into it
        ([("f1", 1), ("f2", 5)], [], {}, (["f1"], [], [])),
        # an open problem: every failure is a repeat
        ([("f1", 1)], [], open_problem(), ([], ["f1"], [])),
        # a later Success recovers it
        ([], [("s1", 9)], open_problem(), ([], [], ["s1"])),
        # a Success older than the last failure does not
        ([("f1", 10)], [("s1", 9)], open_problem(), ([], ["f1"], [])),
        # a Success of an identity without an open problem means nothing
        ([], [("s1", 9)], {}, ([], [], [])),
        # fail, then the retry succeeds, in one poll: announced and recovered
        ([("f1", 1)], [("s1", 3)], {}, (["f1"], [], ["s1"])),
        # a recovered problem: a new failure is a new alert
        (
            [("f1", 20)],
            [],
            {k: replace(v, state="recovered") for k, v in open_problem().items()},
            (["f1"], [], []),
        ),
    ],
)
def test_plan(
    failures: list[tuple[str, int]],
    successes: list[tuple[str, int]],
    problems: dict[str, Problem],
    expected: tuple[list[str], list[str], list[str]],
) -> None:
    p = plan(
        "em",
        [sess(u, "Failed", m) for u, m in failures],
        [sess(u, "Success", m) for u, m in successes],
        problems,
    )
    got = ([s.uid for s in p.firsts], [s.uid for s in p.repeats], [s.uid for _, s in p.recoveries])
    assert got == expected


def test_other_vms_and_jobs_are_other_problems() -> None:
    p = plan("em", [sess("f1", "Failed", 1, "vm2")], [], open_problem("vm1"))
    assert [s.uid for s in p.firsts] == ["f1"]


# ---------------------------------------------------------------- scenarios
def text_of(message: dict[str, Any]) -> str:
    return "\n".join([message["text"], *_texts(message["blocks"] + message["attachments"])])


def test_fail_repeat_recover_then_a_new_alert(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    (first,) = job_run(em, now, [("apache02", "Failed", "disk full")], ended_ago=50 * M)
    rig.pipeline.poll_once(now - 45 * M)
    (alert,) = slack.posted()
    (again,) = job_run(em, now, [("apache02", "Failed", "still full")], ended_ago=30 * M)
    r = rig.pipeline.poll_once(now - 25 * M)
    assert r.announced == 1 and len(slack.posted()) == 1, "a repeat is not a new message"
    (reply,) = slack.thread(alert["ts"])
    assert "failed again, the 2nd time since" in text_of(reply) and "still full" in text_of(reply)
    assert reply["metadata"]["event_payload"]["sessions"][0]["uid"] == again.uid
    assert "failed again once" in text_of(slack.posted()[0])  # the alert was updated
    job_run(em, now, [("apache02", "Success", "")], ended_ago=10 * M)
    r = rig.pipeline.poll_once(now - 5 * M)
    assert r.recovered == 1 and len(slack.posted()) == 1
    replies = slack.thread(alert["ts"])
    assert len(replies) == 2
    assert "Recovered: *apache02* replicated successfully" in text_of(replies[1])
    assert "40m 00s after the first failure" in text_of(replies[1])
    updated = slack.posted()[0]
    assert updated["attachments"][0]["color"] == "#2EB67D"
    assert "recovered" in text_of(updated) and "Recovered" in updated["blocks"][0]["text"]["text"]
    assert updated["metadata"] == alert["metadata"], "reconciliation still finds it"
    assert rig.pipeline.poll_once(now).recovered == 0  # said once
    (back,) = job_run(em, now, [("apache02", "Failed", "again")], ended_ago=0 * M)
    rig.pipeline.poll_once(now + 5 * M)
    assert (
        len(slack.posted()) == 2
        and slack.posted()[1]["metadata"]["event_payload"]["sessions"][0]["uid"] == back.uid
    )
    assert Counter(slack.announced_uids()) == Counter([first.uid, again.uid, back.uid])


def test_in_a_group_only_the_recovered_vms_line_changes(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("web01", "Failed", "a"), ("web02", "Failed", "b")], ended_ago=30 * M)
    rig.pipeline.poll_once(now - 25 * M)
    (alert,) = slack.posted()
    job_run(em, now, [("web02", "Success", "")], ended_ago=10 * M)
    rig.pipeline.poll_once(now - 5 * M)
    blocks = slack.posted()[0]["attachments"][0]["blocks"]
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    lines = {vm: t for t in texts for vm in ("web01", "web02") if f"*{vm}*" in t}
    assert "recovered" not in lines["web01"]
    assert ":white_check_mark: recovered" in lines["web02"]
    assert slack.posted()[0]["attachments"][0]["color"] == "#E01E5A"  # web01 still failing
    assert len(slack.thread(alert["ts"])) == 1


def test_a_restart_between_fail_and_success_keeps_the_thread(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(em, slack, tmp_path)
    rig = Rig(settings, now - 30 * M)
    job_run(em, now, [("db01", "Failed", "x")], ended_ago=40 * M)
    rig.pipeline.poll_once(now - 30 * M)
    rig.close()
    job_run(em, now, [("db01", "Success", "")], ended_ago=5 * M)
    rig = Rig(settings, now)  # a new process
    try:
        assert rig.pipeline.poll_once(now).recovered == 1
    finally:
        rig.close()
    (alert,) = slack.posted()
    (reply,) = slack.thread(alert["ts"])
    assert "Recovered" in text_of(reply)


def test_warning_then_failed_is_shown_in_the_channel(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("fs01", "Warning", "slow")], ended_ago=30 * M)
    rig.pipeline.poll_once(now - 25 * M)
    job_run(em, now, [("fs01", "Failed", "dead")], ended_ago=10 * M)
    rig.pipeline.poll_once(now - 5 * M)
    posts = slack.posted()
    assert len(posts) == 2 and posts[1]["subtype"] == "thread_broadcast"
    assert "now *Failed*" in text_of(posts[1])
    assert len(slack.thread(posts[0]["ts"])) == 1
    assert len(slack.announced_uids()) == 2


def test_a_lost_answer_to_a_thread_reply_is_not_posted_twice(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("sql01", "Failed", "x")], ended_ago=30 * M)
    rig.pipeline.poll_once(now - 25 * M)
    job_run(em, now, [("sql01", "Failed", "y")], ended_ago=10 * M)
    slack.lose_answers = 1  # the reply is stored, the answer is a 500
    r = rig.pipeline.poll_once(now - 5 * M)
    assert r.exit_code == 0
    (alert,) = slack.posted()
    assert len(slack.thread(alert["ts"])) == 1
    assert len(set(slack.announced_uids())) == len(slack.announced_uids()) == 2


def test_a_crash_after_a_reply_before_its_record_is_reconciled(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """The reply reached the thread, then the process died before recording it: the next
    process finds it in the thread and posts nothing again."""
    settings = settings_for(em, slack, tmp_path)
    rig = Rig(settings, now)
    job_run(em, now, [("sql01", "Failed", "x")], ended_ago=30 * M)
    rig.pipeline.poll_once(now - 25 * M)
    (again,) = job_run(em, now, [("sql01", "Failed", "y")], ended_ago=10 * M)
    (alert,) = slack.posted()
    # What a killed process leaves: the pending mark, and the reply in Slack.
    rig.store.mark_pending([rig.em_session(again.uid)], "C0ALERTS", now)
    p = rig.pipeline.life.problems_of([rig.em_session(again.uid)])
    from bot.alerts.message import repeat_message

    msg = repeat_message(
        rig.pipeline.renderer, rig.em_session(again.uid), next(iter(p.values())), broadcast=False
    )
    rig.notifier.post("C0ALERTS", msg)
    rig.close()
    rig = Rig(settings, now)
    try:
        r = rig.pipeline.poll_once(now)
        assert (r.announced, r.pending, r.exit_code) == (0, 0, 0)
    finally:
        rig.close()
    assert len(slack.thread(alert["ts"])) == 1
    assert Counter(slack.announced_uids())[again.uid] == 1


def test_recovery_can_be_turned_off(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(em, slack, tmp_path, recovery=False)
    rig = Rig(settings, now)
    try:
        job_run(em, now, [("db01", "Failed", "x")], ended_ago=40 * M)
        rig.pipeline.poll_once(now - 30 * M)
        job_run(em, now, [("db01", "Success", "")], ended_ago=5 * M)
        assert rig.pipeline.poll_once(now).recovered == 0
    finally:
        rig.close()
    assert slack.thread(slack.posted()[0]["ts"]) == []
    assert not any('Result=="Success"' in q.params.get("filter", "") for q in em.queries())


def test_hold_a_retry_that_succeeds_within_the_hold_is_never_announced(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(em, slack, tmp_path, hold_for_retries=timedelta(minutes=40))
    rig = Rig(settings, now)
    try:
        (failed,) = job_run(em, now, [("sql01", "Failed", "x")], ended_ago=60 * M)
        r = rig.pipeline.poll_once(now - 55 * M)
        assert (r.announced, r.pending, r.exit_code) == (0, 0, 0)
        job_run(em, now, [("sql01", "Success", "")], ended_ago=40 * M)  # the retry, 20 min later
        for minutes in (35, 20, 0):
            assert rig.pipeline.poll_once(now - minutes * M).announced == 0
        assert rig.pipeline.poll_once(now + 60 * M).announced == 0  # also after a sweep
        assert rig.store.known([failed.uid])[0] == {failed.uid}  # remembered, not pending
        digest = DigestRunner(
            settings, rig.em, rig.store, rig.notifier, rig.pipeline.renderer
        ).build(now, timedelta(hours=2))
        assert digest.metadata is not None
        assert digest.metadata["event_payload"]["failed"] == 1  # the digest still counts it
    finally:
        rig.close()
    assert slack.posted() == []


def test_hold_works_with_recovery_replies_off(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(
        em, slack, tmp_path, hold_for_retries=timedelta(minutes=40), recovery=False
    )
    rig = Rig(settings, now)
    try:
        job_run(em, now, [("sql01", "Failed", "x")], ended_ago=60 * M)
        assert rig.pipeline.poll_once(now - 55 * M).announced == 0
        job_run(em, now, [("sql01", "Success", "")], ended_ago=40 * M)
        for minutes in (35, 10, 0):
            assert rig.pipeline.poll_once(now - minutes * M).announced == 0
    finally:
        rig.close()
    assert slack.posted() == []


def test_hold_a_failure_no_retry_fixes_is_announced_after_the_hold(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(em, slack, tmp_path, hold_for_retries=timedelta(minutes=40))
    rig = Rig(settings, now)
    try:
        (failed,) = job_run(em, now, [("sql01", "Failed", "x")], ended_ago=60 * M)
        assert rig.pipeline.poll_once(now - 55 * M).announced == 0
        assert rig.pipeline.poll_once(now - 30 * M).announced == 0
        r = rig.pipeline.poll_once(now - 15 * M)  # 45 min after the failure
        assert (r.announced, r.pending, r.exit_code) == (1, 0, 0)
        assert rig.pipeline.poll_once(now).announced == 0
    finally:
        rig.close()
    assert slack.announced_uids() == [failed.uid]


def test_hold_survives_a_restart(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = settings_for(em, slack, tmp_path, hold_for_retries=timedelta(minutes=40))
    rig = Rig(settings, now - 55 * M)
    job_run(em, now, [("sql01", "Failed", "x")], ended_ago=60 * M)
    rig.pipeline.poll_once(now - 55 * M)
    rig.close()
    rig = Rig(settings, now)
    try:
        assert rig.pipeline.poll_once(now - 10 * M).announced == 1
    finally:
        rig.close()
    assert len(slack.posted()) == 1


def test_failures_of_one_vm_in_one_poll_fold_into_one_alert(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    """After an outage a VM may have failed several times: one alert, which says so."""
    (a,) = job_run(em, now, [("db01", "Failed", "first")], ended_ago=50 * M)
    (b,) = job_run(em, now, [("db01", "Failed", "second")], ended_ago=30 * M)
    (c,) = job_run(em, now, [("db01", "Failed", "third")], ended_ago=10 * M)
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.pending, r.exit_code) == (3, 0, 0)
    (alert,) = slack.posted()
    assert slack.thread(alert["ts"]) == []
    assert "failed again 2 times" in text_of(alert)
    assert Counter(slack.announced_uids()) == Counter([a.uid, b.uid, c.uid])
    assert rig.pipeline.poll_once(now + 5 * M).announced == 0


def sixty_failing_job_runs(em: Emulator, now: datetime) -> list[str]:
    uids = []
    for n in range(60):
        run = job_run(
            em,
            now,
            [(f"vm{n:02d}a", "Failed", "x"), (f"vm{n:02d}b", "Warning", "y")],
            job=f"Job {n:02d}",
            ended_ago=(90 - n) * M,
        )
        uids += [s.uid for s in run]
    return uids


def catchups(slack: FakeSlack) -> list[dict[str, Any]]:
    return [
        m for m in slack.posted() if (m.get("metadata") or {}).get("event_type") == "veeam_catchup"
    ]


def test_a_first_run_with_60_failing_job_sessions_posts_one_catch_up(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    uids = sixty_failing_job_runs(em, now)
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.pending, r.exit_code) == (120, 0, 0)
    assert len(slack.posted()) <= 20
    (summary,) = catchups(slack)
    payload = summary["metadata"]["event_payload"]
    assert payload["sessions"] == 120 and payload["since"] and payload["until"]
    text = text_of(summary)
    assert "60 job sessions" in text and "120 VM" in text
    assert "/veeam failed warning since:" in text
    assert "*vm59a*" in text  # the newest failures are named
    assert rig.store.known(uids)[0] == set(uids)
    # A repeat of a folded problem goes to the summary's thread.
    (again,) = job_run(em, now, [("vm07a", "Failed", "again")], job="Job 07", ended_ago=0 * M)
    r = rig.pipeline.poll_once(now + 5 * M)
    assert r.announced == 1 and len(slack.posted()) == 1
    (reply,) = slack.thread(summary["ts"])
    assert reply["metadata"]["event_payload"]["sessions"][0]["uid"] == again.uid


def test_a_lost_answer_to_a_catch_up_is_not_posted_twice(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    sixty_failing_job_runs(em, now)
    slack.lose_answers = 1
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.pending, r.exit_code) == (120, 0, 0)
    assert len(catchups(slack)) == 1 and len(slack.posted()) == 1


def test_a_crash_after_the_catch_up_post_is_reconciled(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """Killed after Slack took the catch-up message, before anything was recorded: the
    next process finds it by its id and posts nothing again."""
    from bot.alerts.message import catchup_message

    settings = settings_for(em, slack, tmp_path)
    sixty_failing_job_runs(em, now)
    rig = Rig(settings, now)
    # What a process killed mid-post leaves: every session pending, the attempt recorded,
    # and the message in Slack.
    fetched = [s for s in rig.em.query("ReplicaTaskSession", "") if s.result != "Success"]
    rig.store.mark_pending(fetched, "C0ALERTS", now)
    rig.store.put_records(CATCHUPS, {"c1": {"u": [s.uid for s in fetched], "t": now.timestamp()}})
    rig.store.commit()
    rig.notifier.post("C0ALERTS", catchup_message(rig.pipeline.renderer, fetched, "c1"))
    rig.close()
    rig = Rig(settings, now + 5 * M)
    try:
        r = rig.pipeline.poll_once(now + 5 * M)
        assert (r.announced, r.pending, r.exit_code) == (0, 0, 0)
        assert rig.store.all_records(CATCHUPS) == {}
    finally:
        rig.close()
    assert len(catchups(slack)) == 1 and len(slack.posted()) == 1


def test_max_messages_per_poll_0_posts_every_alert(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = Rig(settings_for(em, slack, tmp_path, max_messages_per_poll=0), now)
    try:
        sixty_failing_job_runs(em, now)
        assert rig.pipeline.poll_once(now).announced == 120
    finally:
        rig.close()
    assert len(slack.posted()) == 60 and catchups(slack) == []


def test_retention_forgets_old_problems_and_their_alerts(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    job_run(em, now, [("db01", "Failed", "x")], ended_ago=40 * M)
    job_run(em, now, [("db02", "Failed", "x")], job="Other", ended_ago=40 * M)
    rig.pipeline.poll_once(now - 30 * M)
    job_run(em, now, [("db01", "Success", "")], ended_ago=5 * M)
    rig.pipeline.poll_once(now)
    assert len(rig.store.all_records(PROBLEMS)) == 2 and len(rig.store.all_records(ALERTS)) == 2
    rig.pipeline.prune(now + timedelta(days=13))
    assert len(rig.store.all_records(PROBLEMS)) == 2
    rig.pipeline.prune(now + timedelta(days=15))
    assert rig.store.all_records(PROBLEMS) == {} and rig.store.all_records(ALERTS) == {}


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["vm:apache02", "for:4h", "patching"], ("vm", "apache02", "", 4, "patching")),
        (
            ["job:Replication Job 2", "server:vbr01", "for:1d"],
            ("job", "Replication Job 2", "vbr01", 24, ""),
        ),
        (["for:30m", "vm:x", "a", "b"], ("vm", "x", "", 0.5, "a b")),
    ],
)
def test_parse_mute(words: list[str], expected: tuple[str, str, str, float, str]) -> None:
    from bot.alerts.mutes import parse_mute

    m = parse_mute(words, "U1", T)
    hours = (m.until - T.timestamp()) / 3600
    assert (m.kind, m.name, m.server, hours, m.reason) == expected
    assert m.by == "U1"


def test_a_mute_covers_its_vm_or_job_until_it_expires() -> None:
    from bot.alerts.mutes import Mute

    m = Mute("m1", "vm", "VM1", "", (T + 60 * M).timestamp(), "", "U1", T.timestamp())
    s = sess("u", "Failed", 0)  # vm1 in "Job" on "srv"
    assert m.covers(s, T) and not m.covers(s, T + 60 * M)
    assert not replace(m, server="other").covers(s, T)
    assert replace(m, server="SRV").covers(s, T)
    assert replace(m, kind="job", name="job").covers(s, T)
    assert not replace(m, name="vm2").covers(s, T)


def test_the_digest_never_says_nothing_is_failing_beside_vms_still_failing(
    rig: Rig, em: Emulator, now: datetime
) -> None:
    """A fresh state (or mutes): EM has VMs failing that the bot holds no open alert for;
    the problems line says so instead of "nothing is failing"."""
    runner = DigestRunner(rig.settings, rig.em, rig.store, rig.notifier, rig.pipeline.renderer)

    def problems_line() -> str:
        text = "\n".join(_texts(runner.build(now, timedelta(hours=24)).blocks))
        return next(line for line in text.splitlines() if "Open problems" in line)

    assert problems_line().endswith("· nothing is failing")
    job_run(em, now, [("db01", "Failed", "x"), ("db02", "Failed", "y")], ended_ago=3 * 60 * M)
    line = problems_line()
    assert "nothing is failing" not in line
    assert "*Open problems: 0* (alerted, not recovered yet)" in line
    assert "2 of the 2 VMs still failing have no open alert" in line
    rig.pipeline.poll_once(now - 170 * M)  # the bot alerts on both: nothing left unexplained
    assert problems_line() == "*Open problems: 2* (alerted, not recovered yet)"


def test_the_digest_lists_open_recovered_and_muted_problems(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    from bot.alerts.mutes import MuteBook, parse_mute

    job_run(em, now, [("db01", "Failed", "x"), ("db02", "Failed", "y")], ended_ago=3 * 60 * M)
    rig.pipeline.poll_once(now - 170 * M)
    job_run(em, now, [("db02", "Success", "")], ended_ago=20 * M)
    rig.pipeline.poll_once(now - 10 * M)
    MuteBook(rig.store).add(parse_mute(["vm:web09", "for:4h", "patching"], "U0ALICE", now))
    digest = DigestRunner(
        rig.settings, rig.em, rig.store, rig.notifier, rig.pipeline.renderer
    ).build(now, timedelta(hours=24))
    text = "\n".join(_texts(digest.blocks))
    assert "*Open problems: 1*" in text
    assert "• *db01* (Replication Job 2) · open 3h 00m · 1 failure" in text
    assert (
        "*Recovered in this window: 1*" in text
        and "• *db02* (Replication Job 2) after 2h 40m" in text
    )
    assert "• vm *web09* until <!date^" in text and "by <@U0ALICE>: patching" in text


@pytest.mark.parametrize(
    ("failed_min", "success_min", "now_min", "expected"),
    [
        (0, None, 10, "wait"),  # within the hold, no retry yet
        (0, None, 40, "announce"),  # the hold is over, nothing fixed it
        (0, 15, 20, "fixed"),  # a retry succeeded within the hold
        (0, None, 39, "wait"),
    ],
)
def test_hold(failed_min: int, success_min: int | None, now_min: int, expected: str) -> None:
    from bot.alerts.problems import hold

    failures = [sess("f1", "Failed", failed_min), sess("f2", "Failed", failed_min + 5)]
    successes = [sess("s1", "Success", success_min)] if success_min is not None else []
    split = hold("em", plan("em", failures, successes, {}), T + now_min * M, 40 * M)
    groups = {"announce": split.announce, "wait": split.wait, "fixed": split.fixed}
    assert [s.uid for s in groups[expected]] == ["f1"] + (["f2"] if expected != "announce" else [])
    if expected == "announce":
        assert [s.uid for s in split.folded] == ["f2"]  # the retry that also failed
    assert split.recoveries == []


@pytest.mark.parametrize("restart", [False, True])
def test_lowering_the_hold_announces_what_it_held(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime, restart: bool
) -> None:
    """`hold_for_retries` 40m → 0m (edited while failures are held, picked up by a restart
    or by a new process from cron): what was held is announced at the next poll, once."""
    held = settings_for(em, slack, tmp_path, hold_for_retries=timedelta(minutes=40))
    rig = Rig(held, now - 20 * M)
    failed = job_run(
        em, now, [("sql01", "Failed", "x"), ("sql02", "Warning", "y")], ended_ago=25 * M
    )
    assert rig.pipeline.poll_once(now - 20 * M).announced == 0
    assert slack.posted() == []
    lowered = replace(held, alerts=replace(held.alerts, hold_for_retries=timedelta(0)))
    if restart:
        rig.close()
        rig = Rig(lowered, now - 15 * M)
    else:
        rig.pipeline.settings = lowered
    try:
        r = rig.pipeline.poll_once(now - 15 * M)
        assert (r.announced, r.pending, r.exit_code) == (2, 0, 0)
        assert rig.pipeline.poll_once(now).announced == 0
    finally:
        rig.close()
    assert Counter(slack.announced_uids()) == Counter(s.uid for s in failed)


def test_the_newest_reason_is_shown_when_it_differs_from_the_first(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    """Folded failures and later repeats: the alert keeps its first Reason and adds the
    newest one (escaped: a `<!channel>` in it is text), unless it says the same."""
    job_run(em, now, [("db01", "Failed", "disk full")], ended_ago=60 * M)
    job_run(em, now, [("db01", "Failed", "quota <!channel> & more")], ended_ago=50 * M)
    rig.pipeline.poll_once(now - 45 * M)
    (alert,) = slack.posted()
    shown = text_of(alert)
    assert "disk full" in shown and "_latest:_ quota &lt;!channel&gt; &amp; more" in shown
    job_run(em, now, [("db01", "Failed", "network down")], ended_ago=30 * M)
    rig.pipeline.poll_once(now - 25 * M)
    assert "_latest:_ network down" in text_of(slack.posted()[0])
    job_run(em, now, [("db01", "Failed", "disk full")], ended_ago=10 * M)
    rig.pipeline.poll_once(now - 5 * M)
    assert "_latest:_" not in text_of(slack.posted()[0])  # the same Reason as the alert's
