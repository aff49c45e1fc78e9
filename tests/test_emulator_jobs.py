"""The emulator serves job sessions (`query?type=BackupJobSession|ReplicaJobSession`) as EM
13.1 writes them, and the client reads them back: runs derived from their task sessions,
runs with no task session at all (a job failing before any VM, a file share job), in XML
and both JSON casings; checked against the Help Center example and the v12 capture."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx
import pytest
from lxml import etree

from bot.emulator.jobs import EmJob
from bot.emulator.server import Emulator
from bot.errors import EMRejected
from bot.veeam.client import EMClient
from tests.conftest import CAPTURES, FIXTURES, veeam_settings
from tests.helpers import job_only, job_run

M = timedelta(minutes=1)


@pytest.mark.parametrize(("fmt", "camel"), [("xml", False), ("json", False), ("json", True)])
def test_a_run_is_one_job_session_with_its_worst_result(
    em: Emulator, now: datetime, fmt: str, camel: bool
) -> None:
    em.camel_case = camel
    tasks = job_run(em, now, [("sql01", "Failed", "disk"), ("sql02", "Warning", "slow"),
                              ("sql03", "Success", "")], job="SQL Replica")  # fmt: skip
    job_run(em, now, [("web01", "Success", "")], job="Web Replica")
    client = EMClient(veeam_settings(em, format=fmt))
    try:
        flt = 'State=="Stopped";(Result=="Failed",Result=="Warning")'
        (s,) = client.query_job_sessions("ReplicaJobSession", flt, sort_asc="EndTime")
        every = list(client.query_job_sessions("ReplicaJobSession"))
        backups = list(client.query_job_sessions("BackupJobSession"))
    finally:
        client.close()
    assert s.uid == tasks[0].job_session_uid and s.type == "ReplicaJobSession"
    assert (s.job, s.job_type, s.kind) == ("SQL Replica", "Replica", "replication")
    assert (s.state, s.result, s.is_retry, s.progress, s.failure) == (
        "Stopped",
        "Failed",
        False,
        100,
        "",
    )
    assert s.job_uid == tasks[0].job_uid and s.server == tasks[0].server
    assert s.created == min(t.created for t in tasks)
    assert s.ended == max(t.ended for t in tasks if t.ended)
    assert {x.job for x in every} == {"SQL Replica", "Web Replica"} and backups == []


def test_a_job_failing_before_any_vm_and_its_filters(em: Emulator, now: datetime) -> None:
    retried = job_only(
        now, uid="urn:veeam:BackupJobSession:0badc0de-0000-4000-8000-0000000000aa",
        job_type="Backup", job="Nightly", result="Warning", failure=None, is_retry=True,
    )  # fmt: skip
    em.jobs.add([job_only(now), retried])
    client = EMClient(veeam_settings(em))
    try:
        (nas,) = client.query_job_sessions("BackupJobSession", "JobType==NasBackup")
        (retry,) = client.query_job_sessions("BackupJobSession", "IsRetry==true")
        since = (now - 30 * M).strftime("%Y-%m-%dT%H:%M:%SZ")
        flt = f'State=="Stopped";Result=="Failed";EndTime>="{since}"'
        (failed,) = client.query_job_sessions("BackupJobSession", flt)
        with pytest.raises(EMRejected, match="Unknown field"):
            list(client.query_job_sessions("BackupJobSession", 'VmDisplayName=="x"'))
        with pytest.raises(EMRejected, match="not valid"):  # a task session's state
            list(client.query_job_sessions("BackupJobSession", 'State=="Completed"'))
    finally:
        client.close()
    assert (nas.kind, nas.result) == ("file share backup", "Failed")
    assert nas.failure == "Failed to connect to \\\\nas01\\projects <!channel> & co"
    assert failed.uid == nas.uid and retry.job == "Nightly" and retry.failure == ""


def test_a_run_still_going_is_working_without_an_end(em: Emulator, now: datetime) -> None:
    run = job_run(em, now, [("app01", "Success", ""), ("app02", "Success", "")], job="App")
    run[1].ended, run[1].state = None, "InProgress"  # EM: no end time while a task runs
    client = EMClient(veeam_settings(em))
    try:
        (s,) = client.query_job_sessions("ReplicaJobSession")
        assert list(client.query_job_sessions("ReplicaJobSession", 'State=="Stopped"')) == []
    finally:
        client.close()
    assert (s.state, s.ended, s.result, s.progress) == ("Working", None, "None", 50)


def raw(em: Emulator, accept: str) -> bytes:
    """A job-session page as the emulator writes it, fetched as any HTTP client would."""
    with httpx.Client(base_url=em.url, timeout=5) as c:
        logon = c.post("/api/sessionMngr/?v=latest", auth=(em.username, em.password))
        token = logon.headers["X-RestSvcSessionId"]
        params = {"type": "BackupJobSession", "format": "Entities"}
        headers = {"Accept": accept, "X-RestSvcSessionId": token}
        return c.get("/api/query", params=params, headers=headers).content


def test_the_emulator_writes_what_em_13_1_and_v12_write(em: Emulator, now: datetime) -> None:
    em.jobs.add([job_only(now, failure=None)])
    ours = etree.fromstring(raw(em, "application/xml"))
    theirs = etree.fromstring((FIXTURES / "em13" / "query_backupjobsession.xml").read_bytes())

    def shape(root: etree._Element) -> list[str]:
        entity = root.find(".//{*}BackupJobSession")
        assert entity is not None
        return [etree.QName(c).localname for c in entity] + sorted(entity.attrib)

    assert shape(ours) == shape(theirs)
    link_types = [link.get("Type") for link in ours.iter("{*}Link")][:5]
    assert link_types == ["BackupServerReference", "JobReference", "BackupJobSessionReference",
                          "BackupTaskSessionReferenceList", None]  # fmt: skip
    ours_json = json.loads(raw(em, "application/json"))["Entities"]["BackupJobSessions"]
    capture = json.loads((CAPTURES / "backup_jobs_sessions_metrics_v12.json").read_text())
    theirs_json = capture["Entities"]["BackupJobSessions"]["BackupJobSessions"][0]
    assert list(ours_json["BackupJobSessions"][0]) == list(theirs_json)


@pytest.mark.parametrize(("fmt", "camel"), [("xml", False), ("json", False), ("json", True)])
def test_the_jobs_are_listed_with_their_schedule_and_retries(
    em: Emulator, now: datetime, fmt: str, camel: bool
) -> None:
    em.camel_case = camel
    sql = job_run(em, now, [("sql01", "Success", "")], job="SQL Replica")
    job_run(em, now, [("web01", "Success", "")], job="Web Replica")
    em.job_list.change(sql[0].job_uid, schedule_enabled=False)
    em.job_list.add([EmJob("urn:veeam:Job:0badc0de-0000-4000-8000-0000000000f1", "Projects share",
                           "Backup", "VMware", "vbr01", "urn:veeam:BackupServer:1",
                           description='Share "P:" <nightly>', retry_specified=False)])  # fmt: skip
    client = EMClient(veeam_settings(em, format=fmt))
    try:
        every = list(client.query_jobs())
        (off,) = client.query_jobs("ScheduleEnabled==false")
    finally:
        client.close()
    assert [j.name for j in every] == ["Projects share", "SQL Replica", "Web Replica"]
    share, sql_job, web = every
    assert (sql_job.uid, sql_job.job_type, sql_job.server) == (
        sql[0].job_uid,
        "Replica",
        sql[0].server,
    )
    assert (sql_job.schedule_configured, sql_job.schedule_enabled) == (
        True,
        False,
    ) and off == sql_job
    assert web.next_run is not None and web.retry_window == timedelta(minutes=30)
    assert share.description == 'Share "P:" <nightly>' and share.retry_times == 0


def test_the_emulator_writes_jobs_as_the_help_center_shows_them(
    em: Emulator, now: datetime
) -> None:
    job_run(em, now, [("sql01", "Success", "")], job="SQL Replica")
    with httpx.Client(base_url=em.url, timeout=5) as c:
        logon = c.post("/api/sessionMngr/?v=latest", auth=(em.username, em.password))
        headers = {"X-RestSvcSessionId": logon.headers["X-RestSvcSessionId"]}
        body = c.get("/api/query", params={"type": "Job", "format": "Entities"}, headers=headers)
    ours = etree.fromstring(body.content).find(".//{*}Job")
    theirs = etree.fromstring((FIXTURES / "em13" / "job_entity.xml").read_bytes())
    assert ours is not None

    def shape(el: etree._Element) -> list[str]:
        return [etree.QName(c).localname for c in el.iter() if isinstance(c.tag, str)
                and etree.QName(c).localname not in ("Link",)]  # fmt: skip

    wanted = ["Job", "Links", "JobType", "Platform", "Description", "ScheduleConfigured",
              "ScheduleEnabled", "NextRun", "JobScheduleOptions", "Standart", "RetryOptions",
              "RetryTimes", "RetryTimeout", "RetrySpecified"]  # fmt: skip
    assert shape(ours) == wanted
    assert [t for t in shape(theirs) if t in wanted] == wanted  # the same order as EM's
    assert sorted(ours.attrib) == sorted(theirs.attrib)
