"""One poll cycle: fetch → select → dedup → group → render → mark pending → send → record.

`poll_once(now)` is the whole cycle; `now` comes from the caller. The pure steps (the dedup
decision, grouping, the fetch window) are module functions tested with tables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup

from bot.alerts.lifecycle import Lifecycle
from bot.alerts.message import (
    CATCHUP_EVENT,
    alert_message,
    bare_alert,
    catchup_message,
    minimal_message,
    plain_message,
    session_ref,
)
from bot.alerts.mutes import MuteBook, muted_by
from bot.alerts.problems import Plan, hold, plan
from bot.config.render import MAX_SESSIONS_PER_MESSAGE, Message, Renderer, rough_duration
from bot.config.settings import Settings
from bot.errors import AuthError, EMRejected, EMUnavailable, NotifyError, SourceError
from bot.models import TaskSession, iso_z
from bot.slack.web import Notifier, Receipt
from bot.store.codec import Pending, scoped, session_from_json, session_to_json
from bot.store.lock import WriterLock
from bot.store.schema import CATCHUPS, HELD, PENDING
from bot.store.store import Store
from bot.veeam import filters as F
from bot.veeam.client import EMClient
from bot.veeam.parse import parse_time

log = logging.getLogger(__name__)
# Messages between commits of delivery records. The committed pending marks cover a crash;
# these commits only shorten the history check after one, and each rewrites index pages.
COMMIT_EVERY = 500


@dataclass
class PollResult:
    fetched: int = 0
    new: int = 0
    announced: int = 0
    pending: int = 0
    recovered: int = 0  # problems closed by a Success
    retries: int = 0  # EM requests and Slack posts sent again after a transient failure
    em_error: str = ""
    # em_unreachable (connection, timeout, 5xx), em_rejected (logon or query refused),
    # em_error (an answer the bot cannot read)
    em_error_kind: str = ""
    slack_error: str = ""

    @property
    def exit_code(self) -> int:
        if self.em_error:
            return 1
        # Something Slack could still take is left: alerts pending, or replies, recoveries
        # or updates that met a passing error (what Slack refuses for good is settled).
        return 2 if self.pending or self.slack_error else 0

    @property
    def outcome(self) -> str:
        """The word for the log line and the metrics: ok, em_error or slack_error."""
        return "em_error" if self.em_error else "slack_error" if self.slack_error else "ok"

    def log_line(self, server: str, seconds: float) -> str:
        """The poll as key=value pairs, one line (for log shippers and grep)."""
        error = self.em_error or self.slack_error
        return (
            f"poll server={server} outcome={self.outcome} fetched={self.fetched} new={self.new} "
            f"announced={self.announced} recovered={self.recovered} pending={self.pending} "
            f"retries={self.retries} ms={seconds * 1000:.0f}"
            + (f" error={json.dumps(error)}" if error else "")
        )

    def summary(self, seconds: float) -> str:
        return (
            f"fetched {self.fetched}, new {self.new}, announced {self.announced}, "
            f"pending {self.pending}, retries {self.retries}, {seconds:.2f}s"
        )


# ------------------------------------------------------------------ pure steps
def decide(is_announced: bool, is_pending: bool) -> str:
    """Why a fetched session is (not) announced now: "first", "repeat" or "pending"."""
    if is_announced:
        return "repeat"
    return "pending" if is_pending else "first"


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


def next_checkpoint(
    top: datetime | None, now: datetime, waiting: list[datetime], overlap: timedelta
) -> datetime:
    """After a successful fetch: EM has been read up to the latest end time it listed, and at
    least up to `now - overlap` (a quiet spell moves the checkpoint too, so the query window
    never reaches back to old failures); never past a session still pending."""
    reached = now - overlap if top is None else max(top, now - overlap)
    return min([reached, *waiting])


def late_by(ended: datetime | None, ordinary_start: datetime, now: datetime) -> float | None:
    """Seconds between a session's end and the poll that found it, when only a sweep could
    have found it (it ended before an ordinary poll's window): EM listed it late."""
    if ended is None or ended >= ordinary_start:
        return None
    return (now - ended).total_seconds()


def prune_cutoff(now: datetime, settings: Settings, checkpoints: list[datetime | None]) -> datetime:
    """Announced sessions recorded before this may be forgotten: older than retention, and
    older than anything a query window (ordinary, or a sweep over the late window) can still
    return, so a forgotten session is never fetched and announced again."""
    starts = [now - settings.poll.late_window - settings.poll.overlap]
    starts += [window_start(c, now, settings) for c in checkpoints if c is not None]
    return min([now - settings.alerts.retention, *starts])


def group_sessions(sessions: Iterable[TaskSession]) -> list[list[TaskSession]]:
    """Sessions of one job session go together, oldest group first, at most 40 per chunk."""
    groups: dict[str, list[TaskSession]] = {}
    for s in sessions:
        groups.setdefault(s.job_session_uid or s.uid, []).append(s)
    ordered = sorted(groups.values(), key=lambda g: min(_end_key(s) for s in g))
    out = []
    for g in ordered:
        g.sort(key=_end_key)
        out += [
            g[i : i + MAX_SESSIONS_PER_MESSAGE] for i in range(0, len(g), MAX_SESSIONS_PER_MESSAGE)
        ]
    return out


def _end_key(s: TaskSession) -> float:
    return s.ended.timestamp() if s.ended else 0.0


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


# ------------------------------------------------------------------- the cycle
class Pipeline:
    def __init__(
        self,
        settings: Settings,
        em: EMClient,
        store: Store,
        notifier: Notifier,
        renderer: Renderer,
        *,
        sleep: Callable[[float], None] = time.sleep,
        retries: int = 3,
        backoff: float = 1.0,
        stopping: threading.Event | None = None,
        lock: WriterLock | None = None,
    ) -> None:
        self.settings = settings
        # `[[veeam.servers]]` name ("" for the one server of `[veeam] url`): this pipeline's
        # pending alerts, held failures and checkpoints are the ones of this server.
        self.server = settings.veeam.server
        # What this pipeline delivers of what is pending or held: its server's, and for the
        # first of several servers also what a bot of one server (`[veeam] url`) left
        # behind, so that moving to `[[veeam.servers]]` loses no alert.
        self.owns = (
            {self.server, ""}
            if self.server and settings.servers[0] == settings.veeam
            else {self.server}
        )
        # Held while the store changes: the store's own, shared by the pipelines of several
        # servers (only their EM queries run side by side) and by every other writer. It is
        # let go during Slack pacing and backoff waits.
        self.lock = lock or store.lock
        # Set on SIGTERM: delivery stops between messages; the rest stays pending.
        self.stopping = stopping or threading.Event()
        self.em, self.store, self.notifier, self.renderer = em, store, notifier, renderer
        self.sleep, self.retries, self.backoff = sleep, retries, backoff
        self.channel = settings.alerts.channel
        self.slack_retries = 0  # posts sent again after a 5xx, a lost connection or a 429
        self.last_sweep: datetime | None = None  # None: this process has not swept yet
        self.life = Lifecycle(settings, store, notifier, renderer, self._send)

    def _resolve_channel(self) -> None:
        """Post to (and read the history of) the channel's ID once it is known."""
        configured = self.settings.alerts.channel
        known = self.store.meta(f"channel-id:{configured}")
        if not known:
            known = self.notifier.channel_id(configured)
            if known:
                self.store.set_meta(f"channel-id:{configured}", known)
        self.channel = known or configured

    def _label(self) -> str:
        configured = self.settings.alerts.channel
        return configured if configured == self.channel else f"{configured} ({self.channel})"

    def pending(self) -> list[Pending]:
        """This server's pending alerts."""
        return [p for p in self.store.pending() if p.session.em in self.owns]

    def checkpoints(self) -> list[datetime | None]:
        return [self.store.checkpoint(t, self.server) for t in self.settings.veeam.session_types]

    def poll_once(self, now: datetime) -> PollResult:
        result = PollResult()
        retries_before = self.em.retries + self.slack_retries
        with self.lock:
            late, carried = self._carry(now, result)
        # EM is asked without the lock: a slow Enterprise Manager holds up no other.
        fetched = self._fetch_all(now, late, result)
        with self.lock:
            self._process(now, result, late, carried, fetched)
            result.retries = self.em.retries + self.slack_retries - retries_before
            self._remember(now, result)
            self.store.commit()
        return result

    def _carry(
        self, now: datetime, result: PollResult
    ) -> tuple[dict[str, float], list[TaskSession]]:
        """Reconcile what an earlier poll left pending; (late listings, what to post again)."""
        self._resolve_channel()
        try:
            self._reconcile_catchups(now)
        except NotifyError as exc:
            result.slack_error = str(exc)
        pending_before = self.pending()
        late = {p.session.uid: p.late for p in pending_before if p.late is not None}
        try:
            carried = self._reconcile(pending_before, now)
            adopted = self.life.adopt_in_threads(carried, now)
            carried = [s for s in carried if s.uid not in adopted]
        except NotifyError as exc:
            result.slack_error = str(exc)
            carried = []
        self.store.commit()
        return late, carried

    def _process(
        self,
        now: datetime,
        result: PollResult,
        late: dict[str, float],
        carried: list[TaskSession],
        fetched: tuple[
            list[TaskSession], list[TaskSession], list[TaskSession], dict[str, datetime | None]
        ],
    ) -> None:
        fresh, successes, held, high = fetched
        result.new = len(fresh)
        if fresh:
            self.store.mark_pending(fresh, self.channel, now, late=late)
        if not result.slack_error:
            everything = self._unmuted([*carried, *fresh, *held], now)
            todo = plan(
                self.life.em, everything, successes, self.life.problems_of(everything + successes)
            )
            todo.firsts, todo.recoveries, todo.folded = self._hold(todo, now, held, late)
            chunks = group_sessions(todo.firsts)
            status, into = self.life.folded_into(todo.firsts, todo.folded)
            self._deliver(
                chunks, now, result, {u.uid for u in carried}, late=late, folded=(status, into)
            )
            self._follow_up(todo, now, result)
        pending = self.pending()
        result.pending = len(pending)
        self._advance(high, pending, now)

    def _fetch_all(
        self, now: datetime, late: dict[str, float], result: PollResult
    ) -> tuple[list[TaskSession], list[TaskSession], list[TaskSession], dict[str, datetime | None]]:
        """(new failures, successes, failures held back, latest end time per type). After
        an EM error: nothing, and no checkpoint moves."""
        sweep = is_sweep_due(self.last_sweep, now, self.settings.poll.sweep_interval)
        fresh: list[TaskSession] = []
        successes: list[TaskSession] = []
        high: dict[str, datetime | None] = {}
        try:
            for type_ in self.settings.veeam.session_types:
                sessions, fetched, top = self._fetch(type_, now, sweep, late)
                fresh += sessions
                result.fetched += fetched
                high[type_] = top
            held = self._held()
            if self._wants_successes(fresh, held):
                for type_ in self.settings.veeam.session_types:
                    successes += self._successes(type_, now)
        except SourceError as exc:
            result.em_error = str(exc)
            result.em_error_kind = error_kind(exc)
            return [], [], [], {}
        if sweep:
            self.last_sweep = now
        return fresh, successes, held, high

    def _fetch(
        self, type_: str, now: datetime, sweep: bool, late: dict[str, float]
    ) -> tuple[list[TaskSession], int, datetime | None]:
        """(new sessions, sessions fetched, latest end time seen) for one session type. A
        sweep looks back over the late window; what only it finds goes into `late`."""
        checkpoint = self.store.checkpoint(type_, self.server)
        ordinary = window_start(checkpoint, now, self.settings)
        floor_key = scoped(f"floor:{type_}", self.server)
        floor = self.store.meta(floor_key)
        if checkpoint is None and floor is None:  # a first run: nothing before this, ever
            floor = iso_z(ordinary)
            self.store.set_meta(floor_key, floor)
        floor_at = parse_time(floor) if isinstance(floor, str) else None
        since = sweep_start(checkpoint, floor_at, now, self.settings) if sweep else ordinary
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
            if len(batch) >= 400:
                out += self._select(batch)
                batch = []
        out += self._select(batch)
        out = self._tagged(out)
        for s in out:
            seconds = late_by(s.ended, ordinary, now) if checkpoint is not None else None
            if seconds is not None:
                late[s.uid] = seconds
                log.info(
                    "%s (%s) was listed late, %s after it ended",
                    s.vm,
                    s.job,
                    rough_duration(seconds),
                )
        return out, fetched, top

    def _tagged(self, sessions: list[TaskSession]) -> list[TaskSession]:
        """Sessions named with their Enterprise Manager, when the bot watches several."""
        return [s._replace(em=self.server) for s in sessions] if self.server else sessions

    def _unmuted(self, sessions: list[TaskSession], now: datetime) -> list[TaskSession]:
        """Leave out what an active mute covers: recorded, not announced."""
        mutes = MuteBook(self.store).active(now)
        quiet = [s for s in sessions if mutes and muted_by(mutes, s, now)]
        if not quiet:
            return sessions
        log.info("%d failure(s) muted", len(quiet))
        self.store.record_silently(quiet, now, "muted")
        self.store.commit()
        skip = {s.uid for s in quiet}
        return [s for s in sessions if s.uid not in skip]

    def _held(self) -> list[TaskSession]:
        """Failures held back by `[alerts] hold_for_retries`, waiting for a retry. Read
        whatever the hold is now: a hold lowered or removed since they were held announces
        them at once (as one catch-up when there are many), never forgets them."""
        held = [session_from_json(v["s"]) for v in self.store.all_records(HELD).values()]
        return [s for s in held if s.em in self.owns]

    def _hold(
        self, todo: Plan, now: datetime, held: list[TaskSession], late: dict[str, float]
    ) -> tuple[list[TaskSession], list[tuple[str, TaskSession]], list[TaskSession]]:
        """Apply the retry hold to the new alerts; (what to announce now, recoveries, later
        failures to fold into those alerts)."""
        split = hold(self.life.em, todo, now, self.settings.alerts.hold_for_retries)
        was_held = {s.uid for s in held}
        if split.fixed:
            log.info("%d failure(s) fixed by a retry within the hold", len(split.fixed))
            self.store.record_silently(split.fixed, now, "fixed by a retry")
        waiting = [s for s in split.wait if s.uid not in was_held]
        if waiting:
            self.store.put_records(HELD, {s.uid: {"s": session_to_json(s)} for s in waiting})
            self.store.drop_records(PENDING, [s.uid for s in waiting])
        due = [s for s in split.announce + split.folded if s.uid in was_held]
        if due:
            self.store.mark_pending(due, self.channel, now, late=late)
            self.store.drop_records(HELD, [s.uid for s in due])
        if split.fixed or waiting or due:
            self.store.commit()
        return split.announce, split.recoveries, split.folded

    def _wants_successes(self, fresh: list[TaskSession], held: list[TaskSession]) -> bool:
        """Successes matter for open problems (or the ones this poll opens), and for
        failures under the retry hold, whether or not recoveries are announced."""
        if self.settings.alerts.hold_for_retries > timedelta(0) and (fresh or held):
            return True
        return self.settings.alerts.recovery and bool(fresh or held or self.life.open_count())

    def _successes(self, type_: str, now: datetime) -> list[TaskSession]:
        """The completed Success sessions of an ordinary poll's window (not a sweep's)."""
        # An ordinary window, and no more: after an outage (or on a first run) all of a
        # day's successes would be read for the few that close a problem. A problem whose
        # recovery fell before closes at its VM's next success.
        wanted = max(2 * self.settings.poll.overlap, self.settings.alerts.hold_for_retries)
        checkpoint = self.store.checkpoint(type_, self.server)
        since = max(window_start(checkpoint, now, self.settings), now - wanted)
        flt = F.all_of(
            [
                F.cmp("State", "==", "Completed"),
                F.cmp("Result", "==", "Success"),
                F.cmp("EndTime", ">=", since),
            ]
        )
        return self._tagged(list(self.em.query(type_, flt, sort_asc="EndTime")))

    def _follow_up(self, todo: Plan, now: datetime, result: PollResult) -> None:
        """Repeats into their threads, recoveries, then the alerts they changed."""
        if result.slack_error or self.stopping.is_set():
            return
        result.announced += self.life.fold(todo.folded, now)
        done, error = self.life.deliver_repeats(todo.repeats, now)
        result.announced += done
        if not error and self.settings.alerts.recovery:
            result.recovered, error = self.life.recover(todo.recoveries, now)
        result.slack_error = error or self.life.flush_updates()

    def _select(self, batch: list[TaskSession]) -> list[TaskSession]:
        """Drop sessions already announced or pending; the store answers, not EM."""
        announced, pending = self.store.known([s.uid for s in batch])
        return [s for s in batch if decide(s.uid in announced, s.uid in pending) == "first"]

    def _reconcile(self, pending: list[Pending], now: datetime) -> list[TaskSession]:
        """Adopt pending sessions that already reached Slack (crash, lost answer); return the
        rest, to be posted again."""
        if not pending:
            return []
        oldest = min(p.since for p in pending) - 60
        # Each is looked for where it was to go: the alert channel may have changed since.
        wanted: dict[str, set[str]] = {}
        for p in pending:
            wanted.setdefault(p.channel or self.channel, set()).add(p.session.uid)
        found: dict[str, Receipt] = {}
        for channel, uids in wanted.items():
            try:
                found.update(self.notifier.find_posted(channel, uids, oldest))
            except NotifyError as exc:
                if exc.retryable:
                    raise
                log.warning(
                    "cannot read %s history to check %d pending alert(s) (%s); posting "
                    "them again, which may repeat some",
                    channel,
                    len(uids),
                    exc,
                )
        by_uid = {p.session.uid: p.session for p in pending}
        by_ts: dict[Receipt, list[TaskSession]] = {}
        for uid, receipt in found.items():
            self.store.record_sent([by_uid[uid]], receipt.channel, receipt.ts, now)
            by_ts.setdefault(receipt, []).append(by_uid[uid])
        for receipt, sessions in by_ts.items():
            self.life.opened(sessions, receipt, {})
        if found:
            log.info("adopted %d alert(s) already in Slack", len(found))
            self.store.commit()
        return [p.session for p in pending if p.session.uid not in found]

    def _deliver(
        self,
        chunks: list[list[TaskSession]],
        now: datetime,
        result: PollResult,
        redelivered: set[str],
        *,
        late: dict[str, float],
        folded: tuple[dict[str, Markup], dict[str, list[TaskSession]]] = ({}, {}),
    ) -> None:
        status, into = folded
        limit = self.settings.alerts.max_messages_per_poll
        if limit and len(chunks) > limit:
            self._deliver_catchup([s for c in chunks for s in c], now, result)
            return
        count_by_group: dict[str, int] = {}
        for chunk in chunks:
            key = chunk[0].job_session_uid
            count_by_group[key] = count_by_group.get(key, 0) + 1
        seen: dict[str, int] = {}
        for n, chunk in enumerate(chunks, 1):
            if self.stopping.is_set():
                log.info("stopping: %d alert(s) stay pending", sum(len(c) for c in chunks[n - 1 :]))
                break
            key = chunk[0].job_session_uid
            seen[key] = seen.get(key, 0) + 1
            decision = "redelivery" if chunk[0].uid in redelivered else "first"
            msg_late = max((late[s.uid] for s in chunk if s.uid in late), default=None)
            try:
                msg = alert_message(
                    self.renderer,
                    chunk,
                    part=seen[key],
                    part_count=count_by_group[key],
                    decision=decision,
                    late_by=msg_late,
                    status=status,
                )
            except Exception:  # a template bug must not hold the alert back either
                log.exception("cannot render the alert for %s; sending it bare", chunk[0].uid)
                msg = bare_alert(chunk)
            later = [f for s in chunk for f in into.get(s.uid, [])]
            if later and msg.metadata:  # the failures folded into it are named too
                msg.metadata["event_payload"]["sessions"] += [session_ref(f) for f in later]
            try:
                receipt = self._send(msg, now)
            except NotifyError as exc:
                result.slack_error = str(exc)
                log.error("%s; %d alert(s) stay pending", exc, sum(len(c) for c in chunks[n - 1 :]))
                break
            self.store.record_sent(chunk, receipt.channel, receipt.ts, now)
            self.life.opened(
                chunk,
                receipt,
                {"part": seen[key], "part_count": count_by_group[key], "late_by": msg_late},
            )
            result.announced += len(chunk)
            if n % COMMIT_EVERY == 0:
                self.store.commit(wait=False)  # SQLite works while the next posts go out
        self.store.commit()

    def _deliver_catchup(
        self, sessions: list[TaskSession], now: datetime, result: PollResult
    ) -> None:
        """Too many job sessions for one message each: one catch-up message for all. Its
        attempt is recorded before the post (`C:<id>`), and its metadata carries the id, so
        that a crash is reconciled like any alert."""
        uids = sorted(s.uid for s in sessions)
        digest = hashlib.sha256("\n".join(uids).encode()).hexdigest()[:12]
        catchup_id = f"{int(now.timestamp())}-{digest}"
        attempt = {"u": uids, "t": now.timestamp(), "e": self.server}
        self.store.put_records(CATCHUPS, {catchup_id: attempt})
        self.store.commit()
        log.info("catch-up: %d sessions in one message (%s)", len(sessions), catchup_id)
        try:
            receipt = self._send(catchup_message(self.renderer, sessions, catchup_id), now)
        except NotifyError as exc:
            result.slack_error = str(exc)
            log.error("%s; %d alert(s) stay pending", exc, len(sessions))
            return
        self._caught_up(sessions, receipt, catchup_id, now)
        result.announced += len(sessions)

    def _caught_up(
        self, sessions: list[TaskSession], receipt: Receipt, catchup_id: str, now: datetime
    ) -> None:
        self.store.record_sent(sessions, receipt.channel, receipt.ts, now)
        self.life.opened(sessions, receipt, {"kind": "catchup"})
        self.store.drop_records(CATCHUPS, [catchup_id])
        self.store.commit()

    def _reconcile_catchups(self, now: datetime) -> None:
        """A catch-up message whose post was cut short (a crash, a lost answer): adopt it if
        it is in the channel, else forget the attempt (its sessions are still pending)."""
        attempts = {
            k: a for k, a in self.store.all_records(CATCHUPS).items() if a.get("e", "") in self.owns
        }
        if not attempts:
            return
        oldest = min(a["t"] for a in attempts.values()) - 60
        try:
            posted = self.notifier.find_events(self.channel, CATCHUP_EVENT, oldest)
        except NotifyError as exc:
            if exc.retryable:
                raise
            posted = []
        found = {str(payload.get("id")): receipt for payload, receipt in posted}
        pending = {p.session.uid: p.session for p in self.pending()}
        for catchup_id, attempt in attempts.items():
            receipt = found.get(catchup_id)
            sessions = [pending[u] for u in attempt["u"] if u in pending]
            if receipt is not None and sessions:
                log.info("adopted the catch-up message %s already in Slack", receipt.ts)
                self._caught_up(sessions, receipt, catchup_id, now)
            else:
                self.store.drop_records(CATCHUPS, [catchup_id])
        self.store.commit()

    def _send(self, msg: Message, now: datetime, channel: str = "") -> Receipt:
        """Post to `channel` (a problem's own, for its replies), else to the alert channel;
        when Slack refuses the content, post a smaller form of it at once, and then plain
        text, rather than the same message again."""
        forms = [msg, minimal_message(msg), plain_message(msg)]
        for n, form in enumerate(forms):
            try:
                return self._send_form(form, now, channel)
            except NotifyError as exc:
                if not exc.content or n == len(forms) - 1:
                    raise
                log.warning("%s; sending the alert again in a smaller form", exc)
        raise AssertionError("unreachable")

    def _send_form(self, msg: Message, now: datetime, channel: str = "") -> Receipt:
        """Post with backoff; after an unknown outcome, look in the channel before retrying."""
        uids = {s.uid for s in msg.sessions}
        for attempt in range(self.retries + 1):
            target = channel or self.channel
            try:
                receipt = self.notifier.post(target, msg, label=channel or self._label())
                if not channel and receipt.channel != self.channel:
                    self.store.set_meta(
                        f"channel-id:{self.settings.alerts.channel}", receipt.channel
                    )
                    self.channel = receipt.channel
                return receipt
            except NotifyError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                delay = self.backoff * 2**attempt
                log.warning("%s; retrying in %.1fs", exc, delay)
                self.slack_retries += 1
                with self.lock.paused():
                    self.sleep(delay)
                if exc.outcome_unknown:
                    found = self._look(uids, now, msg, target)
                    if found is not None:
                        return found
        raise AssertionError("unreachable")

    def _look(self, uids: set[str], now: datetime, msg: Message, channel: str) -> Receipt | None:
        """The message carrying `uids` if Slack posted it in `channel` (in the thread, for a
        reply; by its id, for a catch-up message)."""
        oldest = (now - timedelta(minutes=10)).timestamp()
        meta = msg.metadata or {}
        try:
            if meta.get("event_type") == CATCHUP_EVENT:
                wanted = meta["event_payload"]["id"]
                events = self.notifier.find_events(channel, CATCHUP_EVENT, oldest)
                return next((r for p, r in events if p.get("id") == wanted), None)
            if msg.thread_ts:
                found = self.notifier.find_in_thread(channel, msg.thread_ts, uids)
            else:
                found = self.notifier.find_posted(channel, uids, oldest)
        except NotifyError as exc:
            if exc.retryable:
                raise
            # History needs a channel ID; before the first post the bot may only know a name.
            log.warning("cannot read %s history (%s); retrying the post", channel, exc)
            return None
        if found and set(found) >= uids:
            log.info("Slack had posted the alert despite the error; adopting it")
            return next(iter(found.values()))
        return None

    def _advance(
        self, high: dict[str, datetime | None], pending: list[Pending], now: datetime
    ) -> None:
        """Move the checkpoint of each type EM answered for, never past a pending session."""
        for type_, top in high.items():
            waiting = [
                p.session.ended for p in pending if p.session.type == type_ and p.session.ended
            ]
            overlap = self.settings.poll.overlap
            reached = next_checkpoint(top, now, waiting, overlap)
            self.store.set_checkpoint(type_, reached, self.server)

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

    def _remember(self, now: datetime, result: PollResult) -> None:
        outcome = "ok"
        if result.em_error:
            outcome = f"EM error: {result.em_error}"
        elif result.slack_error:
            outcome = f"Slack error: {result.slack_error}"
        name = scoped("last_poll", self.server)
        before = self.store.meta(name) or {}
        self.store.set_meta(
            name,
            {
                "at": now.timestamp(),
                "outcome": outcome,
                "announced": result.announced,
                "pending": result.pending,
                # the last poll that reached EM and Slack alike (/healthz)
                "ok_at": now.timestamp() if outcome == "ok" else before.get("ok_at"),
            },
        )
