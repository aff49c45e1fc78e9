"""Job sessions through the emulator, the real pipeline and the fake Slack: a job that fails
with no failed VM, file share and agent jobs, a job session its VMs already tell, Veeam's
retries of a run, a restart in the middle; and `hold_for_retries = "auto"`."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from bot.config.convert import AUTO_HOLD
from bot.config.settings import Settings
from bot.emulator.data import EmSession
from bot.emulator.jobs import EmJob, EmJobSession
from bot.emulator.server import Emulator
from tests.fake_slack import FakeSlack, _texts
from tests.helpers import Rig, job_only, job_run, settings_for

M = timedelta(minutes=1)
H = timedelta(hours=1)
BACKUPS = ("BackupTaskSession",)


def text_of(message: dict) -> str:
    return "\n".join([message["text"], *_texts(message["blocks"]), *_texts(message["attachments"])])


def watching(settings: Settings, types: tuple[str, ...] = BACKUPS) -> Settings:
    veeam = replace(settings.veeam, session_types=types)
    return replace(settings, veeam=veeam, servers=(veeam,))


def run_of(s: EmSession, now: datetime, **kw: object) -> EmJobSession:
    """The job session of the run a task session belongs to, as EM lists it."""
    fields: dict[str, object] = {"uid": s.job_session_uid, "type": "ReplicaJobSession",
                                 "job": s.job, "job_uid": s.job_uid, "job_type": "Replica",
                                 "name": f"{s.job}@x"}  # fmt: skip
    return job_only(now, **{**fields, **kw})


def backup_rig(em: Emulator, slack: FakeSlack, tmp: Path, now: datetime, **kw: object) -> Rig:
    return Rig(watching(settings_for(em, slack, tmp, **kw)), now)


def test_a_job_failing_before_any_vm_is_announced_once_with_its_failure_message(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    js = job_only(now, job_type="Backup", job="Nightly SQL", name="Nightly SQL@2026-11-20",
                  failure="Repository \"repo01\" is unavailable <!channel> & co")  # fmt: skip
    em.jobs.add([js])
    rig = backup_rig(em, slack, tmp_path, now)
    try:
        r = rig.pipeline.poll_once(now)
        assert (r.new, r.announced) == (1, 1)
        (msg,) = slack.posted()
        text = text_of(msg)
        assert "Nightly SQL (backup)" in text  # the job and its kind where a VM would be
        assert "&lt;!channel&gt; &amp; co" in text and "<!channel>" not in text
        assert "*VM:*" not in text and "Mute VM" not in str(msg["blocks"])
        payload = msg["metadata"]["event_payload"]
        assert msg["metadata"]["event_type"] == "veeam_session_alert"
        assert payload["sessions"] == [{"uid": js.uid, "vm": "", "result": "Failed"}]
        assert payload["job_session_uid"] == js.uid
        r2 = rig.pipeline.poll_once(now + 5 * M)
        assert (r2.new, r2.announced) == (0, 0) and len(slack.posted()) == 1
    finally:
        rig.close()


def test_file_share_and_agent_job_failures_are_each_announced_in_words(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    nas = job_only(now)  # NasBackup, Failed, with a FailureMessage
    agent = job_only(now, uid="urn:veeam:BackupJobSession:0badc0de-0000-4000-8000-0000000a6e17",
                     job="Laptops", name="Laptops@2026-11-20", job_type="AgentBackup",
                     job_uid="urn:veeam:Job:0badc0de-0000-4000-8000-0000000a6e17",
                     result="Warning", failure="")  # fmt: skip
    em.jobs.add([nas, agent])
    rig = backup_rig(em, slack, tmp_path, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 2
        texts = [text_of(m) for m in slack.posted()]
        (laptops,) = [t for t in texts if "Laptops" in t]
        (share,) = [t for t in texts if "Projects share" in t]
        assert "Laptops (agent backup)" in laptops and "*Type:* Agent backup" in laptops
        # EM gave no FailureMessage: say so, and where to look
        assert f"EM gave no reason; `/veeam session {agent.uid}`" in laptops
        assert "Projects share (file share backup)" in share
        assert "Failed to connect to" in share
    finally:
        rig.close()


def test_a_job_session_whose_vms_failed_adds_no_message_and_its_failure_is_the_job_line(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = Rig(settings_for(em, slack, tmp_path), now)
    try:
        # the VMs fail and are announced; the job session ends later, with its own message
        (s,) = job_run(em, now, [("sql01", "Failed", "disk full")], ended_ago=20 * M)
        # EM lists the run as working until the job ends, after its VMs
        em.jobs.add([run_of(s, now, state="Working", result="None", failure="",
                            created=now - 30 * M, ended=None)])  # fmt: skip
        assert rig.pipeline.poll_once(now - 10 * M).announced == 1
        em.jobs.change(s.job_session_uid, state="Stopped", result="Failed", ended=now - 2 * M,
                       failure="Processing sql01 Error: disk full")  # fmt: skip
        r = rig.pipeline.poll_once(now)
        assert (r.new, r.announced) == (0, 0)
        assert len(slack.posted()) == 1  # no second message for the run
        (_, ts, update) = slack.updates[-1]  # the alert, redrawn with the job's own line
        assert ts == slack.posted()[0]["ts"]
        assert "*Job:* Processing sql01 Error: disk full" in text_of(update)
        assert rig.pipeline.poll_once(now + 5 * M).announced == 0
    finally:
        rig.close()


def test_a_job_session_told_in_the_same_poll_as_its_vms_is_drawn_into_their_alert(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = Rig(settings_for(em, slack, tmp_path), now)
    try:
        (s,) = job_run(em, now, [("sql01", "Failed", "disk full")], ended_ago=20 * M)
        em.jobs.add([run_of(s, now, failure="Job finished with error", created=now - 30 * M,
                            ended=now - 19 * M)])  # fmt: skip
        assert rig.pipeline.poll_once(now).announced == 1
        (msg,) = slack.posted()
        assert "sql01" in text_of(msg) and "*Job:* Job finished with error" in text_of(msg)
    finally:
        rig.close()


def test_a_job_level_problem_repeats_in_its_thread_and_its_next_success_recovers_it(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    first = job_only(now - 2 * H)
    em.jobs.add([first])
    rig = backup_rig(em, slack, tmp_path, now - 2 * H)
    try:
        assert rig.pipeline.poll_once(now - 2 * H).announced == 1
        (alert,) = slack.posted()
        # Veeam's retry of the run fails too: a repeat, in the thread
        uid = "urn:veeam:BackupJobSession:0badc0de-0000-4000-8000-00000000f12e"
        retry = job_only(now - H, uid=uid, is_retry=True, failure="Still cannot reach nas01")
        em.jobs.add([retry])
        assert rig.pipeline.poll_once(now - H).announced == 1
        (repeat,) = slack.thread(alert["ts"])
        assert "Projects share (file share backup)" in text_of(repeat)
        assert "Still cannot reach nas01" in text_of(repeat)
        # the next run succeeds: one reply closes the problem
        ok = job_only(now, uid="urn:veeam:BackupJobSession:0badc0de-0000-4000-8000-00000000f13e",
                      result="Success", failure="")  # fmt: skip
        em.jobs.add([ok])
        r = rig.pipeline.poll_once(now)
        assert r.recovered == 1
        closing = slack.thread(alert["ts"])[-1]
        assert "Recovered: *Projects share (file share backup)* ran successfully" in text_of(
            closing
        )
        assert len(slack.posted()) == 1
    finally:
        rig.close()


def test_a_retry_of_a_run_with_no_open_alert_is_never_a_new_alert(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    em.jobs.add([job_only(now, is_retry=True)])
    rig = backup_rig(em, slack, tmp_path, now)
    try:
        r = rig.pipeline.poll_once(now)
        assert (r.announced, slack.posted()) == (0, [])
        assert rig.pipeline.poll_once(now + 5 * M).announced == 0
    finally:
        rig.close()


def test_a_restart_with_a_job_level_alert_pending_posts_it_once(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = backup_rig(em, slack, tmp_path, now)
    rig.pipeline.poll_once(now - 5 * M)  # a quiet poll: the channel's ID is known
    em.jobs.add([job_only(now)])
    slack.lose_answers = 10  # Slack stores the post and the bot never hears: it stays pending
    slack.fail_reads = [500] * 20  # and it cannot look in the channel either
    try:
        r = rig.pipeline.poll_once(now)
        assert r.pending == 1 and r.exit_code != 0
    finally:
        rig.close()
    slack.lose_answers, slack.fail_reads = 0, []
    again = backup_rig(em, slack, tmp_path, now + 5 * M)  # a new process, the same state file
    try:
        r = again.pipeline.poll_once(now + 5 * M)
        assert r.pending == 0
        assert slack.announced_uids() == [
            job_only(now).uid
        ]  # found in the channel, not posted again
        assert again.pipeline.poll_once(now + 10 * M).announced == 0
    finally:
        again.close()


def test_hold_auto_waits_for_the_jobs_own_retry_window(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    (s,) = job_run(em, now, [("sql01", "Failed", "disk full")], ended_ago=M)
    # the job retries twice, 30 minutes apart: held for an hour and five minutes
    em.job_list.change(s.job_uid, retry_times=2, retry_timeout=30)
    settings = settings_for(em, slack, tmp_path, inventory=True, hold_for_retries=AUTO_HOLD)
    rig = Rig(settings, now)
    try:
        assert rig.pipeline.poll_once(now).announced == 0
    finally:
        rig.close()
    rig = Rig(settings, now + 50 * M)  # a restart in the middle: the hold and the jobs are kept
    try:
        # past the 35 minutes of a job the inventory does not know, still held
        assert rig.pipeline.poll_once(now + 50 * M).announced == 0
        assert slack.posted() == []
        r = rig.pipeline.poll_once(now + 67 * M)
        assert r.announced == 1
        assert [m["metadata"]["event_payload"]["sessions"][0]["vm"] for m in slack.posted()] == [
            "sql01"
        ]
    finally:
        rig.close()


def test_hold_auto_holds_a_job_the_inventory_does_not_know_for_35_minutes(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    job_run(em, now, [("sql01", "Failed", "disk full")], ended_ago=M)
    em.job_list.add([EmJob("urn:veeam:Job:other", "Other", "Replica", "VMware", "x", "y")])
    settings = settings_for(em, slack, tmp_path, hold_for_retries=AUTO_HOLD)  # no inventory
    rig = Rig(settings, now)
    try:
        assert rig.pipeline.poll_once(now + 30 * M).announced == 0
        assert rig.pipeline.poll_once(now + 37 * M).announced == 1
    finally:
        rig.close()


def test_a_run_whose_vms_failed_hours_before_it_ended_adds_no_message(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    rig = Rig(settings_for(em, slack, tmp_path), now - 3 * H)
    try:
        (s,) = job_run(em, now, [("sql01", "Failed", "disk full")], ended_ago=3 * H + 5 * M)
        em.jobs.add([run_of(s, now, state="Working", result="None", failure="",
                            created=now - 4 * H, ended=None)])  # fmt: skip
        assert rig.pipeline.poll_once(now - 3 * H).announced == 1
        for minutes in range(30, 180, 30):  # quiet polls: the VM's failure leaves the window
            rig.pipeline.poll_once(now - 3 * H + minutes * M)
        em.jobs.change(s.job_session_uid, state="Stopped", result="Failed", ended=now - 12 * M,
                       failure="1 of 1 VMs failed")  # fmt: skip
        before = len(em.queries())
        # not a sweep (the last was 50 minutes ago): only a question about the run finds it
        assert rig.pipeline.poll_once(now - 10 * M).announced == 0
        assert len(slack.posted()) == 1
        asked = [q.params.get("filter", "") for q in em.queries()[before:]]
        assert any(f'JobSessionUid=="{s.job_session_uid}"' in f for f in asked)
        assert "*Job:* 1 of 1 VMs failed" in text_of(slack.updates[-1][2])
    finally:
        rig.close()
