"""Job sessions in the emulator: one per job run (`BackupJobSession`, `ReplicaJobSession`),
drawn from the task sessions of that run, plus runs that have no task session at all (a
job that failed before it processed a VM, a file share or agent job).

Written as EM 13.1 writes them (Help Center, GET /query?type=BackupJobSession, and the v12
and v13 captures): in XML `Links, JobUid, JobName, JobType, CreationTimeUTC, EndTimeUTC,
State, Result, Progress, FailureMessage, IsRetry`; in JSON `IsRetry` first and
`FailureMessage` null when there is none."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.emulator.data import EmSession, SessionStore
from bot.emulator.filterlang import (
    JOB_ENTITIES,
    JOBS,
    FilterSyntaxError,
    Grammar,
    compile_filter,
    parse_filter,
    range_bounds,
)
from bot.emulator.wire import ROOT_NAMESPACES, em_time, escape, quoteattr

JOB_SESSION_TYPES = {
    "backupjobsession": "BackupJobSession",
    "replicajobsession": "ReplicaJobSession",
}
_WORST = {"Success": 0, "Warning": 1, "Failed": 2}
_FAR = datetime.max.replace(tzinfo=UTC)


@dataclass(slots=True)
class EmJobSession:
    uid: str
    type: str  # BackupJobSession or ReplicaJobSession
    name: str
    job: str
    job_uid: str
    job_type: str
    server: str
    server_uid: str
    state: str
    result: str
    failure: str | None
    is_retry: bool
    progress: int
    created: datetime
    ended: datetime | None

    @property
    def guid(self) -> str:
        return self.uid.rsplit(":", 1)[-1]


def from_tasks(tasks: list[EmSession]) -> list[EmJobSession]:
    """One job session per run: its worst task result, Working until every task ended."""
    runs: dict[str, list[EmSession]] = {}
    for s in tasks:
        runs.setdefault(s.job_session_uid, []).append(s)
    out = []
    for uid, run in runs.items():
        first = run[0]
        done = all(s.ended is not None and s.state == "Completed" for s in run)
        ended = [s.ended for s in run if s.ended is not None]
        backup = first.type == "BackupTaskSession"
        kind = "BackupJobSession" if backup else "ReplicaJobSession"
        result = max((s.result for s in run), key=lambda r: _WORST.get(r, -1)) if done else "None"
        out.append(
            EmJobSession(
                uid=uid, type=kind, name=first.job_session_name, job=first.job,
                job_uid=first.job_uid, job_type="Backup" if backup else "Replica",
                server=first.server, server_uid=first.server_uid,
                state="Stopped" if done else "Working", result=result, failure=None,
                is_retry=False, progress=100 if done else 100 * len(ended) // len(run),
                created=min(s.created for s in run), ended=max(ended) if done else None,
            )
        )  # fmt: skip
    return out


# (every job session by start, those ended by end, their end times)
_Index = tuple[list["EmJobSession"], list["EmJobSession"], list[datetime]]


class JobSessionStore:
    """The job sessions of the emulated EM: derived from its task sessions on each query
    (they change as runs are added), and those added on their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._own: dict[str, EmJobSession] = {}
        self._derived: tuple[int, dict[str, EmJobSession]] = (-1, {})
        self._own_version = 0
        self._index: tuple[tuple[int, int], dict[str, _Index]] = ((-1, -1), {})

    def add(self, sessions: list[EmJobSession]) -> None:
        with self._lock:
            self._own.update({s.uid: s for s in sessions})
            self._own_version += 1

    def change(self, uid: str, **fields: Any) -> None:
        """Change a job session added on its own (a stuck run that finally ends)."""
        with self._lock:
            for k, v in fields.items():
                setattr(self._own[uid], k, v)
            self._own_version += 1

    def query(
        self, type_key: str, tasks: SessionStore, filter_text: str, sort: str, asc: bool
    ) -> list[EmJobSession]:
        """Matching job sessions of one type, sorted. Raises FilterSyntaxError. Those of
        the task sessions are derived once per change of the task sessions, and a range
        on EndTime is looked up in an index (as EM's database would), not scanned."""
        kind = JOB_SESSION_TYPES[type_key]
        with self._lock:
            by_created, by_end, end_keys = self._indexed(tasks)[kind]
        node = parse_filter(filter_text, JOBS) if filter_text else None
        lo, hi = range_bounds(node, "ended") if node is not None else (None, None)
        items = by_created
        if lo or hi:
            a = bisect.bisect_left(end_keys, lo) if lo else 0
            b = bisect.bisect_right(end_keys, hi) if hi else len(end_keys)
            items = by_end[a:b]
        if node is not None:
            pred = compile_filter(node)
            items = [x for x in items if pred(x)]
        return select(list(items), JOBS, "", sort, asc)

    def _indexed(self, tasks: SessionStore) -> dict[str, _Index]:
        """Per type: every job session by start, those ended by end, and their end times."""
        stamp = (tasks.version, self._own_version)
        if self._index[0] == stamp:
            return self._index[1]
        version, derived = self._derived
        if version != tasks.version:
            derived = {s.uid: s for s in from_tasks(tasks.all())}
            self._derived = (tasks.version, derived)
        every = list((derived | self._own).values())
        index: dict[str, _Index] = {}
        for kind in JOB_SESSION_TYPES.values():
            mine = [s for s in every if s.type == kind]
            ended = sorted((s for s in mine if s.ended is not None), key=lambda s: s.ended or _FAR)
            index[kind] = (sorted(mine, key=lambda s: s.created), ended,
                           [s.ended or _FAR for s in ended])  # fmt: skip
        self._index = (stamp, index)
        return index


def select(items: list[Any], grammar: Grammar, filter_text: str, sort: str, asc: bool) -> list[Any]:
    """The items a filter keeps, sorted by `sort` (none: as given). Raises
    FilterSyntaxError, as EM answers 400, for a bad filter or an unknown sort field."""
    if filter_text:
        pred = compile_filter(parse_filter(filter_text, grammar))
        items = [x for x in items if pred(x)]
    if sort:
        spec = grammar.fields.get(sort.lower())
        if spec is None:
            raise FilterSyntaxError(f"Unknown field [{sort}]")
        attr = spec[0]
        items.sort(key=lambda x: _key(getattr(x, attr)), reverse=not asc)
    return items


def _key(value: object) -> tuple[int, object]:
    return (1, _FAR) if value is None else (0, value)


def _paths(s: EmJobSession) -> tuple[str, str, str]:
    """(collection, task list's path, task list's type) of a job session."""
    if s.type == "BackupJobSession":
        return "backupSessions", "taskSessions", "BackupTaskSessionReferenceList"
    return "replicaSessions", "replicaTaskSessions", "ReplicaTaskSessionReferenceList"


def _links(s: EmJobSession, base: str) -> list[tuple[str, str | None, str, str | None]]:
    coll, tasks, tasks_type = _paths(s)
    here = f"{base}/api/{coll}/{s.guid}"
    server, job = s.server_uid.rsplit(":", 1)[-1], s.job_uid.rsplit(":", 1)[-1]
    return [
        ("Up", "BackupServerReference", f"{base}/api/backupServers/{server}", s.server),
        ("Up", "JobReference", f"{base}/api/jobs/{job}", s.job),
        ("Alternate", f"{s.type}Reference", here, s.name),
        ("Down", tasks_type, f"{here}/{tasks}", None),
        ("Stop", None, f"{here}?action=stop", None),
    ]  # fmt: skip


def xml_job_session(s: EmJobSession, base: str) -> str:
    coll = _paths(s)[0]
    links = "".join(
        f"<Link Href={quoteattr(h)}"
        + (f" Name={quoteattr(n)}" if n is not None else "")
        + (f" Type={quoteattr(t)}" if t is not None else "")
        + f' Rel="{r}" />'
        for r, t, h, n in _links(s, base)
    )
    parts = [
        f'<{s.type} Href="{base}/api/{coll}/{s.guid}?format=Entity" Type="{s.type}" '
        f"Name={quoteattr(s.name)} UID={quoteattr(s.uid)}>",
        f"<Links>{links}</Links>",
        f"<JobUid>{escape(s.job_uid)}</JobUid><JobName>{escape(s.job)}</JobName>",
        f"<JobType>{s.job_type}</JobType>",
        f"<CreationTimeUTC>{em_time(s.created)}</CreationTimeUTC>",
    ]
    if s.ended is not None:
        parts.append(f"<EndTimeUTC>{em_time(s.ended)}</EndTimeUTC>")
    parts.append(f"<State>{s.state}</State><Result>{s.result}</Result>")
    parts.append(f"<Progress>{s.progress}</Progress>")
    if s.failure:
        parts.append(f"<FailureMessage>{escape(s.failure)}</FailureMessage>")
    parts.append(f"<IsRetry>{'true' if s.is_retry else 'false'}</IsRetry></{s.type}>")
    return "".join(parts)


def xml_entities(
    items: list[Any], plural: str, write: Callable[[Any, str], str], base: str,
    paging: dict[str, Any],
) -> str:  # fmt: skip
    """A query answer in XML: `plural` (e.g. "BackupJobSessions") holding each item."""
    body = "\n".join(write(x, base) for x in items)
    links = "".join(f"<Link Href={quoteattr(h)} Rel={quoteattr(r)} />" for r, h in paging["links"])
    return (
        f"<QueryResult {ROOT_NAMESPACES}>\n<Entities>\n<{plural}>\n{body}\n</{plural}>\n"
        f'</Entities>\n<PagingInfo PageNum="{paging["num"]}" PageSize="{paging["size"]}" '
        f'PagesCount="{paging["count"]}">\n<Links>{links}</Links>\n</PagingInfo>\n</QueryResult>\n'
    )


def json_job_session(s: EmJobSession, base: str) -> dict[str, Any]:
    coll = _paths(s)[0]
    return {
        "IsRetry": s.is_retry,
        "JobUid": s.job_uid,
        "JobName": s.job,
        "JobType": s.job_type,
        "CreationTimeUTC": em_time(s.created),
        "EndTimeUTC": em_time(s.ended) if s.ended else None,
        "State": s.state,
        "Result": s.result,
        "Progress": s.progress,
        "FailureMessage": s.failure or None,
        "Name": s.name,
        "UID": s.uid,
        "Links": [{"Rel": r, "Href": h, "Name": n, "Type": t} for r, t, h, n in _links(s, base)],
        "Href": f"{base}/api/{coll}/{s.guid}?format=Entity",
        "Type": s.type,
    }


# ------------------------------------------------------------------- the jobs
JOB_TYPES = {"job": "Job"}


@dataclass(slots=True)
class EmJob:
    uid: str
    name: str
    job_type: str
    platform: str
    server: str
    server_uid: str
    description: str = ""
    schedule_configured: bool = True
    schedule_enabled: bool = True
    next_run: datetime | None = None
    retry_times: int = 3
    retry_timeout: int = 10  # minutes
    retry_specified: bool = True

    @property
    def guid(self) -> str:
        return self.uid.rsplit(":", 1)[-1]


class JobStore:
    """The jobs of the emulated EM: one per job its task sessions name (scheduled daily,
    three retries ten minutes apart, next run a day after its last), with changes made
    to them (`change`: a schedule disabled) and jobs added on their own (`add`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._own: dict[str, EmJob] = {}
        self._changes: dict[str, dict[str, Any]] = {}
        self._derived: tuple[int, dict[str, EmJob]] = (-1, {})

    def add(self, jobs: list[EmJob]) -> None:
        with self._lock:
            self._own.update({j.uid: j for j in jobs})

    def change(self, uid: str, **fields: Any) -> None:
        with self._lock:
            self._changes.setdefault(uid, {}).update(fields)

    def all(self, tasks: SessionStore) -> list[EmJob]:
        with self._lock:
            version, derived = self._derived
            if version != tasks.version:
                derived = _derive_jobs(tasks.all())
                self._derived = (tasks.version, derived)
            every = derived | self._own
            for uid, fields in self._changes.items():
                if uid in every:
                    for k, v in fields.items():
                        setattr(every[uid], k, v)
        return sorted(every.values(), key=lambda j: j.name)

    def query(self, tasks: SessionStore, filter_text: str, sort: str, asc: bool) -> list[EmJob]:
        return select(self.all(tasks), JOB_ENTITIES, filter_text, sort, asc)


def _derive_jobs(tasks: list[EmSession]) -> dict[str, EmJob]:
    derived: dict[str, EmJob] = {}
    last: dict[str, datetime] = {}
    for s in tasks:
        if s.job_uid not in derived:
            kind = "Backup" if s.type == "BackupTaskSession" else "Replica"
            derived[s.job_uid] = EmJob(s.job_uid, s.job, kind, "VMware", s.server, s.server_uid)
        last[s.job_uid] = max(last.get(s.job_uid, s.created), s.created)
    for uid, job in derived.items():
        job.next_run = last[uid] + timedelta(days=1)
    return derived


def _job_links(j: EmJob, base: str) -> list[tuple[str, str | None, str, str | None]]:
    here = f"{base}/api/jobs/{j.guid}"
    server = j.server_uid.rsplit(":", 1)[-1]
    return [
        ("Up", "BackupServerReference", f"{base}/api/backupServers/{server}", j.server),
        ("Alternate", "JobReference", here, j.name),
        ("Down", "BackupJobSessionReferenceList", f"{here}/backupSessions", None),
        ("Start", None, f"{here}?action=start", None),
        ("Stop", None, f"{here}?action=stop", None),
        ("Retry", None, f"{here}?action=retry", None),
    ]


def xml_job(j: EmJob, base: str) -> str:
    links = "".join(
        f'<Link Rel="{r}"'
        + (f" Type={quoteattr(t)}" if t is not None else "")
        + f" Href={quoteattr(h)}"
        + (f" Name={quoteattr(n)}" if n is not None else "")
        + " />"
        for r, t, h, n in _job_links(j, base)
    )
    flag = {True: "true", False: "false"}
    parts = [
        f'<Job Type="Job" Href="{base}/api/jobs/{j.guid}?format=Entity" '
        f"Name={quoteattr(j.name)} UID={quoteattr(j.uid)}>",
        f"<Links>{links}</Links>",
        f"<JobType>{j.job_type}</JobType><Platform>{j.platform}</Platform>",
        f"<Description>{escape(j.description)}</Description>",
        f"<ScheduleConfigured>{flag[j.schedule_configured]}</ScheduleConfigured>",
        f"<ScheduleEnabled>{flag[j.schedule_enabled]}</ScheduleEnabled>",
    ]
    if j.next_run is not None:
        parts.append(f"<NextRun>{em_time(j.next_run)}</NextRun>")
    parts.append(
        "<JobScheduleOptions><Standart><RetryOptions>"
        f"<RetryTimes>{j.retry_times}</RetryTimes><RetryTimeout>{j.retry_timeout}</RetryTimeout>"
        f"<RetrySpecified>{flag[j.retry_specified]}</RetrySpecified>"
        "</RetryOptions></Standart></JobScheduleOptions></Job>"
    )
    return "".join(parts)


def json_job(j: EmJob, base: str) -> dict[str, Any]:
    return {
        "JobType": j.job_type,
        "Platform": j.platform,
        "Description": j.description,
        "ScheduleConfigured": j.schedule_configured,
        "ScheduleEnabled": j.schedule_enabled,
        "NextRun": em_time(j.next_run) if j.next_run else None,
        "JobScheduleOptions": {
            "Standart": {
                "RetryOptions": {
                    "RetryTimes": j.retry_times,
                    "RetryTimeout": j.retry_timeout,
                    "RetrySpecified": j.retry_specified,
                }
            }
        },
        "Name": j.name,
        "UID": j.uid,
        "Links": [
            {"Rel": r, "Href": h, "Name": n, "Type": t} for r, t, h, n in _job_links(j, base)
        ],
        "Href": f"{base}/api/jobs/{j.guid}?format=Entity",
        "Type": "Job",
    }


# ------------------------------------------------- the demo's jobs that fail on their own
def _guid(n: int) -> str:
    return f"0badc0de-0000-4000-8000-{n:012d}"


def job_scenarios(now: datetime) -> tuple[list[EmJob], list[EmJobSession]]:
    """Jobs and runs that no task session tells (for the demo and `python -m bot emulator`):
    a backup job failing before any VM, a file share (NasBackup) and an agent job, a job
    that stopped running four days ago, one whose run is stuck in Working, and one whose
    schedule the demo disables after its first poll (`DISABLED_JOB`)."""
    server, server_uid = "vbr-hq-01.corp.local", "urn:veeam:BackupServer:" + _guid(0xB1)
    day, minute = timedelta(days=1), timedelta(minutes=1)
    kinds = {"SQL Nightly": "Backup", "Projects file share": "NasBackup",
             "Sales laptops": "AgentBackup", "Weekly archive": "Backup",
             "Exchange mailboxes": "Backup", DISABLED_JOB: "Backup"}  # fmt: skip
    uids = {name: f"urn:veeam:Job:{_guid(0x10 * (n + 1))}" for n, name in enumerate(kinds)}
    jobs = [
        EmJob(uids[name], name, kind, "VMware", server, server_uid,
              next_run=now + (3 if name == "Weekly archive" else 20) * 60 * minute)
        for name, kind in kinds.items()
    ]  # fmt: skip
    # (job, started, minutes, result, FailureMessage); a run of 0 minutes is still working
    table: list[tuple[str, datetime, float, str, str | None]] = [
        *[("SQL Nightly", now - d * day, 40, "Success", None) for d in (5, 4, 3, 2)],
        ("SQL Nightly", now - 50 * minute, 12, "Failed",
         "Repository repo02 is not available: the share \\\\nas02\\veeam is offline"),
        ("Projects file share", now - 40 * minute, 5, "Failed",
         "Failed to connect to \\\\nas01\\projects: access denied"),
        ("Sales laptops", now - 70 * minute, 30, "Warning", None),
        *[("Weekly archive", now - d * day, 25, "Success", None) for d in (7, 6, 5, 4)],
        *[("Exchange mailboxes", now - d * day, 30, "Success", None) for d in (5, 4, 3, 2, 1)],
        ("Exchange mailboxes", now - 9 * 60 * minute, 0, "None", None),
        *[(DISABLED_JOB, now - d * day, 20, "Success", None) for d in (3, 2, 1)],
    ]  # fmt: skip
    runs = []
    for n, (name, started, minutes, result, failure) in enumerate(table):
        working = minutes == 0
        runs.append(EmJobSession(
            uid=f"urn:veeam:BackupJobSession:{_guid(0x1000 + n)}", type="BackupJobSession",
            name=f"{name}@{started:%Y-%m-%d %H:%M:%S}", job=name, job_uid=uids[name],
            job_type=kinds[name], server=server, server_uid=server_uid,
            state="Working" if working else "Stopped", result=result, failure=failure,
            is_retry=False, progress=40 if working else 100, created=started,
            ended=None if working else started + minutes * minute,
        ))  # fmt: skip
    return jobs, runs


DISABLED_JOB = "File server weekly full"
DISABLED_JOB_UID = f"urn:veeam:Job:{_guid(0x60)}"  # the sixth job of job_scenarios


# ------------------------------------------------------------------ job actions
@dataclass(slots=True)
class EmTask:
    """A task EM creates for an action (`POST /jobs/{id}?action=retry`): Running, then
    Finished with a Result (Success and a Message)."""

    id: str
    operation: str
    success: bool
    message: str
    polls_left: int  # GETs that still answer Running


def retry_task(n: int, job: EmJob | None, runs: list[EmJobSession], polls: int = 1) -> EmTask:
    """EM retries a job only when its last run Failed (Help Center, POST /jobs/{ID}?action=retry);
    the task says so either way."""
    if job is None:
        return EmTask(f"task-{n}", "RetryJob", False, "Job not found.", polls)
    last = max(runs, key=lambda s: s.created, default=None)
    if last is None or last.result != "Failed":
        why = f'Job "{job.name}" cannot be retried: its last session did not fail.'
        return EmTask(f"task-{n}", "RetryJob", False, why, polls)
    return EmTask(f"task-{n}", "RetryJob", True, f'Job "{job.name}" triggered to retry.', polls)


def xml_task(t: EmTask, base: str, running: bool) -> str:
    href = f"{base}/api/tasks/{t.id}"
    head = (
        f'<Task xmlns="http://www.veeam.com/ent/v1.0" Type="Task" Href="{href}">'
        f'<Links><Link Rel="Delete" Type="Task" Href="{href}" /></Links>'
        f"<TaskId>{t.id}</TaskId><State>{'Running' if running else 'Finished'}</State>"
        f"<Operation>{t.operation}</Operation>"
    )
    if running:
        return head + "</Task>"
    flag = "true" if t.success else "false"
    return head + f'<Result Success="{flag}"><Message>{escape(t.message)}</Message></Result></Task>'


def json_task(t: EmTask, base: str, running: bool) -> dict[str, Any]:
    href = f"{base}/api/tasks/{t.id}"
    doc: dict[str, Any] = {
        "Links": [{"Rel": "Delete", "Href": href, "Name": None, "Type": "Task"}],
        "TaskId": t.id,
        "State": "Running" if running else "Finished",
        "Operation": t.operation,
        "Result": None if running else {"Success": t.success, "Message": t.message},
        "Href": href,
        "Type": "Task",
    }
    return doc
