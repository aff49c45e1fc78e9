"""The life of a problem in Slack: its alert opens it, repeats go to its thread and update
the alert, a Success closes it with a reply and an update.

Exactly once, as for alerts: a reply is marked pending (`p:` for a repeat, `q:` for a
recovery) before it is posted, and a crash is reconciled against the thread's replies,
whose metadata names the session. An update of the alert is marked (`u:<ts>`) and redone
until Slack takes it; an update says the same thing however often it is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from markupsafe import Markup

from bot.alerts.message import alert_message, problem_status, recovery_message, repeat_message
from bot.alerts.problems import Problem, escalates, identity, opened_by, recovered, repeated
from bot.errors import NotifyError
from bot.models import TaskSession
from bot.render import Message, Renderer
from bot.settings import Settings
from bot.slack import Notifier, Receipt
from bot.store import Store, session_from_json, session_to_json

log = logging.getLogger(__name__)
Send = Callable[[Message, datetime], Receipt]


def _ended(s: TaskSession) -> float:
    return s.ended.timestamp() if s.ended else 0.0


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        notifier: Notifier,
        renderer: Renderer,
        send: Send,
    ) -> None:
        self.settings, self.store, self.notifier, self.renderer = (
            settings,
            store,
            notifier,
            renderer,
        )
        self.send = send
        self.em = settings.veeam.name

    # ------------------------------------------------------------------ lookups
    def problems_of(self, sessions: list[TaskSession]) -> dict[str, Problem]:
        ids = sorted({identity(self.em, s) for s in sessions})
        return {k: Problem.from_json(v) for k, v in self.store.records("P", ids).items()}

    def open_count(self) -> int:
        return self.store.count_where("P", "state", "open")

    # ------------------------------------------------------- after an alert
    def opened(self, sessions: list[TaskSession], receipt: Receipt, view: dict[str, Any]) -> None:
        """An alert reached Slack: each of its sessions opens a problem whose thread is the
        alert, and the alert's content is kept so that later updates can redraw it."""
        problems = self.problems_of(sessions)
        fresh = {}
        for s in sessions:
            pid = identity(self.em, s)
            known = problems.get(pid)
            if known is not None and known.is_open and known.ts:
                continue  # a repeat adopted as a first after a crash: its problem exists
            fresh[pid] = opened_by(pid, s, receipt.channel, receipt.ts).to_json()
        self.store.put_records("P", fresh)
        record = {"c": receipt.channel, "s": [session_to_json(s) for s in sessions], **view}
        self.store.put_records("M", {receipt.ts: record})

    # ------------------------------------------------------------------ repeats
    def fold(self, folded: list[TaskSession], now: datetime) -> int:
        """Later failures of problems this poll opened: counted into their alert (which is
        then redrawn), recorded, not posted. One whose alert did not go out stays pending."""
        problems = self.problems_of(folded)
        into: dict[str, list[dict[str, str]]] = {}
        for s in sorted(folded, key=_ended):
            p = problems.get(identity(self.em, s))
            if p is None or not p.is_open or not p.ts:
                continue
            problems[p.id] = self.repeated(s, p, Receipt(p.channel, p.ts), now)
            into.setdefault(p.ts, []).append({"uid": s.uid, "vm": s.vm, "result": s.result})
        records = self.store.records("M", sorted(into))
        for ts, more in into.items():
            if ts in records:  # the redrawn alert's metadata names them too
                records[ts]["f"] = [*records[ts].get("f", []), *more]
        self.store.put_records("M", records)
        self.store.commit()
        return sum(len(v) for v in into.values())

    def deliver_repeats(self, repeats: list[TaskSession], now: datetime) -> tuple[int, str]:
        """Post each repeat in its problem's thread; (how many went out, Slack's error)."""
        done = 0
        problems = self.problems_of(repeats)
        try:
            for s in sorted(repeats, key=_ended):
                p = problems.get(identity(self.em, s))
                if p is None or not p.is_open or not p.ts:
                    continue  # its first alert has not reached Slack yet: it stays pending
                broadcast = escalates(p, s) and self.settings.alerts.broadcast_escalation
                message = repeat_message(self.renderer, s, p, broadcast=broadcast)
                try:
                    receipt = self.send(message, now)
                except NotifyError as exc:
                    return done, str(exc)
                problems[p.id] = self.repeated(s, p, receipt, now)
                done += 1
                if done % 500 == 0:
                    self.store.commit(wait=False)  # the pending marks cover a crash
            return done, ""
        finally:
            self.store.commit()

    def repeated(self, s: TaskSession, p: Problem, receipt: Receipt, now: datetime) -> Problem:
        """Record a repeat (posted, or folded into the alert) and mark the alert for a
        redraw; durable at the caller's next commit."""
        self.store.record_sent([s], receipt.channel, receipt.ts, now)
        after = repeated(p, s)
        self.store.put_records("P", {p.id: after.to_json()})
        self.store.put_records("u", {p.ts: {"c": p.channel}})
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
            for uid, receipt in found.items():
                s = sessions[uid]
                p = self.problems_of([s])[identity(self.em, s)]
                self.repeated(s, p, receipt, now)
                adopted.add(uid)
        self.store.commit()
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
        """Reply "recovered" in each problem's thread and close it; (done, Slack's error)."""
        done = 0
        waiting = self.store.all_records("q")
        for pid, s in recoveries:
            if s.uid not in waiting:
                self.store.put_records("q", {s.uid: {"p": pid, "s": session_to_json(s)}})
                self.store.commit()
                waiting[s.uid] = {"p": pid, "s": session_to_json(s)}
        for uid, row in waiting.items():
            s = session_from_json(row["s"])
            p = self.store.records("P", [row["p"]]).get(row["p"])
            problem = Problem.from_json(p) if p else None
            if problem is None or not problem.is_open:
                self.store.drop_records("q", [uid])
                continue
            found = self._in_thread(problem.channel, problem.ts, {uid})
            try:
                receipt = found.get(uid) or self.send(
                    recovery_message(self.renderer, s, problem), now
                )
            except NotifyError as exc:
                self.store.commit()
                return done, str(exc)
            self.store.put_records("P", {problem.id: recovered(problem, s).to_json()})
            self.store.put_records("u", {problem.ts: {"c": problem.channel}})
            self.store.drop_records("q", [uid])
            self.store.commit()
            log.info("%s recovered (%s)", s.vm, receipt.ts)
            done += 1
        return done, ""

    # ------------------------------------------------------------------ updates
    def flush_updates(self) -> str:
        """Redraw every alert whose problems changed; Slack's error, if any (they stay
        marked and are redrawn on the next poll)."""
        marked = self.store.all_records("u")
        if not marked:
            return ""
        records = self.store.records("M", sorted(marked))
        for ts, mark in marked.items():
            record = records.get(ts)
            if record is None or record.get("kind") == "catchup":
                self.store.drop_records("u", [ts])  # a catch-up's thread tells the news
                continue
            try:
                self.notifier.update(mark["c"], ts, self._redrawn(record))
            except NotifyError as exc:
                self.store.commit()
                if exc.retryable:
                    return str(exc)
                log.warning("cannot update the alert %s (%s); leaving it as it is", ts, exc)
            self.store.drop_records("u", [ts])
        self.store.commit()
        return ""

    def _redrawn(self, record: dict[str, Any]) -> Message:
        sessions = [session_from_json(d) for d in record["s"]]
        problems = self.problems_of(sessions)
        status: dict[str, Markup] = {}
        closed = 0
        for s in sessions:
            p = problems.get(identity(self.em, s))
            if p is not None and p.first_uid == s.uid:
                status[s.uid] = problem_status(p)
                closed += not p.is_open
        message = alert_message(
            self.renderer,
            sessions,
            part=record.get("part", 1),
            part_count=record.get("part_count", 1),
            late_by=record.get("late_by"),
            status=status,
            recovered=closed == len(sessions),
        )
        if record.get("f") and message.metadata:
            message.metadata["event_payload"]["sessions"] += record["f"]
        return message
