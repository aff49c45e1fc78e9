"""Open problems: a poll with nothing new while the state file holds 10,000 open problems
(each poll then also reads the Success sessions of its window, to close any of them).
Reports the median time of `poll_once` in the running bot (EM logon kept).

    .venv/bin/python bench/problems_bench.py [OPEN] [POLLS]     (default: 10000 200)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter

from common import bench_pipeline, start_emulator, start_fake_slack

from bot.alerts.problems import Problem
from bot.config.settings import PollSettings
from bot.store.schema import PROBLEMS


def main(open_problems: int, polls: int) -> None:
    now = datetime.now(UTC)
    em_proc, em_url = start_emulator(20_000, "14d", 0.1, "--end-offset", "2h", "--recent", "500")
    slack_proc, slack_url = start_fake_slack()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pipeline, store, em = bench_pipeline(
                em_url,
                slack_url,
                Path(tmp) / "state.sqlite",
                now,
                PollSettings(initial_lookback=timedelta(hours=1)),
            )
            first = pipeline.poll_once(now)  # announces the last hour (and opens its problems)
            base = now.timestamp() - 86400
            em_name = pipeline.settings.veeam.name
            ghosts = {
                f'["{em_name}", "ReplicaTaskSession", "Job {n % 300}", "vm-{n}"]': (
                    Problem(
                        f"p{n}", "open", f"u{n}", base, f"u{n}", base, "Failed", "Failed", 1,
                        "C0ALERTS", f"{base:.6f}",
                    ).to_json()
                )
                for n in range(open_problems)
            }  # fmt: skip
            store.put_records(PROBLEMS, ghosts)
            store.commit()
            opened = sum(p["state"] == "open" for p in store.all_records(PROBLEMS).values())
            times, queries = [], set()
            for i in range(1, polls + 1):
                before = em.requests
                t = perf_counter()
                r = pipeline.poll_once(now + timedelta(seconds=i))
                times.append((perf_counter() - t) * 1000)
                queries.add(em.requests - before)
                assert r.new == 0 and r.announced == 0 and r.exit_code == 0, r
            em.close()
            store.close()
    finally:
        em_proc.terminate()
        slack_proc.terminate()
    print(
        f"{opened:,} open problems ({first.announced} opened by the first poll): poll with "
        f"nothing new median {statistics.median(times):.1f} ms (min {min(times):.1f}, p90 "
        f"{statistics.quantiles(times, n=10)[-1]:.1f}) over {polls} polls; EM queries per "
        f"poll: {sorted(queries)} (target < 200 ms)"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(args[0] if args else 10_000, args[1] if len(args) > 1 else 200)
