"""Stage: fetch. What to ask EM (the window of an ordinary poll or of a sweep over the late
window, the filters) is decided by pure functions; `Fetcher` asks, page by page, and hands
each batch to the select stage so that a long answer never sits in memory whole."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.alerts.select import note_late, select
from bot.config.settings import Settings
from bot.errors import AuthError, EMRejected, EMUnavailable, SourceError
from bot.models import TaskSession, iso_z
from bot.store.codec import scoped
from bot.store.store import Store
from bot.veeam import filters as F
from bot.veeam.client import EMClient
from bot.veeam.fields import parse_time

BATCH = 400  # sessions per look-up in the store


def alertable(s: TaskSession, results: tuple[str, ...], not_before: datetime) -> bool:
    """Completed, with a configured result, and ended inside the window."""
    return s.state == "Completed" and s.result in results and (s.ended or not_before) >= not_before


def window_start(checkpoint: datetime | None, now: datetime, settings: Settings) -> datetime:
    """Where an ordinary poll's query starts: checkpoint minus overlap, or now minus lookback."""
    if checkpoint is None:
        return now - settings.poll.initial_lookback
    return checkpoint - settings.poll.overlap


def sweep_start(
    checkpoint: datetime | None, floor: datetime | None, now: datetime, settings: Settings
) -> datetime:
    """Where a sweep's query starts: the late window back from now, but never before what a
    first run chose not to announce (`floor`: the first run's now minus initial_lookback),
    and never after where an ordinary poll would start."""
    start = now - settings.poll.late_window
    if floor is not None:
        start = max(start, floor)
    return min(start, window_start(checkpoint, now, settings))


def is_sweep_due(last_sweep: datetime | None, now: datetime, interval: timedelta) -> bool:
    """The first poll of a process sweeps, and then one poll every `interval`."""
    return last_sweep is None or now - last_sweep >= interval


def error_kind(exc: SourceError) -> str:
    """The kind of an EM failure, as the metrics count it."""
    if isinstance(exc, EMUnavailable) or exc.transient:
        return "em_unreachable"
    if isinstance(exc, AuthError | EMRejected):
        return "em_rejected"
    return "em_error"


def em_filter(results: tuple[str, ...], since: datetime) -> str:
    return F.all_of(
        [
            F.cmp("State", "==", "Completed"),
            F.one_of("Result", list(results)),
            F.cmp("EndTime", ">=", since),
        ]
    )


class Fetcher:
    """Asks one Enterprise Manager for the failures and successes of a poll."""

    def __init__(self, settings: Settings, em: EMClient, store: Store) -> None:
        self.settings, self.em, self.store = settings, em, store
        self.server = settings.veeam.server
        self.last_sweep: datetime | None = None  # None: this process has not swept yet

    def window(self, stream: str, now: datetime, sweep: bool) -> tuple[datetime, datetime, bool]:
        """(where this poll's query of `stream` starts, where an ordinary poll's would, whether
        the stream had a checkpoint). A stream is a session type, task or job."""
        checkpoint = self.store.checkpoint(stream, self.server)
        ordinary = window_start(checkpoint, now, self.settings)
        floor_key = scoped(f"floor:{stream}", self.server)
        floor = self.store.meta(floor_key)
        if checkpoint is None and floor is None:  # a first run: nothing before this, ever
            floor = iso_z(ordinary)
            self.store.set_meta(floor_key, floor)
        floor_at = parse_time(floor) if isinstance(floor, str) else None
        since = sweep_start(checkpoint, floor_at, now, self.settings) if sweep else ordinary
        return since, ordinary, checkpoint is not None

    def failures(
        self,
        type_: str,
        now: datetime,
        sweep: bool,
        late: dict[str, float],
        told: set[str] | None = None,
    ) -> tuple[list[TaskSession], int, datetime | None]:
        """(new sessions, sessions fetched, latest end time seen) for one session type. A
        sweep looks back over the late window; what only it finds goes into `late`. `told`
        gathers the job session of every failure listed, new or not (the job-session
        stage leaves those to their task sessions)."""
        since, ordinary, had_checkpoint = self.window(type_, now, sweep)
        results = self.settings.alerts.results
        out: list[TaskSession] = []
        batch: list[TaskSession] = []
        fetched, top = 0, None
        for s in self.em.query(type_, em_filter(results, since), sort_asc="EndTime"):
            fetched += 1
            if s.ended and (top is None or s.ended > top):
                top = s.ended
            if alertable(s, results, since):
                batch.append(s)
                if told is not None:
                    told.add(s.job_session_uid)
            if len(batch) >= BATCH:
                out += select(self.store, batch)
                batch = []
        out += select(self.store, batch)
        out = self.tagged(out)
        if had_checkpoint:
            note_late(out, ordinary, now, late)
        return out, fetched, top

    def success_start(self, stream: str, now: datetime) -> datetime:
        """Where the query for a stream's successes starts: an ordinary window, and no more.
        After an outage (or on a first run) all of a day's successes would be read for the
        few that close a problem; a problem whose recovery fell before closes at the next
        success."""
        wanted = max(2 * self.settings.poll.overlap, self.settings.alerts.hold_for_retries)
        checkpoint = self.store.checkpoint(stream, self.server)
        return max(window_start(checkpoint, now, self.settings), now - wanted)

    def successes(self, type_: str, now: datetime) -> list[TaskSession]:
        """The completed Success sessions of an ordinary poll's window (not a sweep's)."""
        flt = F.all_of(
            [
                F.cmp("State", "==", "Completed"),
                F.cmp("Result", "==", "Success"),
                F.cmp("EndTime", ">=", self.success_start(type_, now)),
            ]
        )
        return self.tagged(list(self.em.query(type_, flt, sort_asc="EndTime")))

    def tagged(self, sessions: list[TaskSession]) -> list[TaskSession]:
        """Sessions named with their Enterprise Manager, when the bot watches several."""
        return [s._replace(em=self.server) for s in sessions] if self.server else sessions
