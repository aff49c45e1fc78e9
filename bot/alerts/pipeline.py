"""One poll of one Enterprise Manager, as a chain of stages (README, "How an alert travels"):

    carry    what an earlier poll left pending is looked for in Slack first  (deliver)
    fetch    failures since the checkpoint (a sweep now and then), successes  (fetch)
    jobs     job sessions no task session tells: failures of their own      (jobfetch)
    select   only what was never announced, pending or held; late listings   (select)
    hold     new failures wait for Veeam's retry                              (hold)
    mute     what a mute covers is recorded, not announced                    (mutes)
    plan     problems: first alerts, repeats, recoveries, folded failures     (problems)
    render   one alert per job session, 40 VMs each                           (compose)
    deliver  post, record, follow up in threads                  (deliver, send, lifecycle)
    record   checkpoints, the poll for /healthz, retention                    (record)

Each stage's decisions are pure functions of data and `now`, tested with tables; the
stage classes hold the effects. `poll_once(now)` is the whole poll; `now` comes from the
caller. EM is asked without the store's lock, so that a slow server holds up no other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.alerts.compose import group_sessions
from bot.alerts.deliver import Delivery
from bot.alerts.episodes import Watch
from bot.alerts.fetch import Fetcher, error_kind, is_sweep_due
from bot.alerts.hold import Hold
from bot.alerts.inventory import Inventory
from bot.alerts.jobfetch import JobFetcher
from bot.alerts.lifecycle import Lifecycle
from bot.alerts.mutes import unmuted
from bot.alerts.problems import Plan, identity, plan
from bot.alerts.record import Recorder
from bot.alerts.result import PollResult
from bot.alerts.send import Sender
from bot.config.render import Renderer
from bot.config.settings import Settings
from bot.errors import NotifyError, SourceError
from bot.models import JOB_SESSION_OF, TaskSession
from bot.slack.web import Notifier
from bot.store.codec import Pending
from bot.store.lock import WriterLock
from bot.store.store import Store
from bot.veeam.client import EMClient

log = logging.getLogger(__name__)


@dataclass
class Fetched:
    """What EM answered in one poll; after an EM error, nothing (no checkpoint moves)."""

    fresh: list[TaskSession] = field(default_factory=list)
    successes: list[TaskSession] = field(default_factory=list)
    held: list[TaskSession] = field(default_factory=list)
    high: dict[str, datetime | None] = field(default_factory=dict)  # latest end, per type
    told: list[TaskSession] = field(default_factory=list)  # job sessions their tasks tell
    notes: dict[str, str] = field(default_factory=dict)  # their FailureMessage, by UID
    retries: set[str] = field(default_factory=set)  # IsRetry job sessions among `fresh`


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
        self.em, self.store = em, store
        self.notifier, self.renderer = notifier, renderer
        # `[[veeam.servers]]` name ("" for the one server of `[veeam] url`).
        self.server = settings.veeam.server
        # What this pipeline delivers of what is pending or held: its server's, and for the
        # first of several servers also what a bot of one server (`[veeam] url`) left
        # behind, so that moving to `[[veeam.servers]]` loses no alert.
        first = bool(self.server) and settings.servers[0] == settings.veeam
        owns = {self.server, ""} if first else {self.server}
        # Held while the store changes: the store's own, shared by the pipelines of several
        # servers and by every other writer; let go during Slack pacing and backoff waits.
        self.lock = lock or store.lock
        # Set on SIGTERM: delivery stops between messages; the rest stays pending.
        self.stopping = stopping or threading.Event()
        self.sender = Sender(settings.alerts.channel, store, notifier, self.lock,
                             sleep=sleep, retries=retries, backoff=backoff)  # fmt: skip
        self.life = Lifecycle(settings, store, notifier, renderer, self.sender.send)
        self.fetcher = Fetcher(settings, em, store)
        self.jobs = JobFetcher(settings, em, self.fetcher, store)
        self.inventory = Inventory(settings, em, store)
        self.hold = Hold(settings, store, owns, self.inventory.records)
        self.delivery = Delivery(
            settings, store, notifier, renderer,
            sender=self.sender, life=self.life, stopping=self.stopping, owns=owns,
        )  # fmt: skip
        self.recorder = Recorder(settings, store)
        self.watch = Watch(settings, store, notifier, renderer, self.sender,
                           route=self.delivery.episode_channel)  # fmt: skip
        self.settings = settings
        self.pending: Callable[[], list[Pending]] = self.delivery.pending
        self.checkpoints = self.recorder.checkpoints
        self.prune, self.prune_if_due = self.recorder.prune, self.recorder.prune_if_due

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        """Settings changed while the bot runs reach every stage."""
        self._settings = value
        stages = (self.life, self.fetcher, self.jobs, self.hold, self.delivery, self.recorder,
                  self.inventory, self.watch)  # fmt: skip
        for stage in stages:
            stage.settings = value
        self.sender.configured = value.alerts.channel

    @property
    def channel(self) -> str:
        """The alert channel: its ID once known."""
        return self.sender.channel

    @property
    def source_channel(self) -> str:
        """Where this Enterprise Manager's own trouble is told: the first route that names
        it in `servers`, else the alert channel."""
        for route in self.settings.alerts.routes:
            if self.server and self.server.casefold() in {s.casefold() for s in route.servers}:
                return self.sender.channel_of(route.channel)
        return self.sender.channel

    @property
    def last_sweep(self) -> datetime | None:
        return self.fetcher.last_sweep

    @last_sweep.setter
    def last_sweep(self, value: datetime | None) -> None:
        self.fetcher.last_sweep = value

    def poll_once(self, now: datetime) -> PollResult:
        result = PollResult()
        retries_before = self.em.retries + self.sender.retried
        with self.lock:
            late, carried = self._carry(now, result)
        fetched = self._fetch(now, late, result)  # without the lock
        with self.lock:
            self._process(now, result, late, carried, fetched)
        if self.inventory.enabled and not result.em_error and self.inventory.due(now):
            self._refresh(now, result)
        with self.lock:
            result.retries = self.em.retries + self.sender.retried - retries_before
            outcome = "ok"
            if result.em_error:
                outcome = f"EM error: {result.em_error}"
            elif result.slack_error:
                outcome = f"Slack error: {result.slack_error}"
            self.recorder.remember(now, outcome, result.announced, result.pending)
            self.store.commit()
        return result

    def _carry(
        self, now: datetime, result: PollResult
    ) -> tuple[dict[str, float], list[TaskSession]]:
        """Reconcile what an earlier poll left pending; (late listings, what to post again)."""
        self.sender.resolve(tuple(r.channel for r in self.settings.alerts.routes))
        try:
            self.delivery.reconcile_catchups(now)
            result.slack_error = self.delivery.resume_copies(now)
        except NotifyError as exc:
            result.slack_error = str(exc)
        pending_before = self.pending()
        late = {p.session.uid: p.late for p in pending_before if p.late is not None}
        try:
            carried = self.delivery.reconcile(pending_before, now)
            adopted = self.life.adopt_in_threads(carried, now)
            carried = [s for s in carried if s.uid not in adopted]
        except NotifyError as exc:
            result.slack_error = str(exc)
            carried = []
        self.store.commit()
        return late, carried

    def _fetch(self, now: datetime, late: dict[str, float], result: PollResult) -> Fetched:
        """Failures of each type (selected as they stream in), held failures, and the
        successes that may close problems or settle held failures."""
        sweep = is_sweep_due(self.fetcher.last_sweep, now, self.settings.poll.sweep_interval)
        out = Fetched()
        watch_jobs = self.settings.veeam.job_sessions
        try:
            for type_ in self.settings.veeam.session_types:
                told: set[str] = set()
                sessions, count, top = self.fetcher.failures(type_, now, sweep, late, told)
                out.fresh += sessions
                result.fetched += count
                out.high[type_] = top
                if watch_jobs:
                    got = self.jobs.failures(type_, now, sweep, late, told)
                    out.fresh += got.fresh
                    out.told += got.told
                    out.notes.update(got.notes)
                    out.retries |= got.retries
                    result.fetched += got.fetched
                    out.high[JOB_SESSION_OF[type_]] = got.top
            out.held = self.hold.held()
            if self._wants_successes(out.fresh, out.held):
                runs = watch_jobs and self._wants_job_successes(out.fresh, out.held)
                for type_ in self.settings.veeam.session_types:
                    out.successes += self.fetcher.successes(type_, now)
                    if runs:  # asked once per poll, not per type
                        out.successes += self.jobs.successes(type_, now)
        except SourceError as exc:
            result.em_error = str(exc)
            result.em_error_kind = error_kind(exc)
            return Fetched()
        if sweep:
            self.fetcher.last_sweep = now
        return out

    def _wants_successes(self, fresh: list[TaskSession], held: list[TaskSession]) -> bool:
        """Successes matter for open problems (or the ones this poll opens), and for
        failures under the retry hold, whether or not recoveries are announced."""
        holds = self.settings.alerts.hold_for_retries > timedelta(0) or self.settings.mutes.windows
        if holds and (fresh or held):
            return True
        return self.settings.alerts.recovery and bool(fresh or held or self.life.open_count())

    def _wants_job_successes(self, fresh: list[TaskSession], held: list[TaskSession]) -> bool:
        """A job's successful run closes only a job-level problem: one open, or opened now."""
        if any(s.job_level for s in (*fresh, *held)):
            return True
        label = self.settings.veeam.label
        return self.settings.alerts.recovery and self.store.count_open_job_problems(label) > 0

    def _process(
        self,
        now: datetime,
        result: PollResult,
        late: dict[str, float],
        carried: list[TaskSession],
        got: Fetched,
    ) -> None:
        if got.told:  # job sessions whose task sessions tell their failure
            self.store.record_silently(got.told, now, "told by its task sessions")
        self.life.noted(got.notes, now)
        retried = self._retries_alone(got, now)
        if retried:
            got.fresh = [s for s in got.fresh if s.uid not in retried]
        result.new = len(got.fresh)
        if got.fresh:
            self.delivery.mark(got.fresh, now, late)
        if not result.slack_error:
            everything = unmuted(self.store, [*carried, *got.fresh, *got.held], now)
            known = self.life.problems_of(everything + got.successes)
            todo = plan(self.life.em, everything, got.successes, known)
            todo.firsts, todo.recoveries, todo.folded = self.hold.apply(
                todo, now, got.held, late, self.delivery.mark
            )
            folded = self.life.folded_into(todo.firsts, todo.folded)
            announced, error = self.delivery.deliver(
                group_sessions(todo.firsts, self.delivery.primary), now, {s.uid for s in carried},
                late=late, folded=folded,
            )  # fmt: skip
            result.announced += announced
            result.slack_error = error
            self._follow_up(todo, now, result)
        pending = self.pending()
        result.pending = len(pending)
        self.recorder.advance(got.high, pending, now)

    def _refresh(self, now: datetime, result: PollResult) -> None:
        """Read the job inventory (without the lock), keep it, and tell the jobs that
        stopped running: stale, disabled, running too long."""
        try:
            read = self.inventory.read(now)
        except SourceError as exc:
            log.warning("cannot read the job inventory of %s: %s", self.inventory.label, exc)
            return
        with self.lock:
            records = self.inventory.keep(now, *read)
            if result.slack_error or self.stopping.is_set():
                return
            done, error = self.watch.run(records, now)
            result.announced += done
            result.slack_error = error

    def _retries_alone(self, got: Fetched, now: datetime) -> set[str]:
        """Veeam's retry of a job run is a repeat of its problem, never a new alert: an
        IsRetry job session with no open problem, and no first failure in this poll, is
        recorded without a message."""
        if not got.retries:
            return set()
        retries = [s for s in got.fresh if s.uid in got.retries]
        firsts = {identity(self.life.em, s) for s in got.fresh if s.uid not in got.retries}
        problems = self.life.problems_of(retries)
        alone = [
            s
            for s in retries
            if identity(self.life.em, s) not in firsts
            and not ((p := problems.get(identity(self.life.em, s))) is not None and p.is_open)
        ]
        if alone:
            self.store.record_silently(alone, now, "a retry of a run with no open alert")
        return {s.uid for s in alone}

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
