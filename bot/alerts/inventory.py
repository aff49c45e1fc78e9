"""Stage: the job inventory. Every `[jobs] refresh`, EM's jobs (`query?type=Job`: schedule,
NextRun, retry options) and the job sessions since the last refresh are folded into one
record per job in the state file (table `jobs`): what the stale, disabled and long-running
alerts decide from, what `hold_for_retries = "auto"` reads, what `/veeam jobs` shows.

A job's record keeps a short history (its last successful starts, its last durations), so
that a refresh reads only what is new: the first one reads 30 days of job sessions. A job
EM no longer lists, and that has not run, is forgotten after `[alerts] retention`. A file
share or agent job that `query?type=Job` does not list is known from its runs alone.

`fold_job` and `fold_runs` are pure; `Inventory` asks EM and keeps the records."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts.stale import interval_s
from bot.config.settings import Settings
from bot.models import JOB_SESSION_OF, Job, JobSession, iso_z
from bot.store.codec import scoped
from bot.store.schema import JOBS
from bot.store.store import Store
from bot.veeam import filters as F
from bot.veeam.client import EMClient
from bot.veeam.fields import parse_time

log = logging.getLogger(__name__)
FIRST_LOOKBACK = timedelta(days=30)
HISTORY = 12  # successful starts and durations kept per job
_EPOCH = datetime.fromtimestamp(0, UTC)
OVERLAP = timedelta(minutes=30)  # EM collects from backup servers every 15 minutes


def job_key(em: str, job_uid: str) -> str:
    return json.dumps([em, job_uid])


def stream_of_job(job_type: str) -> str:
    return "ReplicaJobSession" if job_type == "Replica" else "BackupJobSession"


def fold_job(record: dict[str, Any] | None, job: Job) -> dict[str, Any]:
    """A job's record after EM listed it: what EM says of it now, its history kept; `was`
    is whether its schedule was enabled at the refresh before (None: first seen)."""
    before = record or {}
    return {
        **before,
        "uid": job.uid,
        "name": job.name,
        "type": job.job_type,
        "platform": job.platform,
        "server": job.server or before.get("server", ""),
        "sched": job.schedule_configured,
        "enabled": job.schedule_enabled,
        "was": before.get("enabled") if before.get("listed") else None,
        "next": iso_z(job.next_run),
        "rt": job.retry_times,
        "rto": job.retry_timeout_min,
        "listed": True,
        "gone": None,  # since when EM no longer lists it
    }


def fold_runs(
    record: dict[str, Any] | None, runs: Iterable[JobSession], working: Iterable[JobSession]
) -> dict[str, Any]:
    """A job's record with its finished runs since the last refresh and its runs working now.
    A job EM's job list does not name (file share, agent) is known from its runs alone."""
    rec = dict(record or {})
    ok: list[float] = list(rec.get("ok", []))
    dur: list[float] = list(rec.get("dur", []))
    upto = float(rec.get("upto") or 0.0)  # runs that ended up to here are folded in
    for js in sorted(runs, key=lambda j: j.ended or j.created or _EPOCH):
        if js.created is None:
            continue
        start = js.created.timestamp()
        end = js.ended.timestamp() if js.ended else start
        if end <= upto:
            continue  # read again in the refresh's overlap
        _named(rec, js)
        rec["upto"] = end
        rec["last_start"] = max(rec.get("last_start") or 0.0, start)
        if end >= (rec.get("last", {}).get("end") or 0.0):
            rec["last"] = {"result": js.result, "end": end, "uid": js.uid}
        if js.result == "Success" and not js.is_retry:
            ok.append(start)
            rec["last_ok"] = max(rec.get("last_ok") or 0.0, end)
        if js.result in ("Success", "Warning") and js.ended:
            dur.append(end - start)
    now_working: dict[str, float] = {}
    for js in working:
        _named(rec, js)
        if js.created is not None:
            now_working[js.uid] = js.created.timestamp()
            rec["last_start"] = max(rec.get("last_start") or 0.0, js.created.timestamp())
    rec["ok"] = sorted(ok)[-HISTORY:]
    rec["every"] = interval_s(rec["ok"])  # learned here, once per refresh, not per judgement
    rec["dur"] = dur[-HISTORY:]
    rec["working"] = now_working
    return rec


def _named(rec: dict[str, Any], js: JobSession) -> None:
    """Name a record known from runs alone (EM's job list names the others)."""
    if rec.get("listed"):
        return
    rec.update(uid=js.job_uid, name=js.job, type=js.job_type, server=js.server,
               sched=True, enabled=True, listed=False)  # fmt: skip


def read_inventory(
    em: EMClient, streams: list[str], since: datetime
) -> tuple[list[Job], list[JobSession], list[JobSession]]:
    """EM's jobs, the runs of `streams` that ended since `since`, the runs working now.
    Raises SourceError."""
    jobs = list(em.query_jobs())
    finished: list[JobSession] = []
    working: list[JobSession] = []
    for stream in streams:
        flt = F.all_of([F.cmp("State", "==", "Stopped"), F.cmp("EndTime", ">=", since)])
        finished += em.query_job_sessions(stream, flt, sort_asc="EndTime")
        flt = F.cmp("State", "!=", "Stopped")
        working += em.query_job_sessions(stream, flt, sort_asc="CreationTime")
    return jobs, finished, working


def fold_all(
    label: str,
    records: dict[str, dict[str, Any]],
    read: tuple[list[Job], list[JobSession], list[JobSession]],
    watched: set[str],
    *,
    now: datetime,
    retention: timedelta,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """One Enterprise Manager's job records after a refresh, and the keys to forget: every
    job EM lists of a watched stream, every job known from its runs alone, the rest kept
    (EM no longer lists them) until `retention` has passed since they were last seen."""
    jobs, finished, working = read
    runs: dict[str, list[JobSession]] = {}
    for js in finished:
        runs.setdefault(js.job_uid or js.job, []).append(js)
    busy: dict[str, list[JobSession]] = {}
    for js in working:
        busy.setdefault(js.job_uid or js.job, []).append(js)
    out: dict[str, dict[str, Any]] = {}
    for job in jobs:
        if stream_of_job(job.job_type) not in watched:
            continue
        key = job_key(label, job.uid)
        rec = fold_job(records.get(key), job)
        out[key] = fold_runs(rec, runs.pop(job.uid, []), busy.pop(job.uid, []))
    for uid in set(runs) | set(busy):  # runs of jobs the job list does not name
        key = job_key(label, uid)
        out[key] = fold_runs(records.get(key), runs.get(uid, []), busy.get(uid, []))
    cutoff = (now - retention).timestamp()
    gone = []
    for key, before in records.items():
        if key in out:
            continue
        rec = {**before, "working": {}}
        if before.get("listed"):  # EM no longer lists it: forgotten after retention
            rec.update(listed=False, gone=now.timestamp(), was=None)
        if max(float(rec.get("gone") or 0), float(rec.get("last_start") or 0)) < cutoff:
            gone.append(key)
        else:
            out[key] = rec
    return out, gone


class Inventory:
    """Reads and keeps the job inventory of one Enterprise Manager."""

    def __init__(self, settings: Settings, em: EMClient, store: Store) -> None:
        self.settings, self.em, self.store = settings, em, store
        self.server = settings.veeam.server
        self.label = settings.veeam.label

    @property
    def enabled(self) -> bool:
        return self.settings.jobs.refresh > timedelta(0)

    def due(self, now: datetime) -> bool:
        last = self.store.meta(scoped("jobs_refreshed", self.server))
        if not isinstance(last, int | float):
            return True
        return now.timestamp() - last >= self.settings.jobs.refresh.total_seconds()

    def streams(self) -> list[str]:
        return [JOB_SESSION_OF[t] for t in self.settings.veeam.session_types]

    def read(self, now: datetime) -> tuple[list[Job], list[JobSession], list[JobSession]]:
        """What EM says now: its jobs, the runs that ended since the last refresh (30 days
        the first time), the runs working now. Without the store's lock. Raises SourceError."""
        last = self.store.meta(scoped("jobs_refreshed", self.server))
        since = now - FIRST_LOOKBACK
        if isinstance(last, int | float):
            since = max(since, datetime.fromtimestamp(last, now.tzinfo) - OVERLAP)
        return read_inventory(self.em, self.streams(), since)

    def keep(
        self, now: datetime, jobs: list[Job], finished: list[JobSession], working: list[JobSession]
    ) -> dict[str, dict[str, Any]]:
        """Fold what EM said into the records (under the store's lock); the records of this
        Enterprise Manager after the refresh."""
        records = self.records()
        out, gone = fold_all(
            self.label, records, (jobs, finished, working), set(self.streams()),
            now=now, retention=self.settings.alerts.retention,
        )  # fmt: skip
        changed = {k: v for k, v in out.items() if records.get(k) != v}
        self.store.put_records(JOBS, changed)
        self.store.drop_records(JOBS, gone)
        self.store.set_meta(scoped("jobs_refreshed", self.server), now.timestamp())
        self.store.commit()
        if gone:
            log.info("forgot %d job(s) EM no longer lists", len(gone))
        return out

    def records(self) -> dict[str, dict[str, Any]]:
        """This Enterprise Manager's job records."""
        return self.store.records_of(JOBS, self.label)


def retry_window(record: dict[str, Any] | None) -> timedelta | None:
    """A job's RetryTimes × RetryTimeout, from its record; None when unknown."""
    if not record or not record.get("listed"):
        return None
    return timedelta(minutes=int(record.get("rt") or 0) * int(record.get("rto") or 0))


def next_run(record: dict[str, Any]) -> datetime | None:
    value = record.get("next")
    return parse_time(value) if isinstance(value, str) else None
