"""Stage: jobs that stop running. After each inventory refresh, each job's record is judged
(`conditions`, pure, from `stale.py`): stale, its schedule disabled, a run working too
long. A condition that starts opens an episode, told once by an alert; when it ends, one
reply in that alert's thread closes it. Mutes of the job apply.

Exactly once, as for alerts: an episode is marked (`posting`) before its alert is posted,
and an episode found marked after a crash is first looked for in the channel (the alert's
metadata names it); a closing reply is found in its thread the same way."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from bot.alerts.inventory import next_run
from bot.alerts.jobmessage import EVENTS, SUMMARY_EVENT, job_alert, job_closed, jobs_summary
from bot.alerts.mutes import MuteBook, muted_by
from bot.alerts.send import Sender
from bot.alerts.stale import Condition, interval_s, is_stale, overdue, runs_too_long
from bot.config.render import Renderer
from bot.config.settings import Settings, StaleSettings
from bot.errors import NotifyError
from bot.models import Job, TaskSession, utc_from_epoch
from bot.slack.web import Notifier, Receipt
from bot.store.schema import EPISODES
from bot.store.store import Store

log = logging.getLogger(__name__)


def episode_key(em: str, kind: str, uid: str) -> str:
    return json.dumps([em, kind, uid])


def as_job(rec: dict[str, Any]) -> Job:
    return Job(
        uid=str(rec.get("uid", "")), name=str(rec.get("name", "")),
        job_type=str(rec.get("type", "")), platform=str(rec.get("platform", "")),
        server=str(rec.get("server", "")), description="",
        schedule_configured=bool(rec.get("sched", True)),
        schedule_enabled=bool(rec.get("enabled", True)), next_run=next_run(rec),
        retry_times=int(rec.get("rt") or 0), retry_timeout_min=int(rec.get("rto") or 0),
    )  # fmt: skip


def interval_of(rec: dict[str, Any], settings: StaleSettings) -> tuple[bool, timedelta | None]:
    """(whether the job is watched for staleness, the interval it may go without a
    success: None to judge from NextRun)."""
    named, value = settings.override(str(rec.get("name", "")))
    if named:
        return value is not None, value
    if settings.after == "auto":
        seconds = rec["every"] if "every" in rec else interval_s(rec.get("ok") or ())
        return True, None if seconds is None else timedelta(seconds=seconds)
    assert isinstance(settings.after, timedelta)
    return True, settings.after


def conditions(
    em: str,
    rec: dict[str, Any],
    settings: StaleSettings,
    now: datetime,
    open_keys: set[str],
    *,
    shown: str = "",
) -> list[Condition]:
    """What is wrong with one job now. A disabled schedule counts only as a change (enabled
    at the refresh before, or an episode already open): a job first seen disabled is not
    news. `em` names the Enterprise Manager in episode keys; `shown` in messages ("" for
    the one server of `[veeam] url`). Judged in epoch seconds: the stage judges thousands of
    jobs after each refresh, and builds dates only for what it tells."""
    out: list[Condition] = []
    working: dict[str, float] = rec.get("working") or {}
    enabled = bool(rec.get("enabled", True))
    scheduled = bool(rec.get("sched", True))
    uid = str(rec.get("uid", ""))
    stale = False
    watched, interval = interval_of(rec, settings)
    if watched and not working and scheduled and enabled and rec.get("gone") is None:
        if interval is not None:
            last_ok = rec.get("last_ok")
            stale = overdue(last_ok, interval.total_seconds(), now.timestamp())
        else:  # too little history: its NextRun decides
            stale = is_stale(as_job(rec), last_success=None, last_start=_at(rec.get("last_start")),
                             interval=None, grace=settings.grace, now=now)  # fmt: skip
    if stale:
        when = {"last_success": _at(rec.get("last_ok")), "expected_every": interval,
                "next_run": next_run(rec)}  # fmt: skip
        out.append(_condition(em, "stale", uid, rec, shown=shown, detail=when))
    if settings.disabled and rec.get("listed") and scheduled and not enabled:
        key = episode_key(em, "disabled", uid)
        if rec.get("was") is True or key in open_keys:
            ran = _at((rec.get("last") or {}).get("end"))
            out.append(_condition(em, "disabled", uid, rec, shown=shown, detail={"last_run": ran}))
    if working:  # few jobs at a time: judged in dates
        durations = [timedelta(seconds=d) for d in sorted(rec.get("dur") or ())]
        usual = durations[len(durations) // 2] if durations else None
        for run_uid, started in working.items():
            begun = utc_from_epoch(started)
            if runs_too_long(begun, durations, minimum=settings.running_min, now=now):
                detail = {"job_session_uid": run_uid, "started": begun, "usual": usual}
                out.append(_condition(em, "running", run_uid, rec, shown=shown, detail=detail))
    return out


def _at(epoch: float | None) -> datetime | None:
    return utc_from_epoch(epoch) if epoch else None


def _condition(
    em: str, kind: str, uid: str, rec: dict[str, Any], *, shown: str, detail: dict[str, Any]
) -> Condition:
    job, server = str(rec.get("name", "")), str(rec.get("server", ""))
    detail = {**detail, "job_type": str(rec.get("type", ""))}  # for its route
    return Condition(episode_key(em, kind, uid), kind, job, server, shown, detail)


def closing_words(
    kind: str, rec: dict[str, Any] | None, opened: float, settings: StaleSettings | None = None
) -> str:
    """Why an episode ended, from the job's record now (and the configuration: a job
    turned "off" in `[stale.jobs]`)."""
    if rec is None:
        return "the job is no longer in Enterprise Manager"
    last = rec.get("last") or {}
    if kind == "stale":
        if float(rec.get("last_ok") or 0) > opened:
            return f"ran again: succeeded at {_iso(rec['last_ok'])}"
        if not rec.get("enabled", True):
            return "its schedule was disabled; no longer watched for runs"
        if settings is not None and not interval_of(rec, settings)[0]:
            return "no longer watched ([stale.jobs] turns it off)"
        return "no longer overdue"
    if kind == "disabled":
        return "its schedule was enabled again" if rec.get("enabled") else "no longer watched"
    result = last.get("result") or "finished"
    return f"the run finished ({result})" if last.get("end", 0) > opened else "no longer running"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Watch:
    """Opens and closes the episodes of one Enterprise Manager's jobs in Slack."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        notifier: Notifier,
        renderer: Renderer,
        sender: Sender,
        *,
        route: Callable[[Condition], str] | None = None,
    ) -> None:
        self.settings, self.store, self.notifier = settings, store, notifier
        self.renderer, self.sender = renderer, sender
        # the channel an episode's alert opens in ("" for the alert channel)
        self.route = route or (lambda _c: "")
        self.label = settings.veeam.label

    def episodes(self) -> dict[str, dict[str, Any]]:
        return self.store.records_of(EPISODES, self.label)

    def run(self, records: dict[str, dict[str, Any]], now: datetime) -> tuple[int, str]:
        """Judge every job, post what opened, reply to what closed; (messages, Slack's error)."""
        known = self.episodes()
        open_keys = {k for k, v in known.items() if v.get("state") != "closed"}
        found: dict[str, Condition] = {}
        by_uid: dict[str, dict[str, Any]] = {}
        for rec in records.values():
            by_uid[str(rec.get("uid"))] = rec
            for c in conditions(self.label, rec, self.settings.stale, now, open_keys,
                                shown=self.settings.veeam.server):  # fmt: skip
                found[c.key] = c
        done, errors = 0, []

        def told(step: Callable[[], int]) -> int:
            """One message; a refusal for good (a route's channel archived) is kept as the
            error and holds up no other episode; a passing one stops the run."""
            try:
                return step()
            except NotifyError as exc:
                if exc.retryable:
                    raise
                errors.append(str(exc))
                return 0

        try:
            opening = [
                (c, known.get(key))
                for key, c in sorted(found.items())
                if known.get(key, {}).get("state") in (None, "closed", "posting")
            ]
            opening = [(c, ep) for c, ep in opening if not self._muted(c, now)]
            batch = [(c, ep) for c, ep in opening if ep is None or not ep.get("batch")]
            limit = self.settings.alerts.max_messages_per_poll
            by_channel: dict[str, list[Condition]] = {}
            for c, _ in batch:
                by_channel.setdefault(self.route(c), []).append(c)
            for channel, mine in by_channel.items():
                if limit and len(mine) > limit:  # a first start: one summary, not a flood
                    done += told(partial(self._summary, mine, now, channel))
                    summed = {c.key for c in mine}
                    opening = [(c, ep) for c, ep in opening if c.key not in summed]
            for c, ep in opening:
                done += told(partial(self._open, c, ep, now))
            for key in sorted(open_keys - found.keys()):
                ep = known[key]
                uid = json.loads(key)[2]
                job_rec = by_uid.get(uid)
                if ep.get("kind") == "running":  # keyed by the run: find its job by name
                    named = (r for r in records.values() if r.get("name") == ep.get("job"))
                    job_rec = next(named, None)
                done += told(partial(self._close, key, ep, job_rec, now))
        except NotifyError as exc:
            return done, str(exc)
        finally:
            self.store.commit()
        return done, errors[0] if errors else ""

    def _muted(self, c: Condition, now: datetime) -> bool:
        """A mute of the job covers it: the episode is recorded, not told."""
        probe = TaskSession("", "", "", "", c.job, "", c.server, "", "", "", None, None, 0, c.em)
        mutes = MuteBook(self.store).active(now)
        if not (mutes and muted_by(mutes, probe, now)):
            return False
        row = {"kind": c.kind, "job": c.job, "state": "muted", "opened": now.timestamp()}
        self.store.put_records(EPISODES, {c.key: row})
        log.info("%s of %s muted", c.kind, c.job)
        return True

    def _summary(self, opening: list[Condition], now: datetime, channel: str = "") -> int:
        """Many episodes at once (a first start): marked with one batch id, told in one
        message; their closing replies go to its thread. After a crash the summary is
        looked for in the channel by its id."""
        batch = f"jobs-{int(now.timestamp())}-{len(opening)}"
        marks = {c.key: {"kind": c.kind, "job": c.job, "state": "posting",
                         "opened": now.timestamp(), "batch": batch} for c in opening}  # fmt: skip
        self.store.put_records(EPISODES, marks)
        self.store.commit()
        receipt = self.sender.send(jobs_summary(self.renderer, opening, batch), now, channel)
        self._batch_opened(opening, receipt, now.timestamp())
        log.info("announced %d jobs not running in one message", len(opening))
        return 1

    def _batch_opened(self, opening: list[Condition], receipt: Receipt, at: float) -> None:
        for c in opening:
            self._opened(c, receipt, at, commit=False)
        self.store.commit()

    def _open(self, c: Condition, ep: dict[str, Any] | None, now: datetime) -> int:
        if ep is not None and ep.get("batch"):  # marked for a summary a crash cut short
            return self._adopt_batch(c, ep, now)
        message = job_alert(self.renderer, c, now)
        if ep is not None and ep.get("state") == "posting":  # a crash between mark and post?
            receipt = self._already(c, float(ep.get("opened") or 0))
            if receipt is not None:
                self._opened(c, receipt, float(ep.get("opened") or now.timestamp()))
                return 0
        mark = {"kind": c.kind, "job": c.job, "state": "posting", "opened": now.timestamp()}
        self.store.put_records(EPISODES, {c.key: mark})
        self.store.commit()
        receipt = self.sender.send(message, now, self.route(c))
        self._opened(c, receipt, now.timestamp())
        log.info("announced %s: %s", c.kind, c.job)
        return 1

    def _adopt_batch(self, c: Condition, ep: dict[str, Any], now: datetime) -> int:
        """An episode of a summary whose post a crash or a lost answer cut short: adopt the
        summary if it is in the channel, else tell the episode alone."""
        at = float(ep.get("opened") or now.timestamp())
        try:
            where = self.route(c) or self.sender.channel
            events = self.notifier.find_events(where, SUMMARY_EVENT, at - 600)
        except NotifyError as exc:
            if exc.retryable:
                raise
            events = []
        found = next((r for p, r in events if p.get("id") == ep["batch"]), None)
        if found is not None:
            self._opened(c, found, at)
            return 0
        return self._open(c, {k: v for k, v in ep.items() if k != "batch"}, now)

    def _opened(self, c: Condition, receipt: Receipt, at: float, *, commit: bool = True) -> None:
        row = {"kind": c.kind, "job": c.job, "server": c.server, "state": "open",
               "opened": at, "c": receipt.channel, "ts": receipt.ts}  # fmt: skip
        self.store.put_records(EPISODES, {c.key: row})
        if commit:
            self.store.commit()

    def _already(self, c: Condition, at: float) -> Receipt | None:
        try:
            where = self.route(c) or self.sender.channel
            events = self.notifier.find_events(where, EVENTS[c.kind], at - 600)
        except NotifyError as exc:
            if exc.retryable:
                raise
            return None
        return next((r for p, r in events if p.get("episode") == c.key), None)

    def _close(
        self, key: str, ep: dict[str, Any], rec: dict[str, Any] | None, now: datetime
    ) -> int:
        closed = {**ep, "state": "closed", "closed": now.timestamp()}
        if ep.get("state") != "open" or not ep.get("ts"):  # muted, or never posted
            self.store.put_records(EPISODES, {key: closed})
            return 0
        opened = float(ep.get("opened") or 0)
        words = closing_words(str(ep.get("kind")), rec, opened, self.settings.stale)
        reply = job_closed(self.renderer, key, str(ep.get("job", "")), words, str(ep["ts"]))
        channel = str(ep.get("c") or "")
        uid = f"close:{key}"
        seen: dict[str, Receipt] = {}
        if ep.get("closing"):  # marked by a poll cut short: did the reply go out?
            try:
                seen = self.notifier.find_in_thread(channel, str(ep["ts"]), {uid})
            except NotifyError as exc:
                if exc.retryable:
                    raise
        if not seen:
            self.store.put_records(EPISODES, {key: {**ep, "closing": now.timestamp()}})
            self.store.commit()
            try:
                self.sender.send(reply, now, channel)
            except NotifyError as exc:
                if exc.retryable:
                    raise
                log.warning("cannot reply that %s ended (%s); closed it", ep.get("job"), exc)
        self.store.put_records(EPISODES, {key: closed})
        self.store.commit()
        log.info("%s of %s ended: %s", ep.get("kind"), ep.get("job"), words)
        return 1
