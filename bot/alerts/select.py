"""Stage: select. Of what EM listed, only what was never announced, pending or held goes on;
what only a sweep found was listed late, and says so."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.config.render import rough_duration
from bot.models import TaskSession
from bot.store.store import Store

log = logging.getLogger(__name__)


def decide(is_announced: bool, is_pending: bool) -> str:
    """Why a fetched session is (not) announced now: "first", "repeat" or "pending"."""
    if is_announced:
        return "repeat"
    return "pending" if is_pending else "first"


def late_by(ended: datetime | None, ordinary_start: datetime, now: datetime) -> float | None:
    """Seconds between a session's end and the poll that found it, when only a sweep could
    have found it (it ended before an ordinary poll's window): EM listed it late."""
    if ended is None or ended >= ordinary_start:
        return None
    return (now - ended).total_seconds()


def select(store: Store, batch: list[TaskSession]) -> list[TaskSession]:
    """Drop sessions already announced or pending; the store answers, not EM."""
    announced, pending = store.known([s.uid for s in batch])
    return [s for s in batch if decide(s.uid in announced, s.uid in pending) == "first"]


def note_late(
    sessions: list[TaskSession], ordinary: datetime, now: datetime, late: dict[str, float]
) -> None:
    """Record in `late` (UID → seconds) the sessions EM listed after the ordinary window."""
    for s in sessions:
        seconds = late_by(s.ended, ordinary, now)
        if seconds is not None:
            late[s.uid] = seconds
            log.info("%s (%s) was listed late, %s after it ended", s.vm, s.job,
                     rough_duration(seconds))  # fmt: skip
