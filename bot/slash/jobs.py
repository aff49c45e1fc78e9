"""`/veeam jobs [stale|disabled|running|failing] [em:NAME]` and `python -m bot jobs`: one line
per job from the job inventory the bot keeps (no request to EM): its last result, its last
success and how long ago, its next run, its expected interval, and a mark when it is stale,
disabled or running long. Worst first; the rows are pure functions of the records and `now`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.alerts.episodes import conditions, interval_of
from bot.alerts.inventory import next_run
from bot.config.render import MAX_BLOCKS, context, rough_duration, section, slack_escape
from bot.config.settings import Settings
from bot.errors import QueryError
from bot.models import utc_from_epoch
from bot.slash.answers import Reply, _pack, plain
from bot.store.schema import JOBS
from bot.store.store import Store

KINDS = ("stale", "disabled", "running", "failing")
USAGE = "usage: /veeam jobs [stale|disabled|running|failing] [em:NAME]"
MARK = {"running": "🐢", "stale": "⏳", "disabled": "⏸️", "failing": "🟥", "warning": "🟨"}
ORDER = ("running", "stale", "disabled", "failing", "warning", "")
SHOWN = 40  # rows in one answer; "and N more" after


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


def parse_jobs_words(words: list[str]) -> tuple[str, str | None]:
    """(kind or "", em name or None) from the words after `jobs`. Raises QueryError."""
    kind, em = "", None
    for word in words:
        low = word.lower()
        if low in KINDS and not kind:
            kind = low
        elif low.startswith("em:") and em is None and len(word) > 3:
            em = word[3:]
        else:
            raise QueryError(f"{word!r} is not understood here; {USAGE}")
    return kind, em


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


def jobs_reply(rows: list[JobRow], kind: str, now: datetime, *, inventory: bool) -> Reply:
    if not inventory:
        return plain('The job inventory is off ([jobs] refresh = "0m"); nothing to list.')
    chosen = wanted(rows, kind)
    what = f"{kind} jobs" if kind else "jobs"
    if not chosen:
        hint = "" if rows else " The inventory is read after the first poll; try again shortly."
        return plain(f"No {what} right now ({len(rows)} known).{hint}")
    text = [row_text(r, now) for r in chosen[:SHOWN]]
    more = len(chosen) - SHOWN
    if len(chosen) == 1:
        what = what.removesuffix("s")
    head = f"*{len(chosen)} {what}* of {len(rows)} known · worst first"
    blocks = [section(head), *_pack(text, MAX_BLOCKS - 3)]
    if more > 0:
        narrow = "narrow with /veeam jobs stale|disabled|running|failing"
        blocks.append(context(f"… and {more} more: {narrow}"))
    return Reply(f"{len(chosen)} {what}", blocks[:MAX_BLOCKS])


def inventory_rows(store: Store, settings: Settings, now: datetime, em: str | None) -> list[JobRow]:
    """The rows of every Enterprise Manager (or the one `em` names). Raises QueryError."""
    shown = {s.label: s.server for s in settings.servers}
    if em is not None:
        chosen = {k: v for k, v in shown.items() if v.lower() == em.lower()}
        if not chosen:
            known = ", ".join(v for v in shown.values() if v) or "none (the bot watches one)"
            raise QueryError(
                f"em:{em} is not an Enterprise Manager the bot watches; known: {known}"
            )
        shown = chosen
    return job_rows(store.all_records(JOBS), settings, now, shown)
