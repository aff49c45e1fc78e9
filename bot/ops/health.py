"""`GET /healthz`: healthy while the last successful poll is recent (pure; `now` passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def combined(each: dict[str, tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """One answer for several Enterprise Managers: 503 when any is failing, naming it. The
    bot watching one answers with that server's body."""
    if len(each) == 1:
        return next(iter(each.values()))
    failing = {name: body for name, (status, body) in each.items() if status != 200}
    servers = {name: body for name, (_status, body) in each.items()}
    if not failing:
        return 200, {"status": "ok", "servers": servers}
    reason = "; ".join(f"{name}: {body['reason']}" for name, body in failing.items())
    return 503, {"status": "failing", "reason": reason, "servers": servers}


def health(
    last_poll: dict[str, Any] | None, now: datetime, interval: timedelta
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body): 200 when a poll succeeded within 3× the poll interval,
    else 503 with the reason (the last poll's outcome)."""
    last_poll = last_poll or {}
    ok_at = last_poll.get("ok_at")
    outcome = str(last_poll.get("outcome") or "no poll yet")
    if not isinstance(ok_at, int | float):
        return 503, {"status": "failing", "reason": f"no successful poll yet ({outcome})"}
    age = now.timestamp() - ok_at
    body: dict[str, Any] = {
        "last_success": datetime.fromtimestamp(ok_at, UTC).isoformat(),
        "last_outcome": outcome,
    }
    if age <= 3 * interval.total_seconds():
        return 200, {"status": "ok", **body}
    minutes = age / 60
    reason = f"no successful poll for {minutes:.0f} min (last: {outcome})"
    return 503, {"status": "failing", "reason": reason, **body}
