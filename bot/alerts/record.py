"""Stage: record. After a poll, each session type's checkpoint moves to where EM has been
read (never past a pending alert), the poll is remembered for /healthz, and once a day
retention forgets what no query window can return again."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.alerts.fetch import window_start
from bot.config.settings import Settings
from bot.models import JOB_SESSION_OF, TaskSession
from bot.store.codec import Pending, scoped
from bot.store.store import Store


def next_checkpoint(
    top: datetime | None, now: datetime, waiting: list[datetime], overlap: timedelta
) -> datetime:
    """After a successful fetch: EM has been read up to the latest end time it listed, and at
    least up to `now - overlap` (a quiet spell moves the checkpoint too, so the query window
    never reaches back to old failures); never past a session still pending."""
    reached = now - overlap if top is None else max(top, now - overlap)
    return min([reached, *waiting])


def prune_cutoff(now: datetime, settings: Settings, checkpoints: list[datetime | None]) -> datetime:
    """Announced sessions recorded before this may be forgotten: older than retention, and
    older than anything a query window (ordinary, or a sweep over the late window) can still
    return, so a forgotten session is never fetched and announced again."""
    starts = [now - settings.poll.late_window - settings.poll.overlap]
    starts += [window_start(c, now, settings) for c in checkpoints if c is not None]
    return min([now - settings.alerts.retention, *starts])


def stream_of(s: TaskSession) -> str:
    """The query a session came from: its task type, or its job-session type for a job
    session's own failure. Each has its own checkpoint."""
    return JOB_SESSION_OF.get(s.type, s.type) if s.job_level else s.type


def streams(settings: Settings) -> list[str]:
    """Every query stream a poll reads: each watched task type, and its job sessions."""
    types = list(settings.veeam.session_types)
    if settings.veeam.job_sessions:
        types += [JOB_SESSION_OF[t] for t in settings.veeam.session_types]
    return types


def poll_record(outcome: str, now: datetime, announced: int, pending: int,
                before: dict[str, object]) -> dict[str, object]:  # fmt: skip
    """What `last_poll` keeps of a poll (/healthz reads it)."""
    return {
        "at": now.timestamp(),
        "outcome": outcome,
        "announced": announced,
        "pending": pending,
        # the last poll that reached EM and Slack alike (/healthz)
        "ok_at": now.timestamp() if outcome == "ok" else before.get("ok_at"),
    }


class Recorder:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.server = settings.veeam.server

    def checkpoints(self) -> list[datetime | None]:
        return [self.store.checkpoint(t, self.server) for t in streams(self.settings)]

    def advance(
        self, high: dict[str, datetime | None], pending: list[Pending], now: datetime
    ) -> None:
        """Move the checkpoint of each type EM answered for, never past a pending session."""
        for type_, top in high.items():
            waiting = [
                p.session.ended
                for p in pending
                if stream_of(p.session) == type_ and p.session.ended
            ]
            overlap = self.settings.poll.overlap
            reached = next_checkpoint(top, now, waiting, overlap)
            self.store.set_checkpoint(type_, reached, self.server)

    def remember(self, now: datetime, outcome: str, announced: int, pending: int) -> None:
        name = scoped("last_poll", self.server)
        before = self.store.meta(name) or {}
        self.store.set_meta(name, poll_record(outcome, now, announced, pending, before))

    def prune(self, now: datetime, checkpoints: list[datetime | None] | None = None) -> int:
        """Forget announced sessions past retention that no query window can return (of
        this server, or of every server's `checkpoints`)."""
        if checkpoints is None:
            checkpoints = self.checkpoints()
        removed = self.store.prune(prune_cutoff(now, self.settings, checkpoints))
        self.store.prune_lifecycle(now - self.settings.alerts.retention)
        # "" is the one server of `[veeam] url`, whose rows the first listed server takes on.
        configured = {s.server for s in self.settings.servers} | {""}
        self.store.prune_orphans(now - self.settings.alerts.retention, configured)
        self.store.set_meta("last_prune", now.timestamp())
        self.store.commit()
        return removed

    def prune_if_due(
        self, now: datetime, checkpoints: list[datetime | None] | None = None
    ) -> int | None:
        """Prune once a day for a bot that runs as `poll --once` from cron (`run` prunes on
        its own schedule); None when it was not due."""
        last = self.store.meta("last_prune")
        if isinstance(last, int | float) and now.timestamp() - last < 86400:
            return None
        return self.prune(now, checkpoints)
