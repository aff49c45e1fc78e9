"""The messages of jobs that stop running: one alert per episode (stale, schedule disabled,
running too long) and the reply that closes it. Drawn from the templates `job_alert*.j2`
and `job_closed.md.j2`; everything from EM is escaped by the renderer."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.alerts.stale import Condition
from bot.config.render import (
    Message,
    Renderer,
    context,
    header,
    rough_duration,
    section,
    slack_date,
    slack_escape,
)
from bot.models import iso_z
from bot.slack.web import RECOVERY_EVENT

EVENTS = {
    "stale": "veeam_stale_job",
    "disabled": "veeam_job_disabled",
    "running": "veeam_long_running",
}
COLOUR = {"stale": "#ECB22E", "disabled": "#888888", "running": "#ECB22E"}
SUMMARY_EVENT = "veeam_jobs_summary"
SUMMARY_ROWS = 15
TITLE = {"stale": "⏳ not running", "disabled": "⏸️ schedule disabled", "running": "🐢 running long"}


def _span(value: timedelta | None) -> str:
    return rough_duration(value.total_seconds()) if value is not None else ""


def job_alert(r: Renderer, c: Condition, now: datetime) -> Message:
    """The alert that opens an episode; its metadata names the episode, so that a crash
    between marking and posting is reconciled from the channel."""
    kind, job, server, detail = c.kind, c.job, c.server, c.detail
    started: datetime | None = detail.get("started")
    view = {
        "kind": kind,
        "job": job,
        "server": server,
        "em": c.em,
        "last_success": slack_date(detail.get("last_success")),
        "expected_every": _span(detail.get("expected_every")),
        "next_run": slack_date(detail.get("next_run")),
        "next_run_known": detail.get("next_run") is not None,
        "last_run": slack_date(detail.get("last_run")),
        "started": slack_date(started),
        "running_for": _span(now - started) if started else "",
        "usual": _span(detail.get("usual")),
    }
    title = r.text("job_alert_header.txt.j2", view)
    body = r.text("job_alert.md.j2", view)
    payload: dict[str, Any] = {"server": server, "job": job, "episode": c.key}
    if kind == "stale":
        every = detail.get("expected_every")
        payload["last_success"] = iso_z(detail.get("last_success"))
        payload["expected_every"] = int(every.total_seconds()) if every else None
    elif kind == "running":
        payload["job_session_uid"] = detail.get("job_session_uid", "")
        payload["started"] = iso_z(started)
    how = "`/veeam jobs` lists every job"
    if '"' not in job:
        how += f'; `/veeam mute job:"{slack_escape(job)}" for:1d` silences this one'
    return Message(
        text=slack_escape(f"{title}: {job} on {server}"),
        blocks=[header(title)],
        attachments=[
            {
                "color": COLOUR[kind],
                "fallback": slack_escape(f"{title} on {server}"),
                "blocks": [section(body), context(how + ".")],
            }
        ],
        metadata={"event_type": EVENTS[kind], "event_payload": payload},
        sessions=[],
    )


def jobs_summary(r: Renderer, opening: list[Condition], batch: str) -> Message:
    """One message for many jobs that stopped running at once (a first start): how many of
    each kind, the first few, and where to see them all. Metadata `veeam_jobs_summary`
    with its id, so that a crash between marking and posting finds it again."""
    counts = {k: sum(1 for c in opening if c.kind == k) for k in EVENTS}
    view = {
        "count": len(opening),
        "counts": [{"title": TITLE[k], "n": n} for k, n in counts.items() if n],
        "rows": [
            {"title": TITLE[c.kind], "job": c.job, "server": c.server}
            for c in opening[:SUMMARY_ROWS]
        ],
        "more": max(0, len(opening) - SUMMARY_ROWS),
    }
    text = r.text("jobs_summary.md.j2", view)
    title = f"{len(opening)} jobs not running as scheduled"
    return Message(
        text=slack_escape(title),
        blocks=[
            header(title),
            section(text),
            context(
                "`/veeam jobs stale`, `disabled` and `running` list them; each "
                "one's end is replied in this thread."
            ),
        ],
        metadata={
            "event_type": SUMMARY_EVENT,
            "event_payload": {"id": batch, **counts},
        },
        sessions=[],
    )


def job_closed(r: Renderer, episode: str, job: str, words: str, thread_ts: str) -> Message:
    """The reply that closes an episode in its alert's thread."""
    text = r.text("job_closed.md.j2", {"job": job, "words": words})
    return Message(
        text=text,
        blocks=[section(text)],
        metadata={
            "event_type": RECOVERY_EVENT,
            "event_payload": {"problem": episode, "uid": f"close:{episode}", "vm": ""},
        },
        sessions=[],
        thread_ts=thread_ts,
    )
