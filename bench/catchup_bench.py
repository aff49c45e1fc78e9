"""Catch-up: N sessions in the emulator (about 10 % Failed or Warning), a first `poll --once`
into a fake Slack with no rate limit and pacing off. Reports announced sessions per second
(announced / total wall time of the bot process) and the bot's peak RSS.

    .venv/bin/python bench/catchup_bench.py [N ...]      (default: 10000 100000)
"""

from __future__ import annotations

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


def catch_up(n: int) -> None:
    em, em_url = start_emulator(n)
    slack, slack_url = start_fake_slack()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "bot.toml"
            cfg.write_text(CONFIG)
            env = bot_env(em_url, slack_url, Path(tmp) / "state.sqlite", cfg)
            code, out, wall, rss = run_measured([PY, "-m", "bot", "poll", "--once"], env)
            announced = int(out.split("announced ")[1].split(",")[0])
            print(
                f"{n:>8,} sessions in EM: exit {code}, announced {announced:,} in {wall:.2f}s "
                f"= {announced / wall:,.0f} announced sessions/s, peak RSS {rss:.0f} MB"
            )
            print(f"          bot says: {out.strip()}")
    finally:
        em.terminate()
        slack.terminate()


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [10_000, 100_000]:
        catch_up(n)
