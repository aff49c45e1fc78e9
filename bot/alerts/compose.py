"""Stage: render. Failures of one job session go into one alert (at most 40 VMs each, oldest
first); each alert is drawn from the templates, or bare when a template fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from markupsafe import Markup

from bot.alerts.message import alert_message, bare_alert, session_ref
from bot.alerts.problems import ended_at
from bot.config.render import MAX_SESSIONS_PER_MESSAGE, Message, Renderer
from bot.models import TaskSession

log = logging.getLogger(__name__)


def group_sessions(
    sessions: Iterable[TaskSession], channel: Callable[[TaskSession], str] | None = None
) -> list[list[TaskSession]]:
    """Sessions of one job session go together, oldest group first, at most 40 per chunk;
    with `channel` (its route), a group whose VMs go to different channels is split."""
    groups: dict[tuple[str, str], list[TaskSession]] = {}
    for s in sessions:
        where = channel(s) if channel is not None else ""
        groups.setdefault((where, s.job_session_uid or s.uid), []).append(s)
    ordered = sorted(groups.values(), key=lambda g: min(ended_at(s) for s in g))
    out = []
    for g in ordered:
        g.sort(key=ended_at)
        out += [
            g[i : i + MAX_SESSIONS_PER_MESSAGE] for i in range(0, len(g), MAX_SESSIONS_PER_MESSAGE)
        ]
    return out


def parts(
    chunks: list[list[TaskSession]], channel: Callable[[TaskSession], str] | None = None
) -> list[tuple[int, int]]:
    """(part, part count) of each chunk within its job session (and channel): "part 2 of 3"."""
    count: dict[tuple[str, str], int] = {}
    for chunk in chunks:
        key = (channel(chunk[0]) if channel else "", chunk[0].job_session_uid)
        count[key] = count.get(key, 0) + 1
    seen: dict[tuple[str, str], int] = {}
    out = []
    for chunk in chunks:
        key = (channel(chunk[0]) if channel else "", chunk[0].job_session_uid)
        seen[key] = seen.get(key, 0) + 1
        out.append((seen[key], count[key]))
    return out


def compose(
    renderer: Renderer,
    chunk: list[TaskSession],
    part: tuple[int, int],
    *,
    decision: str,
    late_by: float | None,
    status: dict[str, Markup],
    later: list[TaskSession],
    note: str = "",
    retry: bool = False,
) -> Message:
    """The alert for one chunk; `later` are failures folded into it, named in its metadata."""
    try:
        msg = alert_message(
            renderer,
            chunk,
            part=part[0],
            part_count=part[1],
            decision=decision,
            late_by=late_by,
            status=status,
            note=note,
            retry=retry,
        )
    except Exception:  # a template bug must not hold the alert back either
        log.exception("cannot render the alert for %s; sending it bare", chunk[0].uid)
        msg = bare_alert(chunk)
    if later and msg.metadata:  # the failures folded into it are named too
        msg.metadata["event_payload"]["sessions"] += [session_ref(f) for f in later]
    return msg
