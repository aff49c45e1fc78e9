"""The daily digest: a streamed summary of a window (pure), its Block Kit, and when it is due.

Sessions belong to a window by their end time; only completed sessions count. Memory is per
VM and per job, never per session, so a window of any size streams through.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from bot.alerts.joblist import JobRow, row_text
from bot.alerts.mutes import Mute
from bot.alerts.problems import Problem
from bot.config.render import (
    EMOJI,
    MAX_BLOCKS,
    MAX_SECTION,
    TEXT_BUDGET,
    Message,
    Renderer,
    context,
    fit,
    header,
    human_duration,
    human_size,
    mention,
    section,
    slack_date,
    slack_escape,
    texts_of,
)
from bot.digest.strip import DayStrip, strip_text
from bot.models import TaskSession, local_instant
from bot.veeam import filters as F

DIGEST_EVENT = "veeam_digest"
KEEP_FAILURES = 400  # most recent failures kept for display; counts stay exact
ROWS_PER_JOB = 8
REASON_CHARS = 160


@dataclass
class VmState:
    last_end: datetime
    last_result: str
    last_success: datetime | None = None


@dataclass
class Summary:
    start: datetime
    end: datetime
    counts: dict[str, int] = field(
        default_factory=lambda: {"Success": 0, "Warning": 0, "Failed": 0}
    )
    total_size: int = 0
    job_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    recent: list[tuple[float, int, TaskSession]] = field(default_factory=list)  # min-heap
    vms: dict[tuple[str, str], VmState] = field(default_factory=dict)
    seen: int = 0
    # runs (job session UIDs) with a failed or warning VM: their own result is not counted
    told_runs: set[str] = field(default_factory=set)
    job_level: int = 0  # failures of job sessions no VM told (counted with the others)

    def add_run(self, s: TaskSession) -> None:
        """Fold in a job session's own failure (`job_level`), unless its VMs told it."""
        if s.job_session_uid in self.told_runs or s.result not in ("Failed", "Warning"):
            return
        if s.state == "Completed" and s.ended is not None and self.start <= s.ended < self.end:
            self.job_level += 1
            self.add(s)

    def add(self, s: TaskSession) -> None:
        """Fold one completed session in (others are ignored)."""
        if s.state != "Completed" or s.ended is None or not self.start <= s.ended < self.end:
            return
        if s.result in ("Failed", "Warning") and not s.job_level:
            self.told_runs.add(s.job_session_uid)
        if s.result in self.counts:
            self.counts[s.result] += 1
        self.total_size += s.total_size
        self.seen += 1
        key = (s.job, s.vm)
        if s.job_level:  # no VM: counted, listed under its job, not a VM still failing
            key = ("", "")
        vm = self.vms.get(key)
        if vm is None:
            vm = self.vms[key] = VmState(s.ended, s.result)
        elif s.ended >= vm.last_end:
            vm.last_end, vm.last_result = s.ended, s.result
        if s.result == "Success" and (vm.last_success is None or s.ended > vm.last_success):
            vm.last_success = s.ended
        if s.result in ("Failed", "Warning"):
            per_job = self.job_counts.setdefault(s.job, {"Failed": 0, "Warning": 0})
            per_job[s.result] += 1
            item = (s.ended.timestamp(), self.seen, s)
            if len(self.recent) < KEEP_FAILURES:
                heapq.heappush(self.recent, item)
            elif item > self.recent[0]:
                heapq.heapreplace(self.recent, item)

    def still_failing(self) -> list[tuple[tuple[str, str], VmState]]:
        rows = [(k, v) for k, v in self.vms.items() if v.last_result == "Failed" and k[1]]
        return sorted(rows, key=lambda kv: kv[1].last_end, reverse=True)


def window_filter(start: datetime, end: datetime) -> str:
    return F.all_of(
        [
            F.cmp("State", "==", "Completed"),
            F.cmp("EndTime", ">=", start),
            F.cmp("EndTime", "<", end),
        ]
    )


def change(now: int, before: int | None) -> str:
    if before is None or now == before:
        return "(=)" if before is not None else ""
    return f"(↑{now - before})" if now > before else f"(↓{before - now})"


def _local_label(start: datetime, end: datetime, zone: str) -> str:
    tz = ZoneInfo(zone)
    a, b = start.astimezone(tz), end.astimezone(tz)
    return f"{a:%d %b %H:%M} → {b:%d %b %H:%M} {b:%Z}"


@dataclass
class ProblemDigest:
    """The problems side of the digest: what is open, what recovered, what is muted."""

    open: list[Problem] = field(default_factory=list)
    recovered: list[Problem] = field(default_factory=list)  # in the window
    mutes: list[Mute] = field(default_factory=list)
    named: bool = False  # jobs named with their Enterprise Manager (several watched)
    # (server, unreachable since, error) for each Enterprise Manager the bot cannot read
    down: list[tuple[str, datetime | None, str]] = field(default_factory=list)


def problem_digest(
    problems: list[Problem],
    mutes: list[Mute],
    start: datetime,
    end: datetime,
    *,
    named: bool = False,
    down: list[tuple[str, datetime | None, str]] | None = None,
) -> ProblemDigest:
    """Open problems (longest open first), those recovered in [start, end), active mutes.
    `named`: jobs are shown with their Enterprise Manager ("em1 · Job")."""
    lo, hi = start.timestamp(), end.timestamp()
    return ProblemDigest(
        named=named,
        down=down or [],
        open=sorted((p for p in problems if p.is_open), key=lambda p: p.opened),
        recovered=sorted(
            (p for p in problems if not p.is_open and lo <= (p.recovered_at or 0) < hi),
            key=lambda p: p.recovered_at or 0,
        ),
        mutes=mutes,
    )


def _vm_job(p: Problem, named: bool = False) -> tuple[str, str]:
    """(vm, job) of a problem, from its identity; the job as "em1 · Job" when `named`."""
    try:
        em, _type, job, vm = json.loads(p.id)
    except (ValueError, TypeError):
        return p.id, ""
    shown = f"{em} · {job}" if named else str(job)
    return (str(vm) or "the job itself"), shown  # no VM: a job session's own failure


def _problems_view(
    d: ProblemDigest, end: datetime, failing: list[tuple[str, str]] | None = None, rows: int = 15
) -> dict[str, Any]:
    """`failing`: (job, VM) whose latest session in the window failed (the counts line's
    "still failing"); those without an open problem are counted, so that "open problems"
    never reads as a contradiction of that line."""
    alerted = {(job, vm) for vm, job in (_vm_job(p) for p in d.open)}

    def row(p: Problem) -> dict[str, Any]:
        vm, job = _vm_job(p, d.named)
        return {"vm": vm, "job": job, "count": p.count}

    return {
        "down": [
            {"name": name, "since": slack_date(since) if since else "", "error": error}
            for name, since, error in d.down
        ],
        "open_count": len(d.open),
        "still_failing": len(failing or []),
        "unalerted": sum(key not in alerted for key in failing or []),
        "open": [
            {**row(p), "age": human_duration(end.timestamp() - p.opened)} for p in d.open[:rows]
        ],
        "open_more": max(0, len(d.open) - rows),
        "recovered_count": len(d.recovered),
        "recovered": [
            {**row(p), "took": human_duration((p.recovered_at or p.opened) - p.opened)}
            for p in d.recovered[:10]
        ],
        "mutes": [
            {
                "kind": m.kind,
                "name": m.name,
                "server": m.server,
                "until": slack_date(datetime.fromtimestamp(m.until, UTC)),
                "by": mention(m.by, "?"),
                "reason": m.reason,
            }
            for m in d.mutes[:15]
        ],
    }


def digest_message(
    r: Renderer,
    summary: Summary,
    previous: dict[str, int] | None,
    zone: str,
    problems: ProblemDigest | None = None,
    *,
    strip: DayStrip | None = None,
    stopped: list[JobRow] | None = None,
) -> Message:
    """The digest. `stopped`: the jobs that stopped running (stale, disabled, running long),
    shown in a "Not running" section."""
    c = summary.counts
    failing = summary.still_failing()
    counts_view = {
        "failed": c["Failed"],
        "warning": c["Warning"],
        "success": c["Success"],
        "failed_change": change(c["Failed"], previous["Failed"] if previous else None),
        "warning_change": change(c["Warning"], previous["Warning"] if previous else None),
        "success_change": change(c["Success"], previous["Success"] if previous else None),
        "total": summary.seen,
        "total_size": human_size(summary.total_size),
        "still_failing_count": len(failing),
        "job_level": summary.job_level,
    }
    blocks: list[dict[str, Any]] = [
        header(
            r.text(
                "digest_header.txt.j2",
                {"window_label": _local_label(summary.start, summary.end, zone)},
            )
        ),
        section(r.text("digest_counts.md.j2", counts_view)),
    ]
    if problems is not None:
        blocks.append(
            section(
                r.text(
                    "digest_problems.md.j2",
                    _problems_view(problems, summary.end, [key for key, _ in failing]),
                )
            )
        )
    tail = [
        context(
            r.text(
                "digest_context.md.j2",
                {"start": slack_date(summary.start), "end": slack_date(summary.end)},
            )
        )
    ]
    if strip is not None and strip.jobs:
        tail.insert(0, section(strip_text(r, strip)))
    if stopped:
        tail.insert(0, section(_not_running(r, stopped, summary.end)))
    if failing:
        tail.insert(0, section(_still_failing(r, failing)))
    text = (
        f"Veeam digest: {c['Failed']} failed, {c['Warning']} warning, {c['Success']} "
        f"succeeded, {len(failing)} VM(s) still failing"
    )
    used = len(text) + sum(len(t) for t in texts_of([*blocks, *tail]))
    blocks += _job_sections(r, summary, MAX_BLOCKS - len(blocks) - len(tail), TEXT_BUDGET - used)
    blocks += tail
    return Message(
        text=text,
        blocks=blocks,
        metadata={
            "event_type": DIGEST_EVENT,
            "event_payload": {
                "success": c["Success"],
                "warning": c["Warning"],
                "failed": c["Failed"],
                "window_start": summary.start.isoformat().replace("+00:00", "Z"),
                "window_end": summary.end.isoformat().replace("+00:00", "Z"),
            },
        },
    )


def _job_sections(r: Renderer, summary: Summary, room: int, chars: int) -> list[dict[str, Any]]:
    """A section per job, newest failure first, within `room` blocks and `chars` characters
    (Slack refuses a message of much more than 13,000); "and N more jobs" ends a cut list."""
    by_job: dict[str, list[TaskSession]] = {}
    for _, _, s in sorted(summary.recent, reverse=True):
        by_job.setdefault(s.job, []).append(s)
    jobs = sorted(
        summary.job_counts,
        key=lambda j: -max((x.ended.timestamp() for x in by_job.get(j, []) if x.ended), default=0),
    )
    out: list[dict[str, Any]] = []
    reserve = 80  # for the "and N more jobs" line
    for i, job in enumerate(jobs):
        block = _job_section(r, summary, job, by_job)
        last = i == len(jobs) - 1
        size = len(block["text"]["text"])
        if (len(out) == room - 1 and not last) or size > chars - (0 if last else reserve):
            rest = len(jobs) - i
            out.append(
                section(
                    f"_and {rest} more job{'s' if rest != 1 else ''} with failures or warnings_"
                )
            )
            break
        out.append(block)
        chars -= size
    return out


def _job_section(
    r: Renderer, summary: Summary, job: str, by_job: dict[str, list[TaskSession]]
) -> dict[str, Any]:
    counts = summary.job_counts[job]
    shown = by_job.get(job, [])[:ROWS_PER_JOB]
    rows = [
        {
            "emoji": Markup(EMOJI[s.result]),
            "vm": s.vm,
            "result": s.result,
            "ended": slack_date(s.ended),
            "reason": fit(s.reason.replace("\n", " ") or "(no reason given)", REASON_CHARS),
        }
        for s in shown
    ]
    total = counts["Failed"] + counts["Warning"]
    parts = [f"{counts['Failed']} failed"] if counts["Failed"] else []
    parts += [f"{counts['Warning']} warning(s)"] if counts["Warning"] else []
    view = {"job": job, "summary": ", ".join(parts), "rows": rows, "more": total - len(rows)}
    return section(r.text("digest_job.md.j2", view))


NOT_RUNNING_ROWS = 15


def _not_running(r: Renderer, stopped: list[JobRow], now: datetime) -> str:
    """Stale, disabled and long-running jobs, worst first, within one section."""
    rows = [Markup(row_text(j, now)) for j in stopped[:NOT_RUNNING_ROWS]]  # escaped in it
    view = {"rows": rows, "count": len(stopped), "more": max(0, len(stopped) - len(rows))}
    return r.fitted("digest_not_running.md.j2", view, "", MAX_SECTION)


def _still_failing(r: Renderer, failing: list[tuple[tuple[str, str], VmState]]) -> str:
    rows = []
    for (job, vm), st in failing[:25]:
        since = (
            f"last success {human_duration((st.last_end - st.last_success).total_seconds())} "
            "earlier"
            if st.last_success
            else "no success in the window"
        )
        rows.append(
            {"vm": vm, "job": job, "ended": slack_date(st.last_end), "since_success": since}
        )
    text = r.text("digest_still_failing.md.j2", {"rows": rows, "more": len(failing) - len(rows)})
    while len(text) > MAX_SECTION and rows:
        rows.pop()
        text = r.text(
            "digest_still_failing.md.j2", {"rows": rows, "more": len(failing) - len(rows)}
        )
    return text


def unavailable_message(r: Renderer, reason: str, until: datetime) -> Message:
    text = r.text("digest_unavailable.md.j2", {"reason": reason, "until": slack_date(until)})
    return Message(
        text=slack_escape(f"Veeam digest unavailable: {reason}"),
        blocks=[section(text)],
    )


# ----------------------------------------------------------------- when it is due
def scheduled_for(now: datetime, at: time, zone: str) -> tuple[date, datetime]:
    """The latest scheduled digest at or before `now`: (its local day, its UTC instant)."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    day = local.date()
    when = datetime.combine(day, at, tzinfo=tz)
    if when > local:
        day -= timedelta(days=1)
        when = datetime.combine(day, at, tzinfo=tz)
    return day, when.astimezone(now.tzinfo)


def digest_window(day: date, at: time, zone: str) -> tuple[datetime, datetime]:
    """The scheduled digest of `day` covers the previous scheduled time to this one: 24 h,
    or 23 h and 25 h on the days the clocks change; the same window however late it is
    posted."""
    return local_instant(day - timedelta(days=1), at, zone), local_instant(day, at, zone)


def due(
    now: datetime, at: time, zone: str, grace: timedelta, last_posted: str | None
) -> date | None:
    """The day whose digest should be posted now, or None (already posted, or too late)."""
    day, when = scheduled_for(now, at, zone)
    if last_posted == day.isoformat() or now - when > grace:
        return None
    return day
