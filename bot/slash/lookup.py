"""Run a Query against EM: newest first, at most `limit` rows, and the exact match count."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.errors import QueryError, SourceError
from bot.models import TaskSession
from bot.slash.query import Query
from bot.veeam.client import EMClient


@dataclass(frozen=True)
class Answer:
    sessions: list[TaskSession]
    total: int
    filters: dict[str, str]  # session type → the exact EM filter used
    # Enterprise Managers that could not answer (several watched): name → one sentence
    missing: dict[str, str] | None = None


def pick(ems: Mapping[str, EMClient], wanted: str | None) -> dict[str, EMClient]:
    """The Enterprise Managers a query asks (`em:NAME` narrows it to one). Raises QueryError
    for a name the bot does not watch."""
    if wanted is None:
        return dict(ems)
    for name, client in ems.items():
        if name.lower() == wanted.lower():
            return {name: client}
    known = ", ".join(n for n in ems if n) or "none (the bot watches one)"
    raise QueryError(f"em:{wanted} is not an Enterprise Manager the bot watches; known: {known}")


def run_on(ems: Mapping[str, EMClient], query: Query) -> Answer:
    """`run_query` on every Enterprise Manager asked, newest first across them, each row
    named by its server. One that fails is named in `missing` when others answered."""
    chosen = pick(ems, query.em)
    if len(chosen) == 1:
        name, client = next(iter(chosen.items()))
        answer = run_query(client, query)
        return _named(answer, name)
    answers: list[Answer] = []
    missing: dict[str, str] = {}
    for name, client in chosen.items():
        try:
            answers.append(_named(run_query(client, query), name))
        except SourceError as exc:
            missing[name] = str(exc)
    if not answers:
        raise SourceError("; ".join(f"{n}: {m}" for n, m in missing.items()))
    rows = sorted(
        (s for a in answers for s in a.sessions),
        key=lambda s: s.created.timestamp() if s.created else 0.0,
        reverse=True,
    )
    return Answer(
        rows[: query.limit], sum(a.total for a in answers), answers[0].filters, missing or None
    )


def _named(answer: Answer, name: str) -> Answer:
    if not name:
        return answer
    sessions = [s._replace(em=name) for s in answer.sessions]
    return Answer(sessions, answer.total, answer.filters, answer.missing)


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
