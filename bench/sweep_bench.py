"""Sweep: a poll that looks back over the whole late window (24 h) while EM holds about
5,000 Failed/Warning sessions in it, all already announced. That is what the first poll of
every process, and one poll an hour, costs at a busy site. Reports the median time of
`poll_once` in the running bot (EM logon kept), next to an ordinary poll.

    .venv/bin/python bench/sweep_bench.py [--no-recovery] [--no-jobs] [SESSIONS] [POLLS]
                                                                    (default: 80000 30)

Every announced failure is an open problem, so each poll also reads the Success sessions
of its ordinary window; --no-recovery ([alerts] recovery = false) leaves that out.
--no-jobs reads no job sessions and no job inventory, as before they existed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import bench_pipeline, start_emulator, start_fake_slack

from bot.config.settings import PollSettings


def main(sessions: int, polls: int, recovery: bool, jobs: bool = True) -> None:
    now = datetime.now(UTC)
    em_proc, em_url = start_emulator(sessions, "24h", 0.1)
    slack_proc, slack_url = start_fake_slack()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pipeline, store, em = bench_pipeline(
                em_url,
                slack_url,
                Path(tmp) / "state.sqlite",
                now,
                PollSettings(initial_lookback=timedelta(hours=24)),
                recovery=recovery,
                jobs=jobs,
            )
            t0 = time.monotonic()
            first = pipeline.poll_once(now)  # announces the whole day
            took = time.monotonic() - t0
            sweeps: list[float] = []
            ordinary: list[float] = []
            fetched = 0
            for i in range(1, polls + 1):
                at = now + timedelta(seconds=i)
                for sweep in (True, False) if i % 2 else (False, True):
                    if sweep:
                        pipeline.last_sweep = None  # as on the first poll of a process
                    t = time.perf_counter()
                    r = pipeline.poll_once(at)
                    (sweeps if sweep else ordinary).append((time.perf_counter() - t) * 1000)
                    assert r.new == 0 and r.announced == 0 and r.exit_code == 0, r
                    fetched = r.fetched if sweep else fetched
            em.close()
            store.close()
    finally:
        em_proc.terminate()
        slack_proc.terminate()
    print(
        f"first poll announced {first.announced} Failed/Warning sessions of the last 24 h "
        f"in {took:.1f}s (pacing off)"
    )
    print(
        f"sweep over 24 h, {fetched} sessions fetched, all announced: median "
        f"{statistics.median(sweeps):.0f} ms (min {min(sweeps):.0f}, max {max(sweeps):.0f}) "
        f"over {polls} sweeps (target < 250 ms; recovery {'on' if recovery else 'off'}, "
        f"job sessions {'on' if jobs else 'off'})"
    )
    print(
        f"ordinary poll next to it: median {statistics.median(ordinary):.1f} ms "
        f"(min {min(ordinary):.1f})"
    )


if __name__ == "__main__":
    recovery = "--no-recovery" not in sys.argv
    jobs = "--no-jobs" not in sys.argv
    args = [int(a) for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else 80_000, args[1] if len(args) > 1 else 30, recovery, jobs)
