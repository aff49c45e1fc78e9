"""Jobs that stop running: the pure decisions (issue: nothing fails silently).

A disabled schedule, an expired licence or a stopped service produce no session at all, so
nothing fails. These functions decide from the job inventory, the job's own history and
`now` whether a job is stale, runs too long, or had its schedule disabled, and whether an
episode opens or closes. They read no clock and no store; the stage that will call them
keeps the episodes in the state file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from statistics import median
from typing import Any

from bot.models import Job


@dataclass(frozen=True)
class Condition:
    """A job that stopped running, as one episode names it."""

    key: str  # JSON [em, kind, job UID (a running job session's UID for "running")]
    kind: str  # stale, disabled or running
    job: str
    server: str
    em: str
    detail: dict[str, Any] = field(default_factory=dict)


MIN_INTERVAL = timedelta(hours=2)  # a learned interval is never shorter
MIN_INTERVAL_S = MIN_INTERVAL.total_seconds()
HISTORY_NEEDED = 3  # successful runs before the interval is learned, not read from NextRun


def expected_interval(
    success_starts: Sequence[datetime], floor: timedelta = MIN_INTERVAL
) -> timedelta | None:
    """How long a job may go without a success: about twice the median gap between its
    successful runs, at least `floor`; None with fewer than three runs to learn from."""
    seconds = interval_s([t.timestamp() for t in success_starts], floor.total_seconds())
    return None if seconds is None else timedelta(seconds=seconds)


def interval_s(starts: Sequence[float], floor_s: float = MIN_INTERVAL_S) -> float | None:
    """`expected_interval` in epoch seconds (the stale stage judges thousands of jobs)."""
    if len(starts) < HISTORY_NEEDED:
        return None
    ordered = sorted(starts)
    gaps = [b - a for a, b in pairwise(ordered) if b > a]
    if not gaps:
        return None
    return max(floor_s, 2 * median(gaps))


def is_stale(
    job: Job,
    *,
    last_success: datetime | None,
    last_start: datetime | None,
    interval: timedelta | None,
    grace: timedelta,
    now: datetime,
) -> bool:
    """A scheduled, enabled job is stale when its last success is older than `interval`
    (learned or configured). Without an interval (too little history), when its `NextRun`
    is more than `grace` in the past and no run has started since."""
    if not (job.schedule_configured and job.schedule_enabled):
        return False
    if interval is not None:
        ok = last_success.timestamp() if last_success else None
        return overdue(ok, interval.total_seconds(), now.timestamp())
    if job.next_run is None or now - job.next_run <= grace:
        return False
    return last_start is None or last_start < job.next_run


def overdue(last_success_s: float | None, interval_s: float, now_s: float) -> bool:
    """No success (never, or not for longer than the interval), in epoch seconds."""
    return last_success_s is None or now_s - last_success_s > interval_s


def runs_too_long(
    started: datetime,
    durations: Sequence[timedelta],
    *,
    minimum: timedelta,
    now: datetime,
) -> bool:
    """A session still working after about three times the job's median duration (at
    least `minimum`; `minimum` alone when the job has no finished run to learn from)."""
    limit = max(minimum, 3 * _median(durations)) if durations else minimum
    return now - started > limit


def schedule_change(before: bool | None, after: bool) -> str:
    """ "disabled" when a job's schedule was enabled and is not any more, "enabled" when it
    comes back, "" otherwise (the first sight of a job tells nothing)."""
    if before is None or before == after:
        return ""
    return "enabled" if after else "disabled"


def episode(is_open: bool, condition: bool) -> str:
    """Once per episode: "open" when a condition starts, "close" when it ends, else ""."""
    if condition and not is_open:
        return "open"
    if is_open and not condition:
        return "close"
    return ""


def _median(values: Sequence[timedelta]) -> timedelta:
    return timedelta(seconds=median(v.total_seconds() for v in values))
