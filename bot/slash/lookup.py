"""Run a Query against EM: newest first, at most `limit` rows, and the exact match count."""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import TaskSession
from bot.slash.query import Query
from bot.veeam.client import EMClient


@dataclass(frozen=True)
class Answer:
    sessions: list[TaskSession]
    total: int
    filters: dict[str, str]  # session type → the exact EM filter used


def run_query(client: EMClient, query: Query) -> Answer:
    """At most two requests per session type: the first page, and the last for the count."""
    rows: list[TaskSession] = []
    total = 0
    filters: dict[str, str] = {}
    for type_ in query.types:
        flt = query.em_filter()
        filters[type_] = flt
        head, count = client.head_and_count(type_, flt, sort_desc="CreationTime", size=query.limit)
        rows += head
        total += count
    rows.sort(key=lambda s: s.created.timestamp() if s.created else 0.0, reverse=True)
    return Answer(rows[: query.limit], total, filters)
