"""Steady state: a poll with nothing new, against N UIDs in the store and N sessions of EM
history (plus the same 500 recent sessions for every N). Reports the median time of
`poll_once` in the running bot (EM logon kept); the bots poll in turns.

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

    def __init__(self, n: int, now: datetime, tmp: Path) -> None:
        # N sessions of history ending 2 h ago, plus the same 500 sessions in the last hour
        # for every N: the polls see identical recent work, so only the history size differs.
        self.n = n
        self.em_proc, em_url = start_emulator(
            n, "14d", 0.1, "--end-offset", "2h", "--recent", "500"
        )
        self.slack_proc, slack_url = start_fake_slack()
        self.pipeline, self.store, self.em = bench_pipeline(
            em_url,
            slack_url,
            tmp / f"state-{n}.sqlite",
            now,
            PollSettings(initial_lookback=timedelta(hours=1), overlap=timedelta(minutes=30)),
        )
        t0 = time.monotonic()
        receipt = {"c": "C0ALERTS", "ts": "1.0", "at": now.timestamp(), "r": "Failed"}
        uids = [f"urn:veeam:ReplicaTaskSession:{uuid.uuid4()}" for _ in range(n)]
        self.store.put_records(ANNOUNCED, dict.fromkeys(uids, receipt))
        self.store.commit()
        self.loaded = time.monotonic() - t0
        self.first = self.pipeline.poll_once(now)  # announces the last hour
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

    def close(self) -> None:
        self.em.close()
        self.store.close()
        self.em_proc.terminate()
        self.slack_proc.terminate()


def main(sizes: list[int], polls: int = 200) -> None:
    """Both bots run side by side and poll in turns, so both see the same machine state (this
    VM's timings drift by tens of percent over a minute)."""
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        setups = [Setup(n, now, Path(tmp)) for n in sizes]
        try:
            for i in range(1, polls + 1):
                for s in setups if i % 2 else reversed(setups):
                    s.poll(now + timedelta(seconds=i))
            for s in setups:
                print(
                    f"{s.n:>9,} UIDs in store and EM history (loaded in {s.loaded:.1f}s; first "
                    f"poll announced {s.first.announced}): poll with nothing new median "
                    f"{statistics.median(s.times):.1f} ms (min {min(s.times):.1f}, "
                    f"p90 {statistics.quantiles(s.times, n=10)[-1]:.1f}) over {polls} polls; "
                    f"EM queries per poll: {sorted(s.queries)}; fetched {s.fetched} in the overlap"
                )
            base = statistics.median(setups[0].times)
            for s in setups[1:]:
                diff = statistics.median(s.times) / base - 1
                print(f"median at {s.n:,} vs {setups[0].n:,}: {diff:+.0%} (target within 20 %)")
        finally:
            for s in setups:
                s.close()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 1_000_000])
