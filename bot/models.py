"""Plain data types shared by every layer. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

SESSION_TYPES = ("ReplicaTaskSession", "BackupTaskSession")
RESULTS = ("Success", "Warning", "Failed")
# The job-session type of each task-session type: a job's own runs.
JOB_SESSION_OF = {
    "ReplicaTaskSession": "ReplicaJobSession",
    "BackupTaskSession": "BackupJobSession",
}

# Short names used in the query grammar and the CLI output.
TYPE_ALIASES = {"replica": "ReplicaTaskSession", "backup": "BackupTaskSession"}
TYPE_SHORT = {v: k for k, v in TYPE_ALIASES.items()}


class TaskSession(NamedTuple):
    """One task session (one VM in one job run) as EM reports it.

    A NamedTuple: immutable and cheap to build, which matters when parsing large pages."""

    uid: str
    type: str
    name: str
    vm: str
    job: str
    job_session_uid: str
    server: str
    state: str
    result: str
    reason: str
    created: datetime | None
    ended: datetime | None
    total_size: int
    # The `[[veeam.servers]]` name of the Enterprise Manager that listed it ("" when the bot
    # watches one, from `[veeam] url`). Set by the bot, not parsed.
    em: str = ""
    # The JobType of a job-level failure (a job session told by itself, `job_level`); ""
    # for a task session.
    kind: str = ""

    @property
    def job_level(self) -> bool:
        """A job session's own failure, with no VM: its UID is the job session's."""
        return self.uid == self.job_session_uid and not self.vm

    @property
    def kind_words(self) -> str:
        """The job's type in words ("file share backup"), for a job-level failure."""
        return JOB_TYPE_WORDS.get(self.kind, self.kind.lower() or "job")

    @property
    def duration_s(self) -> float | None:
        if self.created is None or self.ended is None:
            return None
        return (self.ended - self.created).total_seconds()

    def as_json(self) -> dict[str, object]:
        """The stable JSON shape of `query --json` (`em` only with several servers)."""
        return {
            **({"em": self.em} if self.em else {}),
            "uid": self.uid,
            "type": TYPE_SHORT.get(self.type, self.type),
            "vm": self.vm,
            "job": self.job,
            "server": self.server,
            "state": self.state,
            "result": self.result,
            "reason": self.reason,
            "created": iso_z(self.created),
            "ended": iso_z(self.ended),
            "total_size": self.total_size,
            **({"job_type": self.kind} if self.kind else {}),
        }


# JobType of a job session, in words (BackupJobSession's values, then ReplicaJobSession's).
JOB_TYPE_WORDS = {
    "Backup": "backup",
    "BackupCopy": "backup copy",
    "ImmediateBackupCopy": "backup copy",
    "ImmediateBackupCopyWorker": "backup copy",
    "AgentBackup": "agent backup",
    "AgentManagement": "agent backup",
    "NasBackup": "file share backup",
    "Replica": "replication",
}


class JobSession(NamedTuple):
    """One run of a job (`BackupJobSession`, `ReplicaJobSession`) as EM reports it: the
    job's own result, which may fail with no failed task session at all."""

    uid: str
    type: str  # BackupJobSession or ReplicaJobSession
    name: str
    job: str
    job_uid: str
    job_type: str  # Backup, BackupCopy, …, NasBackup, AgentBackup, Replica (JOB_TYPE_WORDS)
    server: str  # the backup server's name
    state: str  # Starting, Stopping, Working, Pausing, Resuming, Stopped
    result: str  # Success, Warning, Failed ("None" or "" while it works)
    failure: str  # FailureMessage (EM v12+); "" when EM gave none
    is_retry: bool
    progress: int
    created: datetime | None
    ended: datetime | None
    em: str = ""  # as TaskSession.em

    @property
    def kind(self) -> str:
        """The job's type in words: "file share backup", "agent backup", …"""
        return JOB_TYPE_WORDS.get(self.job_type, self.job_type.lower() or "job")


class Job(NamedTuple):
    """A job as EM lists it (`query?type=Job`): what the bot needs to tell a job that stopped
    running from one that is not meant to run."""

    uid: str
    name: str
    job_type: str  # Backup, BackupCopy, ImmediateBackupCopy, Replica, …
    platform: str  # VMware, HyperV, vCloud
    server: str  # the backup server's name
    description: str
    schedule_configured: bool
    schedule_enabled: bool
    next_run: datetime | None
    retry_times: int  # 0 when retries are off
    retry_timeout_min: int  # minutes between retries
    em: str = ""  # as TaskSession.em

    @property
    def retry_window(self) -> timedelta:
        """How long Veeam may go on retrying a failed run: RetryTimes × RetryTimeout."""
        return timedelta(minutes=self.retry_times * self.retry_timeout_min)


@dataclass(frozen=True, slots=True)
class Page:
    """Paging information of one `/api/query` answer."""

    num: int
    size: int
    count: int


def iso_z(value: datetime | None) -> str | None:
    """Format an aware UTC datetime as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`."""
    if value is None:
        return None
    text = value.isoformat()
    return text.removesuffix("+00:00") + "Z"


def utc_from_epoch(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def local_instant(day: date, at: time, zone: str) -> datetime:
    """`at` o'clock local time on `day`, as an aware UTC instant (a time skipped by a DST
    change falls on the instant after the jump)."""
    return datetime.combine(day, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)
