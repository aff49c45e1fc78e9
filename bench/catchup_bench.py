"""Catch-up: N sessions in the emulator (about 10 % Failed or Warning), a first `poll --once`
into a fake Slack with no rate limit and pacing off. Reports announced sessions per second
(announced / total wall time of the bot process) and the bot's peak RSS.

    PYTHONPATH=. .venv/bin/python bench/catchup_bench.py [--runs R] [--every-alert] [N ...]

With --every-alert, [alerts] max_messages_per_poll = 0: every job session gets its own
message, as before catch-up summaries (the default folds more than 20 into one message).
With --no-jobs, no job sessions and no job inventory are read, as before they existed.
        (default: 5 runs each of 10000 and 100000)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from common import PY, bot_env, run_measured, start_emulator, start_fake_slack

CONFIG = """
[veeam]
page_size = 1000
session_types = ["ReplicaTaskSession", "BackupTaskSession"]
[poll]
initial_lookback = "25h"
[alerts]
max_posts_per_second = 0
"""


def catch_up(n: int, config: str) -> tuple[float, float, int]:
    """One fresh bot catching up on N sessions: (announced per second, peak RSS MB, announced)."""
    em, em_url = start_emulator(n)
    slack, slack_url = start_fake_slack()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "bot.toml"
            cfg.write_text(config)
            env = bot_env(em_url, slack_url, Path(tmp) / "state.sqlite", cfg)
            code, out, wall, rss = run_measured([PY, "-m", "bot", "poll", "--once"], env)
            assert code == 0, (code, out)
            announced = int(out.split("announced ")[1].split(",")[0])
            print(
                f"  {n:>8,} sessions in EM: announced {announced:,} in {wall:.2f}s "
                f"= {announced / wall:,.0f} announced sessions/s, peak RSS {rss:.0f} MB "
                f"(bot says: {out.strip()})",
                flush=True,
            )
            return announced / wall, rss, announced
    finally:
        em.terminate()
        slack.terminate()


def main(sizes: list[int], runs: int, config: str) -> None:
    """Several runs per size: timings on this VM drift by tens of percent between runs."""
    for n in sizes:
        rates, rss = [], []
        for _ in range(runs):
            rate, peak, _announced = catch_up(n, config)
            rates.append(rate)
            rss.append(peak)
        target = "; target 2,000 at 100,000" if n >= 100_000 else ""
        print(
            f"{n:>10,} sessions: median {statistics.median(rates):,.0f} announced sessions/s "
            f"(best {max(rates):,.0f}, worst {min(rates):,.0f}, {runs} runs{target}), "
            f"peak RSS {max(rss):.0f} MB (target < 150 MB)"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    runs = 5
    if "--runs" in args:
        i = args.index("--runs")
        runs = int(args[i + 1])
        del args[i : i + 2]
    config = CONFIG
    if "--every-alert" in args:
        args.remove("--every-alert")
        config += "max_messages_per_poll = 0\n"
    if "--no-jobs" in args:
        args.remove("--no-jobs")
        config = config.replace("[poll]", 'job_sessions = false\n[jobs]\nrefresh = "0m"\n[poll]')
    main([int(a) for a in args] or [10_000, 100_000], runs, config)
