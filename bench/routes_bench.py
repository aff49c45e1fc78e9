"""Routing: what choosing the channel of 10,000 alerts over 50 routes adds to a poll.

Each round builds a new `Router` (cold: no cached candidates, as after a configuration
change) and routes 10,000 sessions of 200 jobs on 4 servers, as a catch-up would; then the
same with the router kept (warm, as from the second poll on). The routes are a realistic
mix: job globs, VM globs, servers, types and results, a third with `continue`.

    .venv/bin/python bench/routes_bench.py [SESSIONS] [ROUTES]      (default: 10000 50)
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime

from bot.alerts.routes import Router
from bot.config.settings import Route
from bot.models import TaskSession


def routes(n: int) -> tuple[Route, ...]:
    out = []
    for i in range(n):
        kind = i % 5
        out.append(Route(
            f"C{i:04d}",
            jobs=(f"Job {i % 40}*", f"*SQL {i}*") if kind in (0, 1) else (),
            vms=(f"vm-{i % 10}*",) if kind == 1 else (),
            servers=(f"em{i % 4}",) if kind == 2 else (),
            types=("replica",) if kind == 3 else (),
            results=("Warning",) if kind == 4 else (),
            cont=i % 3 == 0,
        ))  # fmt: skip
    return tuple(out)


def sessions(n: int) -> list[TaskSession]:
    now = datetime.now(UTC)
    return [
        TaskSession(
            f"urn:veeam:ReplicaTaskSession:{i}",
            "ReplicaTaskSession" if i % 2 else "BackupTaskSession",
            f"vm-{i}",
            f"vm-{i}",
            f"Job {i % 200}",
            f"js-{i // 50}",
            "srv",
            "Completed",
            "Failed" if i % 3 else "Warning",
            "",
            now,
            now,
            0,
            f"em{i % 4}",
        )
        for i in range(n)
    ]


def main(n: int, r: int, rounds: int = 20) -> None:
    table, batch = routes(r), sessions(n)
    cold, warm = [], []
    for _ in range(rounds):
        router = Router(table, "C0ALERTS")
        t = time.perf_counter()
        first = [router.channels(s) for s in batch]
        cold.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        again = [router.channels(s) for s in batch]
        warm.append((time.perf_counter() - t) * 1000)
        assert first == again
    copies = sum(len(c) - 1 for c in first)
    print(f"{n:,} alerts over {r} routes ({copies:,} continue copies): cold median "
          f"{statistics.median(cold):.1f} ms, warm median {statistics.median(warm):.1f} ms "
          f"(target < 50 ms)")  # fmt: skip


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(args[0] if args else 10_000, args[1] if len(args) > 1 else 50)
