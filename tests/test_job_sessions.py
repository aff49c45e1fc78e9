"""Job sessions (a job's own run: `BackupJobSession`, `ReplicaJobSession`) parsed from real
EM answers: the v12 and v13 JSON captures and the EM 13.1 Help Center XML example, every
field checked; then the shapes EM may also send (FailureMessage in XML, errors, junk)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.errors import EMRejected, ParseError
from bot.models import JobSession, Page
from bot.veeam.jobsessions import parse_job_sessions
from tests.conftest import CAPTURES, FIXTURES

EM13 = FIXTURES / "em13"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_the_v12_capture_every_field() -> None:
    sessions, page = parse_job_sessions(
        (CAPTURES / "backup_jobs_sessions_metrics_v12.json").read_bytes()
    )
    assert [s.job_type for s in sessions] == [
        "ImmediateBackupCopy",
        "Backup",
        "ImmediateBackupCopyWorker",
    ]
    first = sessions[0]
    assert first == JobSession(
        uid="urn:veeam:BackupJobSession:45f138d9-7e5e-4140-bd33-088cc207a0f9",
        type="BackupJobSession",
        name="COPY_BACKUP_VMW_MECM_AN_TO_DD_DCH_NEW@2026-06-14 23:09:26",
        job="COPY_BACKUP_VMW_MECM_AN_TO_DD_DCH_NEW",
        job_uid="urn:veeam:Job:408829ea-75b1-476c-80e1-47b731952e7a",
        job_type="ImmediateBackupCopy",
        server="myhost2.mydomain.org",
        state="Stopped",
        result="Success",
        failure="",  # null in the capture
        is_retry=False,
        progress=0,
        created=at("2026-06-14T23:09:26.173+00:00"),
        ended=at("2026-06-15T02:04:52.037+00:00"),
    )
    assert first.kind == "backup copy" and sessions[1].is_retry is True
    assert page == Page(1, 100, 1)


def test_the_v13_capture_in_camel_case() -> None:
    sessions, page = parse_job_sessions(
        (CAPTURES / "backup_jobs_sessions_metrics_v13.json").read_bytes()
    )
    raw = json.loads((CAPTURES / "backup_jobs_sessions_metrics_v13.json").read_text())
    items = raw["entities"]["backupJobSessions"]["backupJobSessions"]
    assert len(sessions) == len(items) == 2
    for s, item in zip(sessions, items, strict=True):
        keys = ("uid", "name", "jobName", "jobUid", "jobType")
        assert (s.uid, s.name, s.job, s.job_uid, s.job_type) == tuple(item[k] for k in keys)
        assert (s.state, s.result, s.is_retry, s.progress) == (
            item["state"], item["result"], item["isRetry"], item["progress"])  # fmt: skip
        assert s.created == at(item["creationTimeUTC"].replace("Z", "+00:00"))
        assert s.ended == at(item["endTimeUTC"].replace("Z", "+00:00"))
        assert s.server == "myhost2.mydomain.org" and s.type == "BackupJobSession"
    failed = [s for s in sessions if s.result == "Failed"]
    assert len(failed) == 1 and failed[0].is_retry and failed[0].failure == ""
    assert page == Page(1, 100, 1)


def test_the_em_13_1_xml_example_every_field() -> None:
    sessions, page = parse_job_sessions((EM13 / "query_backupjobsession.xml").read_bytes())
    worker, backup = sessions
    assert worker == JobSession(
        uid="urn:veeam:BackupJobSession:07fb4019-dc8c-45ba-a36f-d15f2e7fe41b",
        type="BackupJobSession",
        name="Periodic Backup Copy Job\\Backup Job 1@2025-08-16 05:17:38.22142",
        job="Periodic Backup Copy Job\\Backup Job 1",
        job_uid="urn:veeam:Job:643e7958-f608-41fd-932c-084596f5b44f",
        job_type="ImmediateBackupCopyWorker",
        server="enterprisevbr01.tech.local",
        state="Stopped",
        result="Failed",
        failure="",  # the XML example has no FailureMessage element
        is_retry=True,
        progress=100,
        created=at("2025-08-16T05:17:38.221420+00:00"),
        ended=at("2025-08-16T05:25:01.879599+00:00"),
    )
    assert (backup.job, backup.job_type, backup.result, backup.is_retry) == (
        "Backup Job 2", "Backup", "Success", False)  # fmt: skip
    assert page == Page(1, 100, 1)


XML_ONE = """<QueryResult xmlns="http://www.veeam.com/ent/v1.0"><Entities><ReplicaJobSessions>
<ReplicaJobSession Type="ReplicaJobSession" Name="SQL Replica@2025-08-16 01:00:00"
 UID="urn:veeam:ReplicaJobSession:751b865f-6618-469e-80a4-003c55d09019"><Links>
<Link Rel="Up" Type="BackupServerReference" Name="vbr01" Href="x" /></Links>
<JobUid>urn:veeam:Job:dce85686-59c8-42c4-8766-f1c00a5b8067</JobUid><JobName>SQL Replica</JobName>
<JobType>Replica</JobType><CreationTimeUTC>2025-08-16T01:00:00Z</CreationTimeUTC>
<EndTimeUTC>2025-08-16T01:00:09Z</EndTimeUTC><State>Stopped</State><Result>Failed</Result>
<Progress>0</Progress><FailureMessage>{message}</FailureMessage><IsRetry>false</IsRetry>
</ReplicaJobSession></ReplicaJobSessions></Entities></QueryResult>"""


def test_a_replica_job_failure_with_its_failure_message() -> None:
    body = XML_ONE.format(message="No proxy is available &lt;!channel&gt; &amp; more")
    (s,) = parse_job_sessions(body.encode())[0]
    assert (s.type, s.job, s.job_type, s.kind, s.server) == (
        "ReplicaJobSession", "SQL Replica", "Replica", "replication", "vbr01")  # fmt: skip
    assert s.failure == "No proxy is available <!channel> & more"  # raw: escaping is the renderer's
    assert s.ended == at("2025-08-16T01:00:09+00:00") and s.created is not None


def test_a_job_still_working_has_no_end() -> None:
    raw = json.loads((CAPTURES / "backup_jobs_sessions_metrics_v12.json").read_text())
    item = raw["Entities"]["BackupJobSessions"]["BackupJobSessions"][0]
    message = "  Share \\\\nas01\\data unreachable "
    item.update(State="Working", Result="None", EndTimeUTC=None, Progress=42,
                JobType="NasBackup", FailureMessage=message)  # fmt: skip
    s = parse_job_sessions(json.dumps(raw).encode())[0][0]
    assert (s.state, s.ended, s.progress, s.kind) == ("Working", None, 42, "file share backup")
    assert s.failure == "Share \\\\nas01\\data unreachable"


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (b'<Error StatusCode="400" Message="Unknown field JobKind" />', EMRejected, "JobKind"),
        (b'{"Message": "Bad filter", "StatusCode": 400}', EMRejected, "Bad filter"),
        (b"<QueryResult><Entities>", ParseError, "malformed XML"),
        (b'{"Entities": {"BackupJobSessions": {"BackupJobSessions": [{"Name": "x"}]}}}',
         ParseError, "without a UID"),
        (b'{"Entities": {"BackupJobSessions": {"BackupJobSessions": '
         b'[{"UID": "u", "Progress": "x"}]}}}', ParseError, "unreadable number"),
        (b"hello", ParseError, "neither XML nor JSON"),
    ],
)  # fmt: skip
def test_bad_answers_are_one_clear_error(body: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        parse_job_sessions(body)


def test_a_page_of_task_sessions_holds_no_job_session() -> None:
    body = (CAPTURES / "backup_jobs_tasks_sessions_metrics_v12.json").read_bytes()
    assert parse_job_sessions(body)[0] == []


def test_an_entity_with_a_dtd_is_refused() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY e "boom">]><QueryResult />'
    with pytest.raises(ParseError, match="DTD"):
        parse_job_sessions(evil)
