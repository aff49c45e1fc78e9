"""`/veeam jobs [stale|disabled|running|failing] [em:NAME]` and `python -m bot jobs`: one line
per job from the job inventory the bot keeps (no request to EM): its last result, its last
success and how long ago, its next run, its expected interval, and a mark when it is stale,
disabled or running long. Worst first; the rows are pure functions of the records and `now`."""

from __future__ import annotations

from datetime import datetime

from bot.alerts.joblist import JobRow, job_rows, row_text, wanted
from bot.config.render import MAX_BLOCKS, context, section
from bot.config.settings import Settings
from bot.errors import QueryError
from bot.slash.answers import Reply, _pack, plain
from bot.store.schema import JOBS
from bot.store.store import Store

KINDS = ("stale", "disabled", "running", "failing")
USAGE = "usage: /veeam jobs [stale|disabled|running|failing] [em:NAME]"
SHOWN = 40  # rows in one answer; "and N more" after


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
