"""Building and posting the digest: live, paged EM queries; posted once per local day."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta

from bot.alerts.jobfetch import as_session
from bot.alerts.joblist import JobRow, job_rows
from bot.alerts.mutes import MuteBook
from bot.alerts.problems import Problem, identity_fields
from bot.alerts.routes import Router
from bot.alerts.send import channel_id
from bot.config.render import Message, Renderer
from bot.config.settings import Route, Settings
from bot.digest.build import (
    DIGEST_EVENT,
    Summary,
    digest_message,
    digest_window,
    due,
    problem_digest,
    unavailable_message,
    window_filter,
)
from bot.digest.strip import DayStrip
from bot.errors import NotifyError, SourceError
from bot.models import JOB_SESSION_OF, TaskSession, iso_z, utc_from_epoch
from bot.slack.web import Notifier, Receipt
from bot.store.codec import scoped
from bot.store.schema import JOBS, PROBLEMS
from bot.store.store import Store
from bot.veeam import filters as F
from bot.veeam.client import EMClient

log = logging.getLogger(__name__)
DAY = timedelta(hours=24)
ONE_DAY = timedelta(days=1)  # a calendar day (local dates), not 24 h


class DigestRunner:
    def __init__(
        self,
        settings: Settings,
        em: EMClient | Mapping[str, EMClient],
        store: Store,
        notifier: Notifier,
        renderer: Renderer,
        *,
        route: Route | None = None,
    ) -> None:
        """`em`: one Enterprise Manager, or several by name (their jobs are then named
        "em1 · Job"). `route`: a route with `digest = true`, whose channel gets a digest of
        what it matches (posted once a day, as the main one, on its own record)."""
        self.settings, self.store = settings, store
        self.sources = dict(em) if isinstance(em, Mapping) else {"": em}
        self.notifier, self.renderer = notifier, renderer
        self._lock = threading.Lock()
        self.route = route
        self._router = Router((route,), "") if route is not None else None
        self.key = f"@{route.channel}" if route is not None else ""  # its facts' suffix

    def keeps(self, s: TaskSession) -> bool:
        """Whether the digest counts `s`: all of it, or what its route matches."""
        return self._router is None or (
            self.route is not None and (self.route.channel in self._router.channels(s))
        )

    def _stream(self, summary: Summary, missing: dict[str, str]) -> Summary:
        """Every session of the window into `summary`. With several Enterprise Managers one
        that fails is named in `missing` and the others still count (all failing: raise)."""
        flt = window_filter(summary.start, summary.end)
        types = {s.server: s.session_types for s in self.settings.servers}
        for name, client in self.sources.items():
            if name in missing:  # failed for the window before: not asked again
                continue
            try:
                for type_ in types.get(name, self.settings.veeam.session_types):
                    for s in client.query(type_, flt, sort_asc="EndTime"):
                        if self._router is not None and not self.keeps(s._replace(em=name)):
                            continue
                        summary.add(s._replace(job=f"{name} · {s.job}", em=name) if name else s)
            except SourceError as exc:
                if {*missing, name} == set(self.sources):  # none answers: no digest
                    raise
                missing.setdefault(name, str(exc))
        return summary

    def _down(self, missing: dict[str, str]) -> list[tuple[str, datetime | None, str]]:
        """(server, unreachable since, error) for each Enterprise Manager the bot cannot
        read: down for a while (its self-monitoring state), or failing this digest's query."""
        out: list[tuple[str, datetime | None, str]] = []
        for server in self.settings.servers:
            state = self.store.meta(scoped("source", server.server))
            if isinstance(state, dict) and state.get("since") and not state.get("back_at"):
                out.append((server.label, utc_from_epoch(state["since"]), str(state["error"])))
            elif server.server in missing:
                out.append((server.label, None, missing[server.server]))
        return out

    def build(self, now: datetime, window: timedelta = DAY) -> Message:
        """The digest for [now - window, now), compared with the window before it."""
        return self.build_window(now - window, now, now - 2 * window)

    def build_window(self, start: datetime, end: datetime, previous_start: datetime) -> Message:
        """The digest for [start, end), compared with [previous_start, start)."""
        missing: dict[str, str] = {}
        current = self._stream(Summary(start, end), missing)
        earlier = self._stream(Summary(previous_start, start), missing)
        strip, runs = self._strip(end, missing)
        for run in runs:  # a job's own failure that no VM told counts with the others
            current.add_run(run)
            earlier.add_run(run)
        previous = earlier.counts
        problems = [Problem.from_json(v) for v in self.store.all_records(PROBLEMS).values()]
        if self._router is not None:
            problems = [p for p in problems if self.keeps(_probe(p))]
        mutes = MuteBook(self.store).active(end)
        return digest_message(
            self.renderer,
            current,
            previous,
            self.settings.digest.timezone,
            problem_digest(
                problems, mutes, start, end, named=self.settings.many, down=self._down(missing)
            ),
            strip=strip,
            stopped=self._stopped(end),
        )

    def _stopped(self, end: datetime) -> list[JobRow]:
        """The jobs that stopped running, from the inventory the polls keep."""
        if self.settings.jobs.refresh <= timedelta(0):
            return []
        shown = {s.label: s.server for s in self.settings.servers}
        rows = job_rows(self.store.all_records(JOBS), self.settings, end, shown)
        rows = [r for r in rows if {"running", "stale", "disabled"} & set(r.marks)]
        if self._router is not None and self.route is not None:
            router, channel = self._router, self.route.channel

            def mine(r: JobRow) -> bool:
                kinds = ("backup", "replica")
                return any(channel in router.channels_of(r.job, "", r.em, k, "") for k in kinds)

            rows = [r for r in rows if mine(r)]
        return rows

    def _strip(self, end: datetime, missing: dict[str, str]) -> tuple[DayStrip, list[TaskSession]]:
        """Each job's last seven local days, from its job sessions, and the failed and
        warning runs among them (as the alert path carries them). A server in `missing`
        (its sessions did not answer) is not asked; one whose job sessions fail is left out
        of the strip alone."""
        strip = DayStrip(end, self.settings.digest.timezone)
        runs: list[TaskSession] = []
        flt = F.all_of([F.cmp("State", "==", "Stopped"), F.cmp("EndTime", ">=", strip.start),
                        F.cmp("EndTime", "<", end)])  # fmt: skip
        types = {s.server: s.session_types for s in self.settings.servers}
        for name, client in self.sources.items():
            if name in missing:
                continue
            try:
                for type_ in types.get(name, self.settings.veeam.session_types):
                    for js in client.query_job_sessions(JOB_SESSION_OF[type_], flt):
                        job = f"{name} · {js.job}" if name else js.job
                        mine = as_session(js._replace(em=name), type_)
                        if self._router is not None and not self.keeps(mine):
                            continue
                        strip.add(js, job)
                        if js.result in ("Failed", "Warning"):
                            runs.append(as_session(js._replace(job=job, em=name), type_))
            except SourceError as exc:
                log.warning("the digest's 7-day strip leaves out %s: %s", name or "EM", exc)
        return strip, runs

    def post(self, message: Message) -> Receipt:
        return self.notifier.post(self._channel(), message)

    def _channel(self) -> str:
        """The digest channel's ID once known (history needs it), else as configured."""
        configured = self.route.channel if self.route is not None else self.settings.digest_channel
        return channel_id(self.store, self.notifier, configured)

    def run_scheduled(self, now: datetime) -> None:
        """Post the digest of the last scheduled time if it is due and not yet posted (cron,
        retries, start-up). It covers the previous scheduled local time to that one (23 or
        25 h across a DST change), however late it is posted, and it is posted once: an
        attempt whose outcome is unknown (5xx, timeout, crash) is looked up in the channel's
        history before the next one."""
        d = self.settings.digest
        with self._lock:
            day = due(now, d.at, d.timezone, d.grace, self.store.meta("digest:last_day" + self.key))
            if day is None:
                return
            start, end = digest_window(day, d.at, d.timezone)
            if self.store.meta("digest:attempted_day" + self.key) == day.isoformat():
                found = self._already_posted(end)
                if found is not None:
                    self._posted(day.isoformat(), found, "found in the channel")
                    return
            try:
                message = self.build_window(
                    start, end, digest_window(day - ONE_DAY, d.at, d.timezone)[0]
                )
            except SourceError as exc:
                self._unavailable(day.isoformat(), str(exc), now)
                return
            # before the post: a crash during it is looked up next time
            self.store.remember("digest:attempted_day" + self.key, day.isoformat())
            try:
                receipt = self.post(message)
            except NotifyError as exc:
                log.error(
                    "digest for %s not posted (%s); retrying within the grace period", day, exc
                )
                return
            self._posted(day.isoformat(), receipt, "posted")

    def _already_posted(self, end: datetime) -> Receipt | None:
        """The digest ending at `end` if an earlier attempt did reach the channel."""
        wanted = iso_z(end)
        try:
            events = self.notifier.find_events(self._channel(), DIGEST_EVENT, end.timestamp() - 60)
        except NotifyError as exc:
            log.warning("cannot read the digest channel's history (%s); posting again", exc)
            return None
        for payload, receipt in events:
            if payload.get("window_end") == wanted:
                return receipt
        return None

    def _posted(self, day: str, receipt: Receipt, how: str) -> None:
        self.store.remember("digest:last_day" + self.key, day)
        log.info("%s the digest for %s in %s (ts %s)", how, day, receipt.channel, receipt.ts)

    def _unavailable(self, day: str, reason: str, now: datetime) -> None:
        log.error("digest for %s unavailable: %s", day, reason)
        if self.store.meta("digest:unavailable_day" + self.key) == day:
            return  # said once already; keep retrying quietly
        until = now + self.settings.digest.grace
        try:
            self.post(unavailable_message(self.renderer, reason, until))
        except NotifyError as exc:
            log.error("could not post that the digest is unavailable: %s", exc)
            return
        self.store.remember("digest:unavailable_day" + self.key, day)


def _probe(p: Problem) -> TaskSession:
    """A problem as a session of its identity, for its route."""
    em, type_, job, vm = identity_fields(p.id)
    return TaskSession("", type_, "", vm, job, "", "", "Completed", p.worst, "", None, None, 0,
                       em)  # fmt: skip
