"""Stage: job sessions, beside fetch. A job's own run (`BackupJobSession`,
`ReplicaJobSession`) can fail with no failed task session at all: a repository offline, no
proxy, "no objects to process", a file share or agent job, a backup copy's own error.

Each poll asks for the job sessions of each watched task type that stopped Failed or
Warning in the same window as the task sessions (checkpoint, sweep, floor: the stream is
the job-session type). A job session whose failure its task sessions already tell adds no
message: it is recorded silently, and its `FailureMessage` becomes the "Job: …" line of
their alert. One that none of its task sessions tells becomes a job-level failure, a
`TaskSession` with no VM whose UID is the job session's: select, hold, mute, plan, render
and deliver take it unchanged, and its problem is (EM, type, job, no VM).

The decisions (`as_session`, `split`, `job_filter`) are pure; `JobFetcher` asks EM."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.alerts.fetch import Fetcher, alertable
from bot.alerts.select import note_late, select
from bot.config.settings import Settings
from bot.models import JOB_SESSION_OF, JobSession, TaskSession
from bot.store.store import Store
from bot.veeam import filters as F
from bot.veeam.client import EMClient

RUNS_PER_QUERY = 10  # job sessions asked about in one task-session query


def as_session(js: JobSession, task_type: str) -> TaskSession:
    """A job session as the alert path carries it: no VM, its own UID as its job session's,
    `FailureMessage` as its Reason, its JobType as `kind`. Stopped reads as Completed."""
    return TaskSession(
        uid=js.uid,
        type=task_type,
        name=js.name,
        vm="",
        job=js.job,
        job_session_uid=js.uid,
        server=js.server,
        state="Completed" if js.state == "Stopped" else js.state,
        result=js.result,
        reason=js.failure,
        created=js.created,
        ended=js.ended,
        total_size=0,
        em=js.em,
        kind=js.job_type or "",
    )


def job_filter(results: tuple[str, ...], since: datetime) -> str:
    return F.all_of(
        [
            F.cmp("State", "==", "Stopped"),
            F.one_of("Result", list(results)),
            F.cmp("EndTime", ">=", since),
        ]
    )


def split(
    job_sessions: list[JobSession], told: set[str]
) -> tuple[list[JobSession], list[JobSession]]:
    """(those whose task sessions tell their failure, those told by nobody yet)."""
    by_tasks = [js for js in job_sessions if js.uid in told]
    alone = [js for js in job_sessions if js.uid not in told]
    return by_tasks, alone


@dataclass
class JobFetch:
    """What one poll learned of one type's job sessions."""

    fresh: list[TaskSession] = field(default_factory=list)  # job-level failures, new
    told: list[TaskSession] = field(default_factory=list)  # told by their tasks: recorded
    notes: dict[str, str] = field(default_factory=dict)  # job session UID → FailureMessage
    retries: set[str] = field(default_factory=set)  # UIDs of IsRetry runs among `fresh`
    fetched: int = 0
    top: datetime | None = None  # the latest end time EM listed


class JobFetcher:
    """Asks one Enterprise Manager for the job sessions of a poll."""

    def __init__(self, settings: Settings, em: EMClient, fetcher: Fetcher, store: Store) -> None:
        self.settings, self.em, self.fetcher, self.store = settings, em, fetcher, store

    def failures(
        self, type_: str, now: datetime, sweep: bool, late: dict[str, float], told: set[str]
    ) -> JobFetch:
        """The new job-session failures of one task type. `told`: the job sessions of the
        task failures this poll listed; for any other, one query asks whether a task of
        that run failed before the window."""
        stream = JOB_SESSION_OF[type_]
        since, ordinary, had_checkpoint = self.fetcher.window(stream, now, sweep)
        results = self.settings.alerts.results
        out = JobFetch()
        listed: list[JobSession] = []
        for js in self.em.query_job_sessions(stream, job_filter(results, since),
                                             sort_asc="EndTime"):  # fmt: skip
            out.fetched += 1
            if js.ended and (out.top is None or js.ended > out.top):
                out.top = js.ended
            listed.append(js)
        pseudo = {js.uid: js for js in listed}
        sessions = [as_session(js, type_) for js in listed]
        new = select(self.store, [s for s in sessions if alertable(s, results, since)])
        by_tasks, alone = split([pseudo[s.uid] for s in new], told)
        earlier = self._tasks_failed(type_, [js.uid for js in alone])
        by_tasks += [js for js in alone if js.uid in earlier]  # VMs that failed before the window
        for js in by_tasks:
            out.told.append(as_session(js, type_))
            if js.failure:
                out.notes[js.uid] = js.failure
        told_uids = {js.uid for js in by_tasks}
        out.fresh = self.fetcher.tagged([s for s in new if s.uid not in told_uids])
        out.told = self.fetcher.tagged(out.told)
        out.retries = {s.uid for s in out.fresh if pseudo[s.uid].is_retry}
        if had_checkpoint:
            note_late(out.fresh, ordinary, now, late)
        return out

    def _tasks_failed(self, type_: str, job_session_uids: list[str]) -> set[str]:
        """Which of these runs had a task that failed (or warned), whenever it ended: one
        query per ten runs (a first poll after an upgrade may bring hundreds), each short
        enough for any URL limit."""
        out: set[str] = set()
        results = F.one_of("Result", list(self.settings.alerts.results))
        for i in range(0, len(job_session_uids), RUNS_PER_QUERY):
            chunk = job_session_uids[i : i + RUNS_PER_QUERY]
            runs = F.any_of([F.cmp("JobSessionUid", "==", uid) for uid in chunk])
            for s in self.em.query(type_, F.all_of([runs, results])):
                out.add(s.job_session_uid)
        return out

    def successes(self, type_: str, now: datetime) -> list[TaskSession]:
        """The jobs' successful runs of an ordinary window: they close job-level problems."""
        stream = JOB_SESSION_OF[type_]
        flt = F.all_of(
            [
                F.cmp("State", "==", "Stopped"),
                F.cmp("Result", "==", "Success"),
                F.cmp("EndTime", ">=", self.fetcher.success_start(stream, now)),
            ]
        )
        found = self.em.query_job_sessions(stream, flt, sort_asc="EndTime")
        return self.fetcher.tagged([as_session(js, type_) for js in found])
