"""Jobs that stop running, through the emulator's job list and job sessions, the real
pipeline (inventory refresh, then the stale stage) and the fake Slack: a stale job, a
schedule disabled, a run stuck in Working; each told once and closed by one reply; a mute;
a restart between marking and posting."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.alerts.mutes import Mute, MuteBook
from bot.config.render import Renderer
from bot.emulator.jobs import EmJob, EmJobSession
from bot.emulator.server import Emulator
from tests.fake_slack import FakeSlack, _texts
from tests.helpers import Rig, job_only, settings_for

M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)
JOB_UID = "urn:veeam:Job:0badc0de-0000-4000-8000-00000000051a"
REFRESH = 16 * M  # a little more than [jobs] refresh: every poll below refreshes


def text_of(message: dict) -> str:
    return "\n".join([message["text"], *_texts(message["blocks"]), *_texts(message["attachments"])])


def nightly(now: datetime, **kw: object) -> EmJob:
    base: dict[str, object] = {
        "uid": JOB_UID, "name": "Nightly SQL", "job_type": "Backup", "platform": "VMware",
        "server": "vbr01.example.local", "server_uid": "urn:veeam:BackupServer:1",
        "next_run": now + H,
    }  # fmt: skip
    base.update(kw)
    return EmJob(**base)  # type: ignore[arg-type]


def run(n: int, created: datetime, minutes: int = 30, **kw: object) -> EmJobSession:
    """The job's n-th run: a success that took `minutes`."""
    fields: dict[str, object] = {
        "uid": f"urn:veeam:BackupJobSession:0badc0de-0000-4000-8000-{n:012d}",
        "job": "Nightly SQL", "job_uid": JOB_UID, "job_type": "Backup",
        "name": f"Nightly SQL@{created:%Y-%m-%d %H:%M:%S}", "result": "Success", "failure": "",
        "created": created, "ended": created + minutes * M,
    }  # fmt: skip
    fields.update(kw)
    return job_only(created, **fields)


def rig_for(em: Emulator, slack: FakeSlack, tmp: Path, now: datetime) -> Rig:
    settings = settings_for(em, slack, tmp, inventory=True)
    veeam = replace(settings.veeam, session_types=("BackupTaskSession",))
    return Rig(replace(settings, veeam=veeam, servers=(veeam,)), now)


def test_a_stale_job_gets_one_alert_and_one_ran_again_reply(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    # a daily job whose last success was three days ago (EM still shows a NextRun ahead)
    em.job_list.add([nightly(now)])
    em.jobs.add([run(n, now - (6 - n) * D) for n in range(4)])
    rig = rig_for(em, slack, tmp_path, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 1
        (alert,) = slack.posted()
        text = text_of(alert)
        assert "Not running: Nightly SQL" in text and "*2 d*" in text  # twice the daily gap
        meta = alert["metadata"]
        assert meta["event_type"] == "veeam_stale_job"
        assert meta["event_payload"]["job"] == "Nightly SQL"
        assert meta["event_payload"]["server"] == "vbr01.example.local"
        assert meta["event_payload"]["expected_every"] == 2 * 86400
        assert meta["event_payload"]["last_success"].startswith(
            f"{now - 3 * D + 30 * M:%Y-%m-%dT%H:%M}"
        )
        assert rig.pipeline.poll_once(now + REFRESH).announced == 0  # once per episode
        em.jobs.add([run(9, now + 5 * M, minutes=10)])  # it runs again, and succeeds
        assert rig.pipeline.poll_once(now + 2 * REFRESH).announced == 1
        (reply,) = slack.thread(alert["ts"])
        assert "*Nightly SQL*: ran again: succeeded at" in text_of(reply)
        assert rig.pipeline.poll_once(now + 3 * REFRESH).announced == 0
        assert len(slack.posted()) == 1 and len(slack.thread(alert["ts"])) == 1
    finally:
        rig.close()


def test_a_job_without_history_is_stale_when_its_next_run_passed_with_no_run(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    em.job_list.add([nightly(now, next_run=now - 90 * M)])  # 1 h 30 ago; the grace is 1 h
    rig = rig_for(em, slack, tmp_path, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 1
        assert "has not succeeded since its scheduled run" in text_of(slack.posted()[0])
    finally:
        rig.close()


def test_a_disabled_schedule_is_noticed_once_and_its_return_replied(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    em.job_list.add([nightly(now)])
    em.jobs.add([run(n, now - (3 - n) * D) for n in range(4)])
    rig = rig_for(em, slack, tmp_path, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 0  # first sight: nothing to say
        em.job_list.change(JOB_UID, schedule_enabled=False)
        assert rig.pipeline.poll_once(now + REFRESH).announced == 1
        (alert,) = slack.posted()
        assert "Schedule disabled: Nightly SQL" in text_of(alert)
        assert "The schedule of *Nightly SQL* was disabled (last run" in text_of(alert)
        assert alert["metadata"]["event_type"] == "veeam_job_disabled"
        assert alert["metadata"]["event_payload"]["server"] == "vbr01.example.local"
        assert rig.pipeline.poll_once(now + 2 * REFRESH).announced == 0
        em.job_list.change(JOB_UID, schedule_enabled=True)
        assert rig.pipeline.poll_once(now + 3 * REFRESH).announced == 1
        (reply,) = slack.thread(alert["ts"])
        assert "its schedule was enabled again" in text_of(reply)
    finally:
        rig.close()


def test_a_run_stuck_in_working_gets_one_alert_and_a_reply_when_it_ends(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    em.job_list.add([nightly(now)])
    em.jobs.add([run(n, now - (4 - n) * D) for n in range(4)])  # 30 minutes each
    stuck = run(7, now - 3 * H, state="Working", result="None", ended=None)
    em.jobs.add([stuck])
    rig = rig_for(em, slack, tmp_path, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 1
        (alert,) = slack.posted()
        assert "Running long: Nightly SQL" in text_of(alert)
        assert "its runs usually take 30 min" in text_of(alert)
        payload = alert["metadata"]["event_payload"]
        assert alert["metadata"]["event_type"] == "veeam_long_running"
        assert payload["job_session_uid"] == stuck.uid
        assert payload["started"].startswith(f"{now - 3 * H:%Y-%m-%dT%H:%M}")
        assert rig.pipeline.poll_once(now + REFRESH).announced == 0
        em.jobs.change(stuck.uid, state="Stopped", result="Success", ended=now + 20 * M)
        assert rig.pipeline.poll_once(now + 2 * REFRESH).announced == 1
        (reply,) = slack.thread(alert["ts"])
        assert "the run finished (Success)" in text_of(reply)
    finally:
        rig.close()


def test_a_mute_of_the_job_silences_its_stale_alert(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    em.job_list.add([nightly(now, next_run=now - 3 * H)])
    rig = rig_for(em, slack, tmp_path, now)
    try:
        until = (now + D).timestamp()
        MuteBook(rig.store).add(Mute("m1", "job", "nightly sql", "", until, "", "U1", 0.0))
        assert rig.pipeline.poll_once(now).announced == 0
        assert slack.posted() == []
    finally:
        rig.close()


def test_a_restart_between_marking_and_posting_keeps_the_alert_once(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = rig_for(em, slack, tmp_path, now - REFRESH)
    try:
        rig.pipeline.poll_once(now - REFRESH)  # the channel's ID is known; nothing to say
        em.job_list.add([nightly(now, next_run=now - 3 * H)])
        slack.lose_answers = 10  # Slack stores the alert; the bot never hears back
        slack.fail_reads = [500] * 30  # nor can it look
        rig.pipeline.poll_once(now)
    finally:
        rig.close()
    assert len(slack.posted()) == 1
    slack.lose_answers, slack.fail_reads = 0, []
    again = rig_for(em, slack, tmp_path, now + REFRESH)  # a new process, the same state
    try:
        assert again.pipeline.poll_once(now + REFRESH).announced == 0
        assert again.pipeline.poll_once(now + 2 * REFRESH).announced == 0
        assert len(slack.posted()) == 1
    finally:
        again.close()


def test_the_digest_lists_the_jobs_not_running_and_counts_job_level_failures(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    from bot.digest.run import DigestRunner
    from tests.helpers import job_run

    em.job_list.add([nightly(now, next_run=now - 3 * H)])  # never ran: stale
    em.jobs.add([job_only(now - 2 * H)])  # a file share job failing before any file
    job_run(em, now, [("db01", "Failed", "x"), ("db02", "Success", "")], job="Files",
            kind="Backup", ended_ago=H)  # fmt: skip
    rig = rig_for(em, slack, tmp_path, now)
    try:
        rig.pipeline.poll_once(now)  # the inventory is read
        runner = DigestRunner(rig.settings, rig.em, rig.store, rig.notifier, Renderer())
        receipt = runner.post(runner.build(now, timedelta(hours=24)))
        (digest,) = [m for m in slack.posted() if m["ts"] == receipt.ts]
        text = "\n".join(_texts(digest["blocks"]))
        assert "*Not running* (1): stale, schedule disabled or running long" in text
        assert "⏳ *Nightly SQL* (vbr01.example.local) · no run seen · last success never" in text
        # the VM and the file share job: two failures, one of them a run with no VM
        assert "*2 failed · 0 warnings · 1 succeeded*" in text
        assert "the counts include 1 job run that failed or warned with no VM failing" in text
        assert "1 VM still failing" in text  # the job is not a VM
    finally:
        rig.close()


def test_many_jobs_not_running_at_once_are_told_in_one_message(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    """A first start finds 25 stale jobs: one summary (more than [alerts]
    max_messages_per_poll, 20), and each one's end is replied in its thread."""
    uids = [f"urn:veeam:Job:0badc0de-0000-4000-8000-{n:012d}" for n in range(25)]
    em.job_list.add([nightly(now, uid=u, name=f"Job {n:02d}", next_run=now - 3 * H)
                     for n, u in enumerate(uids)])  # fmt: skip
    rig = rig_for(em, slack, tmp_path, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 1
        (summary,) = slack.posted()
        assert summary["metadata"]["event_type"] == "veeam_jobs_summary"
        assert summary["metadata"]["event_payload"]["stale"] == 25
        text = text_of(summary)
        assert "25 jobs not running as scheduled" in text and "_and 10 more_" in text
        assert rig.pipeline.poll_once(now + REFRESH).announced == 0
        em.jobs.add([run(1, now + 5 * M, job="Job 03", job_uid=uids[3])])  # Job 03 runs again
        assert rig.pipeline.poll_once(now + 2 * REFRESH).announced == 1
        (reply,) = slack.thread(summary["ts"])
        assert "*Job 03*: ran again" in text_of(reply)
        assert len(slack.posted()) == 1
    finally:
        rig.close()


@pytest.mark.parametrize("kind", ["disabled", "running"])
def test_a_restart_between_marking_and_posting_keeps_each_alert_once(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime, kind: str
) -> None:
    em.job_list.add([nightly(now)])
    em.jobs.add([run(n, now - (4 - n) * D) for n in range(4)])
    rig = rig_for(em, slack, tmp_path, now - REFRESH)
    try:
        rig.pipeline.poll_once(now - REFRESH)  # the channel's ID and the schedule are known
        assert slack.posted() == []
        if kind == "disabled":
            em.job_list.change(JOB_UID, schedule_enabled=False)
        else:
            em.jobs.add([run(7, now - 3 * H, state="Working", result="None", ended=None)])
        slack.lose_answers = 10  # Slack stores the alert; the bot never hears back
        slack.fail_reads = [500] * 30  # nor can it look
        rig.pipeline.poll_once(now)
    finally:
        rig.close()
    assert len(slack.posted()) == 1
    slack.lose_answers, slack.fail_reads = 0, []
    again = rig_for(em, slack, tmp_path, now + REFRESH)  # a new process, the same state
    try:
        assert again.pipeline.poll_once(now + REFRESH).announced == 0
        assert again.pipeline.poll_once(now + 2 * REFRESH).announced == 0
        (alert,) = slack.posted()
        assert (
            alert["metadata"]["event_type"]
            == f"veeam_{'job_disabled' if kind == 'disabled' else 'long_running'}"
        )
    finally:
        again.close()


def test_a_route_channel_archived_holds_up_no_other_job_alert(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    from bot.config.settings import Route

    web = nightly(now, uid=JOB_UID + "2", name="Web Farm", next_run=now - 3 * H)
    em.job_list.add([nightly(now, next_run=now - 3 * H), web])
    rig = rig_for(em, slack, tmp_path, now - REFRESH)
    settings = rig.pipeline.settings
    rig.pipeline.settings = replace(
        settings, alerts=replace(settings.alerts, routes=(Route("#ops", jobs=("Nightly*",)),))
    )
    try:
        slack.archived.add("C0OPS")
        r = rig.pipeline.poll_once(now)
        assert "is_archived" in r.slack_error
        (web,) = slack.posted("C0ALERTS")  # told all the same
        assert "Not running: Web Farm" in text_of(web)
        slack.archived.discard("C0OPS")
        rig.pipeline.poll_once(now + REFRESH)
        (nightly_alert,) = slack.posted("C0OPS")  # once, when the channel is back
        assert "Not running: Nightly SQL" in text_of(nightly_alert)
        assert len(slack.posted("C0ALERTS")) == 1
    finally:
        rig.close()
