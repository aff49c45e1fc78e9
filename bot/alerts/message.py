"""Alert messages: one per job session (or part of one), fitted to Slack's limits.

Jinja renders the strings (bot.render.Renderer); this module builds the Block Kit of an
alert, its smaller forms for when Slack refuses the content, and its metadata.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from markupsafe import Markup

from bot.alerts.problems import Problem, ended_at
from bot.config.render import (
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
    human_duration,
    mention,
    rough_duration,
    section,
    session_view,
    slack_date,
    slack_escape,
    texts_of,
)
from bot.models import TaskSession, utc_from_epoch
from bot.slack.web import RECOVERY_EVENT


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
    status: dict[str, Markup] | None = None,
    recovered: bool = False,
    acked: tuple[str, float] | None = None,
    note: str = "",
    retry: bool = False,
) -> Message:
    """One alert message for sessions of one job session (at most 40). `status` (UID →
    a line of mrkdwn) tells what became of each VM's problem since, and `recovered` that
    all of them recovered: the alert as `chat.update` shows it later. `note` is the job
    session's own FailureMessage ("Job: …"), when EM gave one."""
    assert 0 < len(sessions) <= MAX_SESSIONS_PER_MESSAGE
    status = status or {}
    first, result = sessions[0], worst(sessions)
    first_view = {**session_view(first), "status": status.get(first.uid, "")}
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
        "recovered": recovered,
        "note": note.strip(),
    }
    if len(sessions) == 1:
        view["result"] = first.result
    head = [header(r.text("alert_header.txt.j2", view))]
    details = section(r.text("alert_details.md.j2", view))
    foot = context(r.text("alert_context.md.j2", view))
    fallback = r.fitted("alert_fallback.md.j2", view, view["reason"], 1000)
    buttons = _buttons(sessions, acked, retry=retry and result == "Failed")
    fixed = sum(len(t) for t in texts_of([*head, *buttons, details, foot])) + 2 * len(fallback)
    room = TEXT_BUDGET - fixed
    if len(sessions) == 1:
        reason = r.fitted("alert_reason.md.j2", view, view["reason"], min(MAX_SECTION, room))
        vms = [section(reason)]
    else:
        vms = _vm_sections(r, sessions, first_view, room, status)
    return Message(
        text=fallback,
        blocks=head,
        attachments=[
            {
                "color": COLOUR["Success"] if recovered else COLOUR.get(result, "#888888"),
                "fallback": fallback,
                # header → details → Reason → actions, the colour bar beside all but the header
                "blocks": [details, *vms, foot, *buttons],
            }
        ],
        metadata=_metadata(sessions),
        sessions=list(sessions),
    )


AGENT_KINDS = frozenset({"AgentBackup", "AgentManagement"})


def _buttons(
    sessions: list[TaskSession], acked: tuple[str, float] | None, *, retry: bool = False
) -> list[dict[str, Any]]:
    """Acknowledge, Mute VM 24h (one-VM alerts), Mute job 24h, and Retry job (a Failed
    alert, `[actions] retry`); once acknowledged, who and when instead of the first
    button."""
    first = sessions[0]
    elements = []
    if acked is None:
        elements.append(_button("Acknowledge", "veeam_ack", {}, style="primary"))
    if len(sessions) == 1 and not first.job_level:
        elements.append(
            _button("Mute VM 24h", "veeam_mute_vm", {"vm": first.vm, "server": first.server})
        )
    elements.append(
        _button("Mute job 24h", "veeam_mute_job", {"job": first.job, "server": first.server})
    )
    if retry:
        value = {"job": first.job, "server": first.server, "em": first.em}
        if first.kind in AGENT_KINDS:  # an agent job: EM retries it by its own endpoint
            value |= {"kind": first.kind, "run": first.job_session_uid}
        button = _button("Retry job", "veeam_retry", value)
        button["confirm"] = {
            "title": {"type": "plain_text", "text": "Retry this job?"},
            "text": {"type": "mrkdwn", "text": cut_plain(
                f"Ask Enterprise Manager to retry *{slack_escape(first.job)}* on "
                f"*{slack_escape(first.server)}* now? Veeam runs it again for its failed VMs.",
                300)},
            "confirm": {"type": "plain_text", "text": "Retry"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }  # fmt: skip
        elements.append(button)
    out: list[dict[str, Any]] = [
        {"type": "actions", "block_id": "veeam_buttons", "elements": elements}
    ]
    if acked is not None:
        by, at = acked
        out.append(context(f":eyes: acknowledged by {mention(by)} at {slack_date(_at(at))}"))
    return out


def _button(label: str, action: str, value: dict[str, str], style: str = "") -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action,
        "value": json.dumps(value, ensure_ascii=False)[:2000],
    }
    if style:
        button["style"] = style
    return button


def _vm_sections(
    r: Renderer,
    sessions: list[TaskSession],
    first_view: dict[str, Any],
    room: int,
    status: dict[str, Markup],
) -> list[dict[str, Any]]:
    """One section per VM with an excerpt of its Reason, all within `room` characters."""
    share = min(MAX_SECTION, max(0, room) // len(sessions))
    out = []
    for s in sessions:
        sv = dict(first_view) if s is sessions[0] else session_view(s)
        sv["status"] = status.get(s.uid, "")
        short, cut = excerpt(s.reason)
        sv["more"] = f"/veeam session {s.uid.rsplit(':', 1)[-1]}" if cut else ""
        out.append(section(r.fitted("alert_vm.md.j2", sv, short or sv["reason"], share)))
    return out


def session_ref(s: TaskSession) -> dict[str, str]:
    """How an alert's metadata names a session (reconciliation reads the UID back)."""
    return {"uid": s.uid, "vm": s.vm, "result": s.result}


def _metadata(sessions: list[TaskSession]) -> dict[str, Any]:
    return {
        "event_type": ALERT_EVENT,
        "event_payload": {
            "job_session_uid": sessions[0].job_session_uid,
            "sessions": [session_ref(s) for s in sessions],
        },
    }


def minimal_message(message: Message) -> Message:
    """The same alert in its smallest form (header and VM list, no Reasons), for when Slack
    refuses the content of the full one. Same metadata, so reconciliation still finds it."""
    sessions = message.sessions
    if not sessions:  # a message about a job, not sessions: its header and fallback text
        blocks = [*message.blocks[:1], section(cut_markup(message.text, MAX_SECTION))]
        text = cut_markup(message.text, 300)
        return Message(text=text, blocks=blocks, metadata=message.metadata, sessions=[],
                       thread_ts=message.thread_ts)  # fmt: skip
    rows = [
        f"{EMOJI.get(s.result, ':grey_question:')} *{cut_plain(slack_escape(_subject(s)), 200)}* · "
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


def _subject(s: TaskSession) -> str:
    """What a line names: the VM, or for a job session's own failure the job and its kind."""
    return f"{s.job} ({s.kind_words})" if s.job_level else s.vm


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


_VERB = {"ReplicaTaskSession": "replicated", "BackupTaskSession": "backed up"}


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _at(epoch: float | None) -> datetime | None:
    return utc_from_epoch(epoch) if epoch is not None else None


def problem_status(p: Problem, first_reason: str = "") -> Markup:
    """What became of a problem since its alert, as mrkdwn: one line, and a second with
    the newest Reason when it differs from the alert's own (`first_reason`; escaped)."""
    if not p.is_open:
        took = human_duration((p.recovered_at or p.opened) - p.opened)
        return Markup(f":white_check_mark: recovered {slack_date(_at(p.recovered_at))}, {took}")
    if p.count > 1:
        again = "failed again" if p.last_result == "Failed" else "warned again"
        times = "once" if p.count == 2 else f"{p.count - 1} times"
        line = f":repeat: {again} {times}, last {slack_date(_at(p.last_end))}"
        latest, _cut = excerpt(p.last_reason)
        if latest and p.last_reason.strip() != first_reason.strip():
            line += f"\n_latest:_ {slack_escape(latest)}"
        return Markup(line)
    return Markup("")


def repeat_message(r: Renderer, s: TaskSession, p: Problem, *, broadcast: bool) -> Message:
    """A repeat in the problem's thread: the VM failed again, with the Reason."""
    view = {
        **session_view(s),
        "nth": ordinal(p.count + 1),
        "opened": slack_date(_at(p.opened)),
        "escalated": broadcast,
    }
    body = r.fitted("alert_repeat.md.j2", view, view["reason"], MAX_SECTION)
    fallback = r.fitted("alert_repeat_fallback.md.j2", view, view["reason"], 1000)
    return Message(
        text=fallback,
        blocks=[section(body)],
        metadata=_metadata([s]),
        sessions=[s],
        thread_ts=p.ts,
        broadcast=broadcast,
    )


def recovery_message(r: Renderer, s: TaskSession, p: Problem) -> Message:
    """The reply that closes a problem: the VM succeeded again."""
    view = {
        **session_view(s),
        "verb": "ran" if s.job_level else _VERB.get(s.type, "completed"),
        "after": human_duration((s.ended.timestamp() if s.ended else p.last_end) - p.opened),
        "failures": p.count,
    }
    text = r.text("alert_recovery.md.j2", view)
    return Message(
        text=text,
        blocks=[section(text)],
        metadata={
            "event_type": RECOVERY_EVENT,
            "event_payload": {"problem": p.id, "uid": s.uid, "vm": s.vm},
        },
        sessions=[s],
        thread_ts=p.ts,
    )


CATCHUP_EVENT = "veeam_catchup"


def catchup_message(
    r: Renderer, sessions: list[TaskSession], catchup_id: str, *, newest: int = 10
) -> Message:
    """One message for a poll that found too many job sessions to announce one by one
    (a first start, or a poll after a long outage)."""
    by_end = sorted(sessions, key=ended_at)
    ends = [s.ended for s in by_end if s.ended]
    since, until = (ends[0], ends[-1]) if ends else (None, None)
    per_job: dict[str, int] = {}
    for s in sessions:
        per_job[s.job] = per_job.get(s.job, 0) + 1
    top = sorted(per_job.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    rows = [
        {
            "emoji": EMOJI_MARKUP.get(s.result, NO_EMOJI),
            "vm": cut_plain(_subject(s), 80),
            "job": cut_plain(s.job, 80),
            "result": s.result,
            "ended": slack_date(s.ended),
        }
        for s in reversed(by_end[-newest:])
    ]
    job_sessions = len({s.job_session_uid for s in sessions})
    view = {
        "job_sessions": job_sessions,
        "vms": len({(s.server, s.vm) for s in sessions}),
        "since": slack_date(since),
        "until": slack_date(until),
        "summary": summary_of(sessions),
        "top_jobs": [{"job": cut_plain(job, 80), "count": n} for job, n in top],
        "newest": rows,
    }
    text = r.text("catchup.md.j2", view)
    starts = [s.created for s in sessions if s.created]
    start = min(starts).strftime("%Y-%m-%dT%H:%M") if starts else "1d"  # since: is the start
    command = f"`/veeam failed warning since:{start}` lists them all."
    fallback = slack_escape(
        f"Catch-up: {job_sessions} job sessions with failures or warnings ({summary_of(sessions)})"
    )
    return Message(
        text=fallback,
        blocks=[header(r.text("catchup_header.txt.j2", view)), section(text), context(command)],
        metadata={
            "event_type": CATCHUP_EVENT,
            "event_payload": {
                "id": catchup_id,
                "sessions": len(sessions),
                "since": since.isoformat().replace("+00:00", "Z") if since else None,
                "until": until.isoformat().replace("+00:00", "Z") if until else None,
            },
        },
        sessions=list(sessions),
    )
