"""Maintenance windows (`[[mutes.windows]]`): recurring spans of local time in which a
failure is held, not announced. When its window ends, the hold stage announces each
problem still failing and records the ones a later Success settled.

Pure: `occurrence_end(window, at)` says whether `at` falls inside an occurrence of the
window and when that occurrence ends, in the window's own time zone (local wall time, so
a DST change moves the UTC instants as the digest's do); `held_until` applies the windows
that match a session."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.alerts.routes import globs
from bot.config.settings import Window
from bot.models import TaskSession, local_instant

DAY = timedelta(days=1)


def occurrence_end(w: Window, at: datetime) -> datetime | None:
    """The end (UTC) of the occurrence of `w` that `at` falls in; None outside it. An
    occurrence starts on each of its days at `start`, local time, and ends at `end` the same
    day, or the next when `end` is not after `start` (past midnight)."""
    local = at.astimezone(ZoneInfo(w.timezone)).date()
    for day in (local, local - DAY):  # one that started today, or yesterday past midnight
        if day.weekday() not in w.days:
            continue
        start, end = _span(w, day)
        if start <= at < end:
            return end
    return None


def _span(w: Window, day: date) -> tuple[datetime, datetime]:
    start = local_instant(day, w.start, w.timezone)
    end_day = day + DAY if w.end <= w.start else day
    return start, local_instant(end_day, w.end, w.timezone)


def covers(w: Window, s: TaskSession) -> bool:
    """Whether the window applies to the session's job and server (empty: all)."""
    jobs = globs(w.jobs)
    if jobs is not None and jobs.match(s.job) is None:
        return False
    return not w.servers or s.em.casefold() in {x.casefold() for x in w.servers}


def held_until(windows: tuple[Window, ...], s: TaskSession) -> datetime | None:
    """The end of the latest window occurrence, of the windows that apply to `s`, that its
    failure ended inside; None when none did."""
    if s.ended is None:
        return None
    ends = [e for w in windows if covers(w, s) and (e := occurrence_end(w, s.ended))]
    return max(ends, default=None)


def active(windows: tuple[Window, ...], now: datetime) -> list[tuple[Window, datetime]]:
    """The windows in force at `now`, each with when it ends (for /veeam mutes)."""
    out = []
    for w in windows:
        end = occurrence_end(w, now)
        if end is not None:
            out.append((w, end))
    return out
