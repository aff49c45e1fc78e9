"""Steady state: a poll with nothing new, against N UIDs in the store and N sessions of EM
history (plus the same 500 recent sessions for every N). Reports the median time of
`poll_once` in the running bot (EM logon kept); the bots poll in turns.

Each N runs with job sessions and the job inventory on (as shipped); the first N also runs
with both off (as before they existed), for the cost of reading them. After the timed
polls, one more poll per bot is due to refresh the inventory, and is timed alone.

    .venv/bin/python bench/steady_bench.py [N ...]      (default: 1000 1000000)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import bench_pipeline, start_emulator, start_fake_slack

from bot.config.settings import PollSettings
from bot.store.schema import ANNOUNCED


class Setup:
    """One bot with N announced UIDs in its store, against an EM with N sessions of history."""

    def __init__(self, n: int, now: datetime, tmp: Path, *, jobs: bool = True) -> None:
        # N sessions of history ending 2 h ago, plus the same 500 sessions in the last hour
        # for every N: the polls see identical recent work, so only the history size differs.
        self.n, self.jobs = n, jobs
        self.em_proc, em_url = start_emulator(
            n, "14d", 0.1, "--end-offset", "2h", "--recent", "500"
        )
        self.slack_proc, slack_url = start_fake_slack()
        self.pipeline, self.store, self.em = bench_pipeline(
            em_url,
            slack_url,
            tmp / f"state-{n}-{jobs}.sqlite",
            now,
            PollSettings(initial_lookback=timedelta(hours=1), overlap=timedelta(minutes=30)),
            jobs=jobs,
        )
        t0 = time.monotonic()
        receipt = {"c": "C0ALERTS", "ts": "1.0", "at": now.timestamp(), "r": "Failed"}
        uids = [f"urn:veeam:ReplicaTaskSession:{uuid.uuid4()}" for _ in range(n)]
        self.store.put_records(ANNOUNCED, dict.fromkeys(uids, receipt))
        self.store.commit()
        self.loaded = time.monotonic() - t0
        t0 = time.monotonic()
        self.first = self.pipeline.poll_once(now)  # announces the last hour
        self.first_s = time.monotonic() - t0  # with the first inventory refresh (30 days)
        self.times: list[float] = []
        self.queries: set[int] = set()
        self.fetched = 0

    def poll(self, now: datetime) -> None:
        before = self.em.requests
        t = time.perf_counter()
        r = self.pipeline.poll_once(now)
        self.times.append((time.perf_counter() - t) * 1000)
        self.queries.add(self.em.requests - before)
        self.fetched = r.fetched
        assert r.new == 0 and r.announced == 0, r

    @property
    def label(self) -> str:
        return f"{self.n:>9,} UIDs, jobs {'on ' if self.jobs else 'off'}"

    def close(self) -> None:
        self.em.close()
        self.store.close()
        self.em_proc.terminate()
        self.slack_proc.terminate()


def main(sizes: list[int], polls: int = 200) -> None:
    """The bots run side by side and poll in turns, so all see the same machine state (this
    VM's timings drift by tens of percent over a minute)."""
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        setups = [Setup(sizes[0], now, Path(tmp), jobs=False)]
        setups += [Setup(n, now, Path(tmp)) for n in sizes]
        try:
            for i in range(1, polls + 1):
                for s in setups if i % 2 else reversed(setups):
                    s.poll(now + timedelta(seconds=i))
            for s in setups:
                print(
                    f"{s.label} (loaded in {s.loaded:.1f}s; first poll {s.first_s:.1f}s, "
                    f"announced {s.first.announced}): poll with nothing new median "
                    f"{statistics.median(s.times):.1f} ms (min {min(s.times):.1f}, "
                    f"p90 {statistics.quantiles(s.times, n=10)[-1]:.1f}) over {polls} polls; "
                    f"EM queries per poll: {sorted(s.queries)}; fetched {s.fetched} in the overlap"
                )
            off, on = statistics.median(setups[0].times), statistics.median(setups[1].times)
            print(f"jobs on vs off at {sizes[0]:,}: {on / off:.2f}x (target at most 1.5x)")
            for s in setups[2:]:
                diff = statistics.median(s.times) / on - 1
                print(f"median at {s.n:,} vs {sizes[0]:,}: {diff:+.0%} (target within 20 %)")
            later = now + timedelta(minutes=16)  # the inventory is due again
            for s in setups[1:]:
                t = time.perf_counter()
                s.pipeline.poll_once(later)
                print(f"{s.label}: a poll that refreshes the inventory "
                      f"{(time.perf_counter() - t) * 1000:.0f} ms")  # fmt: skip
        finally:
            for s in setups:
                s.close()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 1_000_000])
