"""Block Kit answers for `/veeam`: query results, one session, help and status (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.config.render import (
    MAX_BLOCKS,
    MAX_SECTION,
    TEXT_BUDGET,
    Renderer,
    fit,
    section,
    session_view,
    slack_date,
    slack_escape,
)
from bot.models import TaskSession
from bot.slash.lookup import Answer

ROW_REASON = 280  # characters of Reason per row; `/veeam session <UID>` shows all of it


@dataclass(frozen=True)
class Reply:
    """What goes to response_url: fallback text, blocks, visibility."""

    text: str
    blocks: list[dict[str, Any]]
    in_channel: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "blocks": self.blocks,
            "response_type": "in_channel" if self.in_channel else "ephemeral",
        }


def plain(text: str, *, in_channel: bool = False) -> Reply:
    """A one-sentence answer (errors, refusals): escaped, in a single section."""
    escaped = slack_escape(text)
    return Reply(escaped, [section(escaped)], in_channel)


def _pack(rows: list[str], room: int) -> list[dict[str, Any]]:
    """Rows into as few sections as fit (3,000 characters each), at most `room` blocks."""
    blocks: list[dict[str, Any]] = []
    current = ""
    for row in rows:
        joined = f"{current}\n\n{row}" if current else row
        if len(joined) <= MAX_SECTION:
            current = joined
            continue
        blocks.append(section(current))
        current = row
    if current:
        blocks.append(section(current))
    return blocks[:room]


def query_reply(r: Renderer, answer: Answer, words: str, *, share: bool) -> Reply:
    rows = []
    for s in answer.sessions:
        view = session_view(s)
        view["reason"] = s.reason if s.result != "Success" else ""
        rows.append(
            r.fitted("query_row.md.j2", view, view["reason"], ROW_REASON + 400)
            if view["reason"]
            else r.text("query_row.md.j2", view)
        )
    asked = section(f"*/veeam {slack_escape(words)}*" if words.strip() else "*/veeam*")
    footer = r.text(
        "query_footer.md.j2",
        {
            "total": answer.total,
            "shown": len(answer.sessions),
            "filters": [(t, flt) for t, flt in answer.filters.items()],
            # Enterprise Managers that did not answer: name → one sentence
            "missing": sorted((answer.missing or {}).items()),
        },
    )
    summary = f"{answer.total} session(s) match /veeam {words}".strip()
    room = TEXT_BUDGET - len(summary) - len(asked["text"]["text"]) - len(footer) - 100
    kept = 0
    while kept < len(rows) and room - len(rows[kept]) - 2 >= 0:
        room -= len(rows[kept]) + 2
        kept += 1
    if kept < len(rows):  # Slack refuses a message of much more than 13,000 characters
        rows = [*rows[:kept], f"_… {len(rows) - kept} more not shown here; narrow the query_"]
    blocks = [asked, *_pack(rows, MAX_BLOCKS - 2), section(footer)]
    return Reply(slack_escape(summary), blocks, share)


def session_reply(r: Renderer, s: TaskSession, *, share: bool) -> Reply:
    """One session with its whole Reason, split across sections (line breaks kept)."""
    blocks = [section(r.text("session.md.j2", session_view(s)))]
    reason = s.reason or "(no reason given)"
    chunks = _split(slack_escape(reason), MAX_SECTION - 20)
    # At most the blocks and the characters Slack takes in one message (about 13,000).
    room = min(MAX_BLOCKS - 1, (TEXT_BUDGET - 1000) // MAX_SECTION)
    if len(chunks) > room:
        kept = "".join(chunks[: room - 1])
        chunks = [*chunks[: room - 1], str(fit(reason[len(kept) :], MAX_SECTION - 20))]
    blocks.append(section("*Reason:*\n" + chunks[0]))
    blocks += [section(c) for c in chunks[1:]]
    text = f"{s.result}: {s.vm} in {s.job}: {s.reason[:200]}"
    return Reply(slack_escape(text), blocks[:MAX_BLOCKS], share)


def _split(escaped: str, size: int) -> list[str]:
    """Cut escaped text into pieces of at most `size`, preferring line breaks, never inside
    an entity such as `&amp;`."""
    pieces = []
    while len(escaped) > size:
        cut = escaped.rfind("\n", size // 2, size)
        if cut <= 0:
            cut = size
            amp = escaped.rfind("&", cut - 6, cut)
            if amp >= 0 and ";" not in escaped[amp:cut]:
                cut = amp
        pieces.append(escaped[:cut])
        escaped = escaped[cut:].lstrip("\n") if escaped[cut : cut + 1] == "\n" else escaped[cut:]
    return [*pieces, escaped] if escaped or not pieces else pieces


def help_reply(r: Renderer) -> Reply:
    return Reply("How to use /veeam", [section(r.text("help.md.j2", {}))])


@dataclass(frozen=True)
class Status:
    last_poll: datetime | None
    last_outcome: str
    em_state: str
    announced_24h: int
    pending: int
    version: str


def status_reply(r: Renderer, st: Status) -> Reply:
    view = {
        "last_poll": slack_date(st.last_poll) if st.last_poll else None,
        "last_outcome": st.last_outcome,
        "em_state": st.em_state,
        "announced_24h": st.announced_24h,
        "pending": st.pending,
        "version": st.version,
    }
    text = f"Bot status: last poll {st.last_outcome or 'none yet'}, {st.pending} pending"
    return Reply(slack_escape(text), [section(r.text("status.md.j2", view))])


def usage_error(message: str) -> Reply:
    """A bad word: the sentence naming it, then the usage line (both escaped)."""
    first, _, usage = message.partition("\n")
    text = f"{slack_escape(first)}\n{slack_escape(usage)}" if usage else slack_escape(first)
    return Reply(slack_escape(first), [section(text)])
