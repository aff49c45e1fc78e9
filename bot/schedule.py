"""APScheduler 3.x jobs. This module reads the clock for each job and passes `now` down."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)
Job = Callable[[datetime], object]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _guarded(name: str, job: Job) -> Callable[[], None]:
    """Run a job with `now`; log (never raise) its failure so the scheduler keeps going."""

    def run() -> None:
        try:
            job(utcnow())
        except Exception:
            log.exception("%s job failed; it runs again at its next time", name)

    return run


def digest_trigger(at: time, zone: str) -> CronTrigger:
    """Daily at local `at` in an explicit IANA zone (wall-clock, so DST moves it correctly)."""
    return CronTrigger(hour=at.hour, minute=at.minute, timezone=ZoneInfo(zone))


def build_scheduler(
    *,
    polls: dict[str, Job],
    interval: timedelta,
    prune: Job,
    digest: Job | None = None,
    digest_at: time = time(8, 0),
    digest_zone: str = "UTC",
) -> BackgroundScheduler:
    """Poll each Enterprise Manager now and then every `interval`, each on a worker of its
    own (coalesced, one at a time per server: a slow one delays no other); prune daily;
    digest at `digest_at` local time."""
    workers = ThreadPoolExecutor(max_workers=len(polls) + 4)
    sched = BackgroundScheduler(timezone=UTC, executors={"default": workers})
    seconds = interval.total_seconds()
    for name, poll in polls.items():
        sched.add_job(
            _guarded(f"poll {name}", poll),
            IntervalTrigger(seconds=seconds, timezone=UTC),
            id=f"poll:{name}",
            next_run_time=utcnow(),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(seconds)),
        )
    sched.add_job(
        _guarded("retention", prune),
        IntervalTrigger(hours=24, timezone=UTC),
        id="retention",
        next_run_time=utcnow() + timedelta(minutes=10),
        coalesce=True,
        max_instances=1,
    )
    if digest is not None:
        sched.add_job(
            _guarded("digest", digest),
            digest_trigger(digest_at, digest_zone),
            id="digest",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        # At start (a digest missed while the bot was down) and then every 15 minutes: the
        # runner posts only when a digest is due, unposted and still within the grace period.
        sched.add_job(
            _guarded("digest-catch-up", digest),
            IntervalTrigger(minutes=15, timezone=UTC),
            id="digest-catch-up",
            next_run_time=utcnow(),
            coalesce=True,
            max_instances=1,
        )
    return sched
