"""Alert messages: one per job session (or part of one), fitted to Slack's limits.

Jinja renders the strings (bot.render.Renderer); this module builds the Block Kit of an
alert, its smaller forms for when Slack refuses the content, and its metadata.
"""

from __future__ import annotations

from typing import Any

from bot.models import TaskSession
from bot.render import (
    ALERT_EVENT,
    COLOUR,
    EMOJI,
    EMOJI_MARKUP,
    MAX_SECTION,
    MAX_SESSIONS_PER_MESSAGE,
    NO_EMOJI,
    REASON_EXCERPT,
    TEXT_BUDGET,
    Message,
    Renderer,
    context,
    cut_markup,
    cut_plain,
    header,
    rough_duration,
    section,
    session_view,
    slack_date,
    slack_escape,
    texts_of,
)


def excerpt(reason: str, limit: int = REASON_EXCERPT) -> tuple[str, bool]:
    """A Reason's first non-empty line, at most `limit` characters, and whether anything was
    left out (the whole Reason is a `/veeam session` away)."""
    text = reason.strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(first) > limit:
        return first[: limit - 1].rstrip() + "…", True
    return first, first != text


def summary_of(sessions: list[TaskSession]) -> str:
    failed = sum(1 for s in sessions if s.result == "Failed")
    warned = sum(1 for s in sessions if s.result == "Warning")
    other = len(sessions) - failed - warned
    parts = [f"{failed} failed"] if failed else []
    parts += [f"{warned} warning" + ("s" if warned != 1 else "")] if warned else []
    parts += [f"{other} other"] if other else []
    return ", ".join(parts)


def worst(sessions: list[TaskSession]) -> str:
    results = {s.result for s in sessions}
    return next((r for r in ("Failed", "Warning") if r in results), "Success")


def alert_message(
    r: Renderer,
    sessions: list[TaskSession],
    *,
    part: int = 1,
    part_count: int = 1,
    decision: str = "first",
    late_by: float | None = None,
) -> Message:
    """One alert message for sessions of one job session (at most 40)."""
    assert 0 < len(sessions) <= MAX_SESSIONS_PER_MESSAGE
    first, result = sessions[0], worst(sessions)
    first_view = session_view(first)
    view = {
        **first_view,
        "count": len(sessions),
        "summary": summary_of(sessions),
        "part": part,
        "part_count": part_count,
        "decision": decision,
        # "3 h" when EM listed the session that long after it ended (late); "" otherwise
        "late_by": rough_duration(late_by) if late_by is not None else "",
        "emoji": EMOJI_MARKUP.get(result, NO_EMOJI),
        "ended": slack_date(max((s.ended for s in sessions if s.ended), default=None)),
        "vms": ", ".join(s.vm for s in sessions[:10]) + (" …" if len(sessions) > 10 else ""),
    }
    if len(sessions) == 1:
        view["result"] = first.result
    head = [header(r.text("alert_header.txt.j2", view))]
    details = section(r.text("alert_details.md.j2", view))
    foot = context(r.text("alert_context.md.j2", view))
    fallback = r.fitted("alert_fallback.md.j2", view, view["reason"], 1000)
    fixed = sum(len(t) for t in texts_of([*head, details, foot])) + 2 * len(fallback)
    room = TEXT_BUDGET - fixed
    if len(sessions) == 1:
        reason = r.fitted("alert_reason.md.j2", view, view["reason"], min(MAX_SECTION, room))
        vms = [section(reason)]
    else:
        vms = _vm_sections(r, sessions, first_view, room)
    return Message(
        text=fallback,
        blocks=head,
        attachments=[
            {
                "color": COLOUR.get(result, "#888888"),
                "fallback": fallback,
                "blocks": [details, *vms, foot],
            }
        ],
        metadata=_metadata(sessions),
        sessions=list(sessions),
    )


def _vm_sections(
    r: Renderer, sessions: list[TaskSession], first_view: dict[str, Any], room: int
) -> list[dict[str, Any]]:
    """One section per VM with an excerpt of its Reason, all within `room` characters."""
    share = min(MAX_SECTION, max(0, room) // len(sessions))
    out = []
    for s in sessions:
        sv = dict(first_view) if s is sessions[0] else session_view(s)
        short, cut = excerpt(s.reason)
        sv["more"] = f"/veeam session {s.uid.rsplit(':', 1)[-1]}" if cut else ""
        out.append(section(r.fitted("alert_vm.md.j2", sv, short or sv["reason"], share)))
    return out


def _metadata(sessions: list[TaskSession]) -> dict[str, Any]:
    return {
        "event_type": ALERT_EVENT,
        "event_payload": {
            "job_session_uid": sessions[0].job_session_uid,
            "sessions": [{"uid": s.uid, "vm": s.vm, "result": s.result} for s in sessions],
        },
    }


def minimal_message(message: Message) -> Message:
    """The same alert in its smallest form (header and VM list, no Reasons), for when Slack
    refuses the content of the full one. Same metadata, so reconciliation still finds it."""
    sessions = message.sessions
    rows = [
        f"{EMOJI.get(s.result, ':grey_question:')} *{cut_plain(slack_escape(s.vm), 200)}* · "
        f"{s.result}"
        for s in sessions
    ]
    text = "\n".join(rows)
    while len(text) > TEXT_BUDGET // 2 and rows:
        rows = rows[: len(rows) // 2]
        text = "\n".join(rows) + f"\n… and {len(sessions) - len(rows)} more"
    blocks = [*message.blocks[:1], *(section(part) for part in _chunks(text, MAX_SECTION))]
    job = sessions[0].job
    how = (
        f' `/veeam failed warning job:"{slack_escape(job)}"` lists them.' if '"' not in job else ""
    )
    blocks.append(context(f"Reasons left out to fit Slack's limits.{how}"))
    return Message(
        text=cut_markup(message.text, 300),
        blocks=blocks,
        metadata=message.metadata,
        sessions=sessions,
    )


def bare_alert(sessions: list[TaskSession]) -> Message:
    """An alert built without any template, for when even a packaged template fails."""
    first = sessions[0]
    title = f"{worst(sessions)}: {first.job} ({summary_of(sessions)})"
    bare = Message(
        text=slack_escape(f"{title} on {first.server}"),
        blocks=[header(title)],
        metadata=_metadata(sessions),
        sessions=list(sessions),
    )
    return minimal_message(bare)


def plain_message(message: Message) -> Message:
    """The last resort when Slack refuses even the minimal form: the fallback text alone."""
    return Message(
        text=cut_markup(message.text, 1000),
        blocks=[],
        metadata=message.metadata,
        sessions=message.sessions,
    )


def _chunks(text: str, size: int) -> list[str]:
    """Lines of `text` packed into pieces of at most `size` characters."""
    out, current = [], ""
    for line in text.splitlines():
        joined = f"{current}\n{line}" if current else line
        if len(joined) > size and current:
            out.append(current)
            joined = line
        current = joined
    return [*out, current] if current else out
