"""The job list: one row per job the inventory knows, with its last result, last success,
next run, expected interval and its marks (stale, disabled, running long, failing), worst
first. Pure: functions of the job records, the settings and `now`; `/veeam jobs`, the CLI
and the digest's "Not running" section show them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.alerts.episodes import conditions, interval_of
from bot.alerts.inventory import next_run
from bot.config.render import rough_duration, slack_escape
from bot.config.settings import Settings
from bot.models import utc_from_epoch

MARK = {"running": "🐢", "stale": "⏳", "disabled": "⏸️", "failing": "🟥", "warning": "🟨"}
ORDER = ("running", "stale", "disabled", "failing", "warning", "")


@dataclass(frozen=True)
class JobRow:
    em: str
    job: str
    server: str
    marks: tuple[str, ...]  # stale, disabled, running, failing, warning
    last_result: str
    last_end: datetime | None
    last_success: datetime | None
    next_run: datetime | None
    every: timedelta | None
    enabled: bool

    def as_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat().replace("+00:00", "Z") if d else None

        return {
            **({"em": self.em} if self.em else {}),
            "job": self.job,
            "server": self.server,
            "marks": list(self.marks),
            "last_result": self.last_result,
            "last_end": iso(self.last_end),
            "last_success": iso(self.last_success),
            "next_run": iso(self.next_run),
            "expected_every_s": int(self.every.total_seconds()) if self.every else None,
            "schedule_enabled": self.enabled,
        }


def job_rows(
    records: dict[str, dict[str, Any]], settings: Settings, now: datetime, shown_em: dict[str, str]
) -> list[JobRow]:
    """Every job the inventory knows, worst first. `shown_em`: label → the name shown."""
    out = []
    for key, rec in records.items():
        label = json.loads(key)[0]
        if label not in shown_em or rec.get("gone") is not None:
            continue
        found = conditions(label, rec, settings.stale, now, set())
        marks = {c.kind for c in found}
        if rec.get("listed") and rec.get("sched", True) and not rec.get("enabled", True):
            marks.add("disabled")  # the listing shows it however it came to be
        last = rec.get("last") or {}
        if last.get("result") == "Failed":
            marks.add("failing")
        elif last.get("result") == "Warning":
            marks.add("warning")
        _, every = interval_of(rec, settings.stale)
        out.append(
            JobRow(
                em=shown_em[label],
                job=str(rec.get("name", "")),
                server=str(rec.get("server", "")),
                marks=tuple(k for k in ORDER if k in marks),
                last_result=str(last.get("result", "")),
                last_end=utc_from_epoch(last["end"]) if last.get("end") else None,
                last_success=utc_from_epoch(rec["last_ok"]) if rec.get("last_ok") else None,
                next_run=next_run(rec),
                every=every,
                enabled=bool(rec.get("enabled", True)),
            )
        )
    out.sort(key=lambda r: (ORDER.index(r.marks[0]) if r.marks else len(ORDER), r.job.lower()))
    return out


def wanted(rows: list[JobRow], kind: str) -> list[JobRow]:
    if not kind:
        return rows
    if kind == "failing":
        return [r for r in rows if "failing" in r.marks or "warning" in r.marks]
    return [r for r in rows if kind in r.marks]


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    return f"{rough_duration((now - then).total_seconds())} ago"


def row_text(r: JobRow, now: datetime) -> str:
    """One job as mrkdwn (names escaped)."""
    marks = "".join(MARK[m] for m in r.marks) or "🟩"
    em = f" · {slack_escape(r.em)}" if r.em else ""
    head = f"{marks} *{slack_escape(r.job)}* ({slack_escape(r.server)}{em})"
    return " · ".join([head, *_facts(r, now)])


def plain_row(r: JobRow, now: datetime) -> str:
    """One job as a line of plain text (the CLI)."""
    marks = ",".join(r.marks) or "ok"
    em = f" · {r.em}" if r.em else ""
    return " · ".join([f"[{marks}] {r.job} ({r.server}{em})", *_facts(r, now)])


def _facts(r: JobRow, now: datetime) -> list[str]:
    words: list[str] = []
    last = f"last {r.last_result} {_ago(r.last_end, now)}" if r.last_result else "no run seen"
    words.append(last)
    words.append(f"last success {_ago(r.last_success, now)}")
    if not r.enabled:
        words.append("schedule disabled")
    elif r.next_run is not None:
        words.append(f"next run {r.next_run:%Y-%m-%d %H:%M} UTC")
    if r.every is not None:
        words.append(f"expected every {rough_duration(r.every.total_seconds())}")
    return words
