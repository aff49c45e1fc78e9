"""Jobs that stop running: the cost of judging 5,000 jobs with 30 days of history.

Builds the inventory as a refresh keeps it (`fold_all` over 5,000 jobs and a daily run of
each for 30 days: 150,000 job sessions), 1 in 50 jobs stale, 1 in 100 disabled since the
refresh before, 1 in 200 with a run stuck; then times, over 50 rounds each:

- `conditions` over every record (the pure decisions);
- the stale stage (`Watch.run`) in steady state: every episode already told, so it reads
  the episodes from the state file, judges every job and posts nothing;
- `Inventory.keep` of a refresh that brings nothing new (the fold and the state writes).

    .venv/bin/python bench/stale_bench.py [JOBS]      (default: 5000)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import bench_pipeline, start_emulator, start_fake_slack

from bot.alerts.episodes import conditions
from bot.alerts.inventory import fold_all, job_key
from bot.config.settings import PollSettings, StaleSettings
from bot.models import Job, JobSession
from bot.store.schema import JOBS


def inventory(n: int, now: datetime) -> tuple[list[Job], list[JobSession], list[JobSession]]:
    jobs, finished, working = [], [], []
    for j in range(n):
        uid = f"urn:veeam:Job:{j:08d}-0000-4000-8000-000000000000"
        stale = j % 50 == 0
        jobs.append(Job(uid, f"Job {j}", "Replica", "VMware", "vbr01", "", True,
                        j % 100 != 1, now + timedelta(hours=5), 3, 10))  # fmt: skip
        for d in range(30, 3 if stale else 0, -1):
            start = now - timedelta(days=d, minutes=j % 600)
            finished.append(JobSession(
                f"urn:veeam:ReplicaJobSession:{j:08d}-{d:04d}-4000-8000-000000000000",
                "ReplicaJobSession", f"Job {j}@x", f"Job {j}", uid, "Replica", "vbr01",
                "Stopped", "Success" if d % 9 else "Warning", "", False, 100,
                start, start + timedelta(minutes=40),
            ))  # fmt: skip
        if j % 200 == 2:
            start = now - timedelta(hours=6)
            working.append(JobSession(
                f"urn:veeam:ReplicaJobSession:{j:08d}-9999-4000-8000-000000000000",
                "ReplicaJobSession", f"Job {j}@y", f"Job {j}", uid, "Replica", "vbr01",
                "Working", "None", "", False, 50, start, None,
            ))  # fmt: skip
    return jobs, finished, working


def ms(times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1]
    return f"median {statistics.median(times):.1f} ms (p90 {p90:.1f})"


def main(n: int, rounds: int = 50) -> None:
    now = datetime.now(UTC)
    read = inventory(n, now)
    before = {job_key("em", j.uid): {"enabled": True, "listed": True} for j in read[0]}
    t = time.perf_counter()
    records, _ = fold_all("em", {}, read, {"ReplicaJobSession"}, now=now,
                          retention=timedelta(days=14))  # fmt: skip
    fold_s = time.perf_counter() - t
    for key, rec in records.items():
        rec["was"] = before[key]["enabled"]
    print(f"{n:,} jobs, {len(read[1]):,} job sessions over 30 days: first fold {fold_s:.2f}s")
    settings = StaleSettings()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        found = [c for r in records.values() for c in conditions("em", r, settings, now, set())]
        times.append((time.perf_counter() - t) * 1000)
    kinds = {k: sum(1 for c in found if c.kind == k) for k in ("stale", "disabled", "running")}
    print(f"conditions over {n:,} jobs ({kinds}): {ms(times)} (target < 50 ms)")

    em_proc, em_url = start_emulator(10, "1h", 0.0, "--no-job-scenarios")
    slack_proc, slack_url = start_fake_slack()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, store, em = bench_pipeline(
            em_url, slack_url, Path(tmp) / "state.sqlite", now, PollSettings()
        )
        try:
            label = pipeline.settings.veeam.label
            mine = {job_key(label, rec["uid"]): rec for rec in records.values()}
            store.put_records(JOBS, mine)
            store.commit()
            t = time.perf_counter()
            done, error = pipeline.watch.run(mine, now)  # tells every episode once
            first = time.perf_counter() - t
            print(f"first stage run: {done} alerts posted in {first:.1f}s ({error or 'ok'})")
            times = []
            for i in range(rounds):
                t = time.perf_counter()
                with store.lock:
                    again, _ = pipeline.watch.run(mine, now + timedelta(seconds=i))
                times.append((time.perf_counter() - t) * 1000)
                assert again == 0
            print(f"stale stage in steady state over {n:,} jobs: {ms(times)} (target < 50 ms)")
            nothing = (read[0], [], read[2])
            times = []
            for i in range(10):
                t = time.perf_counter()
                with store.lock:
                    pipeline.inventory.keep(now + timedelta(minutes=15 * i), *nothing)
                times.append((time.perf_counter() - t) * 1000)
            print(f"inventory keep of a refresh with nothing new: {ms(times)}")
        finally:
            em.close()
            store.close()
            em_proc.terminate()
            slack_proc.terminate()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
