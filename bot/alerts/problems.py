"""Problems: what an alert is about, beyond one session.

A problem is (Enterprise Manager, session type, job, VM). It opens with its first announced
Failed or Warning session and stays open until a later completed Success of the same
identity. Veeam retries a failed VM (each retry is a new task session), so a problem, not a
session, is what deserves one message: repeats go to its thread, a recovery closes it.

Everything here is pure: functions of sessions, problems and `now`, tested with tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bot.models import TaskSession

SEVERITY = {"Warning": 1, "Failed": 2}


def identity(em: str, s: TaskSession) -> str:
    """The problem a session belongs to, as a stable key. `em` names the Enterprise Manager
    of a bot watching one (its host name); with several, the session's server name does."""
    return json.dumps([s.em or em, s.type, s.job, s.vm], ensure_ascii=False)


def identity_fields(pid: str) -> tuple[str, str, str, str]:
    """(em, session type, job, VM) of a problem's identity."""
    try:
        em, type_, job, vm = json.loads(pid)
        return str(em), str(type_), str(job), str(vm)
    except (ValueError, TypeError):
        return "", "", pid, ""


@dataclass(frozen=True)
class Problem:
    id: str
    state: str  # "open" or "recovered"
    first_uid: str
    opened: float  # end of the first failure, epoch seconds
    last_uid: str
    last_end: float
    last_result: str
    worst: str
    count: int  # failures announced: the first, then each repeat
    channel: str
    ts: str  # the top-level message that announced it (its thread takes the rest)
    recovered_at: float | None = None
    recovery_uid: str = ""
    last_reason: str = ""  # the newest failure's Reason (records before it have none)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Problem:
        return Problem(**d)

    @property
    def is_open(self) -> bool:
        return self.state == "open"


def opened_by(pid: str, s: TaskSession, channel: str, ts: str) -> Problem:
    end = ended_at(s)
    return Problem(pid, "open", s.uid, end, s.uid, end, s.result, s.result, 1, channel, ts)


def repeated(p: Problem, s: TaskSession) -> Problem:
    end = s.ended.timestamp() if s.ended else p.last_end
    worst = s.result if SEVERITY.get(s.result, 0) > SEVERITY.get(p.worst, 0) else p.worst
    return replace(
        p, last_uid=s.uid, last_end=max(end, p.last_end), last_result=s.result, worst=worst,
        count=p.count + 1, last_reason=s.reason,
    )  # fmt: skip


def recovered(p: Problem, s: TaskSession) -> Problem:
    end = s.ended.timestamp() if s.ended else p.last_end
    return replace(p, state="recovered", recovered_at=end, recovery_uid=s.uid)


def escalates(p: Problem, s: TaskSession) -> bool:
    """A repeat that is worse than anything before it (Warning → Failed)."""
    return SEVERITY.get(s.result, 0) > SEVERITY.get(p.worst, 0)


@dataclass
class Plan:
    """What a poll does with what it fetched, in this order: new alerts, repeats in the
    threads of open problems, recoveries."""

    firsts: list[TaskSession]
    repeats: list[TaskSession]
    recoveries: list[tuple[str, TaskSession]]  # (problem id, the Success that closes it)
    # later failures of a problem this poll opens: counted into its alert, not posted
    folded: list[TaskSession] = field(default_factory=list)


def ended_at(s: TaskSession) -> float:
    """When a session ended, epoch seconds (0 for one still running)."""
    return s.ended.timestamp() if s.ended else 0.0


def plan(
    em: str,
    failures: Iterable[TaskSession],
    successes: Iterable[TaskSession],
    problems: dict[str, Problem],
) -> Plan:
    """Decide, per identity and in the order the sessions ended:
    - a failure with no open problem is a new alert ("first"); a later one of the same poll
      is folded into that alert (after an outage a VM may have failed a dozen times: one
      alert says so), and one of an open problem is a repeat in its thread;
    - a Success that ends the identity's events, after its last failure, recovers an open
      problem (or the one this poll opens). A Success of an identity with no open problem
      means nothing here."""
    events: dict[str, list[tuple[float, int, TaskSession]]] = {}
    for s in failures:
        events.setdefault(identity(em, s), []).append((ended_at(s), 1, s))
    for s in successes:
        events.setdefault(identity(em, s), []).append((ended_at(s), 0, s))
    out = Plan([], [], [])
    for pid, items in events.items():
        items.sort(key=lambda e: (e[0], e[1]))
        existing = problems.get(pid)
        was_open = existing is not None and existing.is_open
        open_ = was_open
        last_failure = existing.last_end if was_open and existing else None
        for end, is_failure, s in items:
            if not is_failure:
                continue
            (out.repeats if was_open else out.folded if open_ else out.firsts).append(s)
            open_, last_failure = True, end
        end, is_failure, last = items[-1]
        if open_ and not is_failure and last_failure is not None and end >= last_failure:
            out.recoveries.append((pid, last))
    return out


@dataclass
class Held:
    """Veeam's own "suppress notifications until the last retry", for Slack."""

    announce: list[TaskSession]  # no retry fixed them within the hold
    wait: list[TaskSession]  # still within the hold
    fixed: list[TaskSession]  # a retry succeeded within the hold: never announced
    recoveries: list[tuple[str, TaskSession]]  # what is left to announce as recovered
    folded: list[TaskSession] = field(default_factory=list)  # into alerts announced now


def hold(
    em: str, todo: Plan, now: datetime, hold_for: timedelta | Callable[[TaskSession], timedelta]
) -> Held:
    """Split the new alerts of a plan by the retry hold: a failure is announced only if no
    Success of its identity came within `hold_for` of it (one value, or each failure's own:
    its job's retry window)."""
    if not callable(hold_for) and hold_for <= timedelta(0):
        return Held(list(todo.firsts), [], [], list(todo.recoveries), list(todo.folded))
    how_long = hold_for if callable(hold_for) else (lambda _s: hold_for)
    closing = {pid for pid, _ in todo.recoveries}
    out = Held([], [], [], [])
    verdict: dict[str, list[TaskSession]] = {}
    for s in todo.firsts:
        pid = identity(em, s)
        if pid in closing:
            verdict[pid] = out.fixed
        elif s.ended is not None and now - s.ended < how_long(s):
            verdict[pid] = out.wait
        else:
            verdict[pid] = out.announce
        verdict[pid].append(s)
    for s in todo.folded:  # later failures go wherever their problem's first went
        went = verdict.get(identity(em, s), out.wait)
        (out.folded if went is out.announce else went).append(s)
    out.recoveries = [(pid, s) for pid, s in todo.recoveries if verdict.get(pid) is not out.fixed]
    return out
