"""How a session is written into the state (JSON with short keys) and read back, and the
pending alert as the store hands it out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.models import TaskSession, iso_z
from bot.veeam.fields import parse_time


@dataclass(frozen=True)
class Pending:
    """A session whose alert is marked pending: it may or may not have reached Slack."""

    session: TaskSession
    channel: str
    since: float  # epoch seconds when first marked
    late: float | None = None  # seconds EM took to list it, when it listed it late


def session_to_json(s: TaskSession) -> dict[str, Any]:
    return {
        "uid": s.uid,
        "type": s.type,
        "name": s.name,
        "vm": s.vm,
        "job": s.job,
        "jsu": s.job_session_uid,
        "server": s.server,
        "state": s.state,
        "result": s.result,
        "reason": s.reason,
        "created": iso_z(s.created),
        "ended": iso_z(s.ended),
        "size": s.total_size,
        **({"em": s.em} if s.em else {}),
        **({"k": s.kind} if s.kind else {}),
    }


def session_from_json(d: dict[str, Any]) -> TaskSession:
    return TaskSession(
        uid=d["uid"],
        type=d["type"],
        name=d["name"],
        vm=d["vm"],
        job=d["job"],
        job_session_uid=d["jsu"],
        server=d["server"],
        state=d["state"],
        result=d["result"],
        reason=d["reason"],
        created=parse_time(d["created"]),
        ended=parse_time(d["ended"]),
        total_size=d["size"],
        em=d.get("em", ""),
        kind=d.get("k", ""),
    )


def scoped(name: str, server: str) -> str:
    """A meta name of one Enterprise Manager of several (`checkpoint:<type>@em1`); the bot
    watching one server from `[veeam] url` keeps the plain names."""
    return f"{name}@{server}" if server else name
