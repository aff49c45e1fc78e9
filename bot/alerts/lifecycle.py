"""The life of a problem in Slack: its alert opens it, repeats go to its thread and update
the alert, a Success closes it with a reply and an update.

Exactly once, as for alerts: a reply is marked (table `pending` for a repeat, `recoveries`
for a recovery) before it is posted, and a crash is reconciled against the thread's
replies, whose metadata names the session. An update of the alert is marked (`redraws`) and redone
until Slack takes it; an update says the same thing however often it is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from markupsafe import Markup

from bot.alerts.message import (
    alert_message,
    problem_status,
    recovery_message,
    repeat_message,
    session_ref,
)
from bot.alerts.problems import (
    Problem,
    ended_at,
    escalates,
    identity,
    opened_by,
    recovered,
    repeated,
)
from bot.config.render import MAX_SESSIONS_PER_MESSAGE, Message, Renderer
from bot.config.settings import Settings
from bot.errors import NotifyError
from bot.models import TaskSession
from bot.slack.codes import gone
from bot.slack.web import Notifier, Receipt
from bot.store.codec import session_from_json, session_to_json
from bot.store.schema import ALERTS, NOTES, PROBLEMS, RECOVERIES, REDRAWS
from bot.store.store import Store

log = logging.getLogger(__name__)
# Post a message to a channel ("" for the alert channel of today's configuration).
Send = Callable[[Message, datetime, str], Receipt]


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        notifier: Notifier,
        renderer: Renderer,
        send: Send,
    ) -> None:
        self.settings, self.store, self.notifier = settings, store, notifier
        self.renderer, self.send = renderer, send
        self.em = settings.veeam.name
        # Problem and redraw records staged in memory, written in one batch (`_write`).
        self._staged_p: dict[str, dict[str, Any]] = {}
        self._staged_u: dict[str, dict[str, Any]] = {}

    def _write(self, *, wait: bool = True) -> None:
        self.store.put_records(PROBLEMS, self._staged_p)
        self.store.put_records(REDRAWS, self._staged_u)
        self._staged_p, self._staged_u = {}, {}
        self.store.commit(wait=wait)

    # ------------------------------------------------------------------ lookups
    def problems_of(self, sessions: list[TaskSession]) -> dict[str, Problem]:
        ids = sorted({identity(self.em, s) for s in sessions})
        return {k: Problem.from_json(v) for k, v in self.store.records(PROBLEMS, ids).items()}

    def open_count(self) -> int:
        """Open problems of this pipeline's Enterprise Manager (its name leads their
        identities: the server's name with several, else its host name)."""
        return self.store.count_open_problems(self.settings.veeam.label)

    # ------------------------------------------------------- after an alert
    def opened(self, sessions: list[TaskSession], receipt: Receipt, view: dict[str, Any]) -> None:
        """An alert reached Slack: each of its sessions opens a problem whose thread is the
        alert, and the alert's content is kept so that later updates can redraw it."""
        problems = self.problems_of(sessions)
        fresh: dict[str, Problem] = {}
        own: list[TaskSession] = []  # the alert's own sessions: the first of each problem
        folded: list[dict[str, str]] = []  # later failures it names (adopted after a crash)
        for s in sorted(sessions, key=ended_at):
            pid = identity(self.em, s)
            known = problems.get(pid)
            if known is not None and known.is_open and known.ts:
                continue  # a repeat adopted as a first after a crash: its problem exists
            if pid in fresh:
                fresh[pid] = repeated(fresh[pid], s)
                folded.append(session_ref(s))
                continue
            fresh[pid] = opened_by(pid, s, receipt.channel, receipt.ts)
            own.append(s)
        self.store.put_records(PROBLEMS, {k: v.to_json() for k, v in fresh.items()})
        if view.get("kind") != "catchup":
            own = own[:MAX_SESSIONS_PER_MESSAGE]
        record = {"c": receipt.channel, "s": [session_to_json(s) for s in own], **view}
        if folded:
            record["f"] = folded
        self.store.put_records(ALERTS, {receipt.ts: record})

    def folded_into(
        self, firsts: list[TaskSession], folded: list[TaskSession]
    ) -> tuple[dict[str, Markup], dict[str, list[TaskSession]]]:
        """For each new alert's session: the status line for the later failures folded
        into it, and those failures (its metadata names them), so that the alert is posted
        complete rather than posted and then updated."""
        later: dict[str, list[TaskSession]] = {}
        for s in sorted(folded, key=ended_at):
            later.setdefault(identity(self.em, s), []).append(s)
        status: dict[str, Markup] = {}
        into: dict[str, list[TaskSession]] = {}
        for s in firsts:
            pid = identity(self.em, s)
            if pid in later:
                p = opened_by(pid, s, "", "")
                for f in later[pid]:
                    p = repeated(p, f)
                status[s.uid] = problem_status(p, s.reason)
                into[s.uid] = later[pid]
        return status, into

    # ------------------------------------------------------------------ repeats
    def fold(self, folded: list[TaskSession], now: datetime) -> int:
        """Later failures of problems this poll opened: counted into their alert (drawn
        into it before it was posted), recorded, not posted. One whose alert did not go out
        stays pending."""
        if not folded:
            return 0
        problems = self.problems_of(folded)
        into: dict[str, list[dict[str, str]]] = {}
        for s in sorted(folded, key=ended_at):
            p = problems.get(identity(self.em, s))
            if p is None or not p.is_open or not p.ts:
                continue
            problems[p.id] = self.repeated(s, p, Receipt(p.channel, p.ts), now, redraw=False)
            into.setdefault(p.ts, []).append(session_ref(s))
        records = self.store.records(ALERTS, sorted(into))
        for ts, more in into.items():
            if ts in records:  # the redrawn alert's metadata names them too
                records[ts]["f"] = [*records[ts].get("f", []), *more]
        self.store.put_records(ALERTS, records)
        self._write()
        return sum(len(v) for v in into.values())

    def deliver_repeats(self, repeats: list[TaskSession], now: datetime) -> tuple[int, str]:
        """Post each repeat in its problem's thread, in the channel that thread is in;
        (how many went out, Slack's error). A thread that is gone (the alert deleted, its
        channel archived) makes the repeat a new alert in the alert channel, which is the
        problem's alert from then on; a repeat Slack refuses for good is settled alone, so
        that no other problem's follow-ups wait behind it."""
        if not repeats:
            return 0, ""
        done = 0
        problems = self.problems_of(repeats)
        try:
            for s in sorted(repeats, key=ended_at):
                p = problems.get(identity(self.em, s))
                if p is None or not p.is_open or not p.ts:
                    continue  # its first alert has not reached Slack yet: it stays pending
                broadcast = escalates(p, s) and self.settings.alerts.broadcast_escalation
                message = repeat_message(self.renderer, s, p, broadcast=broadcast)
                try:
                    receipt = self.send(message, now, p.channel)
                except NotifyError as exc:
                    if exc.retryable:
                        return done, str(exc)
                    try:
                        problems[p.id] = self._refused_repeat(s, p, exc, now)
                    except NotifyError as again:  # the alert channel refuses it as well
                        return done, str(again)
                    done += 1
                    continue
                problems[p.id] = self.repeated(s, p, receipt, now)
                done += 1
                if done % 500 == 0:
                    self._write(wait=False)  # the pending marks cover a crash
            return done, ""
        finally:
            self._write()

    def _refused_repeat(
        self, s: TaskSession, p: Problem, exc: NotifyError, now: datetime
    ) -> Problem:
        """A repeat Slack will never take in its thread: announced as a new alert when the
        thread is gone, else (content Slack refuses in every form) recorded without a
        message. Raises NotifyError when the new alert cannot be posted either."""
        if not gone(exc):
            log.warning("Slack refused the repeat of %s for good (%s); recorded", s.vm, exc)
            self.store.record_silently([s], now, f"refused by Slack ({exc.code})")
            return p
        after = replace(repeated(p, s), first_uid=s.uid)
        status = {s.uid: problem_status(after, s.reason)}
        message = alert_message(self.renderer, [s], status=status)
        receipt = self.send(message, now, "")
        log.warning(
            "the thread of %s's alert %s is gone (%s); announced it again as %s",
            s.vm,
            p.ts,
            exc.code,
            receipt.ts,
        )
        after = replace(after, channel=receipt.channel, ts=receipt.ts)
        self.store.record_sent([s], receipt.channel, receipt.ts, now)
        self._staged_p[p.id] = after.to_json()
        record = {"c": receipt.channel, "s": [session_to_json(s)], "reopened": p.ts}
        self.store.put_records(ALERTS, {receipt.ts: record})
        return after

    def repeated(
        self, s: TaskSession, p: Problem, receipt: Receipt, now: datetime, *, redraw: bool = True
    ) -> Problem:
        """Record a repeat (posted, or folded into the alert) and mark the alert for a
        redraw (a folded one was drawn into it already); durable at the next `_write`."""
        self.store.record_sent([s], receipt.channel, receipt.ts, now)
        after = repeated(p, s)
        self._staged_p[p.id] = after.to_json()
        if redraw:
            self._staged_u[p.ts] = {"c": p.channel}
        return after

    def adopt_in_threads(self, pending: list[TaskSession], now: datetime) -> set[str]:
        """Pending repeats that reached their thread before a crash: record them; return
        their UIDs."""
        adopted: set[str] = set()
        problems = self.problems_of(pending)
        by_thread: dict[tuple[str, str], dict[str, TaskSession]] = {}
        for s in pending:
            p = problems.get(identity(self.em, s))
            if p is not None and p.is_open and p.ts:
                by_thread.setdefault((p.channel, p.ts), {})[s.uid] = s
        for (channel, ts), sessions in by_thread.items():
            found = self._in_thread(channel, ts, set(sessions))
            for uid, receipt in sorted(found.items(), key=lambda kv: ended_at(sessions[kv[0]])):
                s = sessions[uid]
                pid = identity(self.em, s)
                problems[pid] = self.repeated(s, problems[pid], receipt, now)
                adopted.add(uid)
        self._write()
        return adopted

    def _in_thread(self, channel: str, ts: str, uids: set[str]) -> dict[str, Receipt]:
        try:
            return self.notifier.find_in_thread(channel, ts, uids)
        except NotifyError as exc:
            if exc.retryable:
                raise
            log.warning("cannot read the thread %s (%s); posting again", ts, exc)
            return {}

    # --------------------------------------------------------------- recoveries
    def recover(self, recoveries: list[tuple[str, TaskSession]], now: datetime) -> tuple[int, str]:
        """Reply "recovered" in each problem's thread and close it; (done, Slack's error).
        Each reply is marked (`recoveries`) before it is posted; one marked by an earlier
        poll that was cut short is first looked for in its thread."""
        earlier = self.store.all_records(RECOVERIES)
        fresh = {
            s.uid: {"p": pid, "s": session_to_json(s)}
            for pid, s in recoveries
            if s.uid not in earlier
        }
        if fresh:
            self.store.put_records(RECOVERIES, fresh)
            self.store.commit()
        rows = {**earlier, **fresh}
        ids = sorted({r["p"] for r in rows.values()})
        problems = {k: Problem.from_json(v) for k, v in self.store.records(PROBLEMS, ids).items()}
        done = 0
        try:
            for uid, row in rows.items():
                problem = problems.get(row["p"])
                if problem is None or not problem.is_open:
                    self.store.drop_records(RECOVERIES, [uid])
                    continue
                s = session_from_json(row["s"])
                seen = self._in_thread(problem.channel, problem.ts, {uid}) if uid in earlier else {}
                try:
                    receipt: Receipt | None = seen.get(uid) or self.send(
                        recovery_message(self.renderer, s, problem), now, problem.channel
                    )
                except NotifyError as exc:
                    if exc.retryable:
                        return done, str(exc)
                    # Its thread is gone, or Slack refuses the reply for good: the problem
                    # is closed all the same, and no other recovery waits behind it.
                    log.warning(
                        "cannot reply that %s recovered in %s (%s); closed it without the reply",
                        s.vm,
                        problem.ts,
                        exc,
                    )
                    receipt = None
                problems[problem.id] = closed = recovered(problem, s)
                self._staged_p[problem.id] = closed.to_json()
                if receipt is not None:
                    self._staged_u[problem.ts] = {"c": problem.channel}
                self.store.drop_records(RECOVERIES, [uid])
                log.info("%s recovered (%s)", s.vm, receipt.ts if receipt else "no reply")
                done += 1
                if done % 500 == 0:
                    self._write(wait=False)
            return done, ""
        finally:
            self._write()

    # ------------------------------------------------------------------ job notes
    def note_of(self, job_session_uid: str) -> str:
        """The FailureMessage of a job session whose failure its task sessions told."""
        row = self.store.records(NOTES, [job_session_uid]).get(job_session_uid) or {}
        return str(row.get("m", ""))

    def noted(self, notes: dict[str, str], now: datetime) -> None:
        """Keep each job session's FailureMessage for its alert's "Job: …" line, and redraw
        the alerts already posted for it (the job ends after its VMs)."""
        if not notes:
            return
        at = now.timestamp()
        self.store.put_records(NOTES, {k: {"m": m, "t": at} for k, m in notes.items()})
        marks: dict[str, dict[str, Any]] = {}
        for jsu in notes:
            for ts in self.store.alerts_of_job_session(jsu):
                record = self.store.records(ALERTS, [ts]).get(ts) or {}
                if record.get("c") and record.get("kind") != "catchup":
                    marks[ts] = {"c": record["c"]}
        self.store.put_records(REDRAWS, marks)

    # ------------------------------------------------------------------ updates
    def flush_updates(self) -> str:
        """Redraw every alert whose problems changed; Slack's error, if any (they stay
        marked and are redrawn on the next poll)."""
        marked = self.store.all_records(REDRAWS)
        if not marked:
            return ""
        records = self.store.records(ALERTS, sorted(marked))
        for ts, mark in marked.items():
            try:
                self._update(ts, mark["c"], records.get(ts))
            except NotifyError as exc:  # a passing error: the rest wait for the next poll
                self.store.commit()
                return str(exc)
            self.store.drop_records(REDRAWS, [ts])
        self.store.commit()
        return ""

    def _update(self, ts: str, channel: str, record: dict[str, Any] | None) -> None:
        """Redraw one alert. Slack's waits (a 429) let other writers in: an Acknowledge
        click that lands meanwhile is seen when the record is read again after the update,
        and the alert is drawn once more with it. Raises NotifyError on a passing error."""
        for _ in range(3):
            if record is None or record.get("kind") == "catchup" or record.get("gone"):
                return  # a catch-up's thread tells the news; a deleted alert is left alone
            try:
                message = self._redrawn(record)
            except Exception:  # a redraw must never stop a poll
                log.exception("cannot redraw the alert %s; leaving it as it is", ts)
                return
            try:
                self.notifier.update(channel, ts, message)
            except NotifyError as exc:
                if exc.retryable:
                    raise
                log.warning("cannot update the alert %s (%s); leaving it as it is", ts, exc)
                if gone(exc):  # deleted: said once, never tried again
                    now = self.store.records(ALERTS, [ts]).get(ts) or record
                    self.store.put_records(ALERTS, {ts: {**now, "gone": exc.code}})
                return
            self._update_copies(record, message)
            drawn, record = record, self.store.records(ALERTS, [ts]).get(ts)
            if record == drawn:
                return

    def _update_copies(self, record: dict[str, Any], message: Message) -> None:
        """The copies a `continue` route got show what the alert shows (best effort: a
        copy Slack refuses to update is left as it is)."""
        for channel, copy_ts in (record.get("copies") or {}).items():
            if not copy_ts or str(copy_ts).startswith("refused"):
                continue
            try:
                self.notifier.update(channel, str(copy_ts), message)
            except NotifyError as exc:
                if exc.retryable:
                    raise
                log.info("cannot update the copy %s in %s (%s)", copy_ts, channel, exc)

    def redrawn(self, ts: str) -> Message:
        """The alert posted as `ts`, drawn again from its record (for its copies)."""
        return self._redrawn(self.store.records(ALERTS, [ts])[ts])

    def _redrawn(self, record: dict[str, Any]) -> Message:
        sessions = [session_from_json(d) for d in record["s"]]
        problems = self.problems_of(sessions)
        status: dict[str, Markup] = {}
        closed = 0
        for s in sessions:
            p = problems.get(identity(self.em, s))
            if p is not None and p.first_uid == s.uid:
                status[s.uid] = problem_status(p, s.reason)
                closed += not p.is_open
        message = alert_message(
            self.renderer,
            sessions,
            part=record.get("part", 1),
            part_count=record.get("part_count", 1),
            late_by=record.get("late_by"),
            status=status,
            recovered=closed == len(sessions),
            acked=(record["ack"]["by"], record["ack"]["at"]) if record.get("ack") else None,
            note=self.note_of(sessions[0].job_session_uid),
            retry=self.settings.actions.retry,
        )
        if record.get("f") and message.metadata:
            message.metadata["event_payload"]["sessions"] += record["f"]
        return message
