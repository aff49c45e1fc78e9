"""Digest over N sessions in the window: time and the bot's peak RSS (`digest --dry-run` as
its own process, pages of 1,000 streamed). Run at 10,000 and 100,000 to see memory stay flat.

    .venv/bin/python bench/digest_bench.py [N ...]      (default: 10000 100000)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import PY, bot_env, run_measured, start_emulator

CONFIG = """
[veeam]
page_size = 1000
session_types = ["ReplicaTaskSession", "BackupTaskSession"]
"""


def digest(n: int) -> None:
    em, em_url = start_emulator(n, "23h")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "bot.toml"
            cfg.write_text(CONFIG)
            env = bot_env(em_url, "http://127.0.0.1:9/api/", Path(tmp) / "s.sqlite", cfg)
            code, out, wall, rss = run_measured([PY, "-m", "bot", "digest", "--dry-run"], env)
            counts = next((ln for ln in out.splitlines() if "completed task session" in ln), "")
            print(
                f"{n:>8,} sessions in the window: exit {code}, {wall:.2f}s, peak RSS {rss:.0f} MB"
                f" ({counts.strip()})"
            )
    finally:
        em.terminate()


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [10_000, 100_000]:
        digest(n)
