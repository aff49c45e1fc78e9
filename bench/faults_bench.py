"""Delivery under faults: how many runs of `poll --once` (as cron runs it) it takes until
every failure is in Slack, once, when 30 % of EM requests answer 500, 30 % of Slack posts
and reads answer 500, and a tenth of the posts Slack takes are answered 500 all the same.

Five runs, each with its own seeds. Target: every run delivers within 10 polls.
The emulator and the fake Slack run in this process; each poll is a bot process.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT

sys.path.insert(0, str(ROOT))
from bot.emulator.data import SessionStore, generate
from bot.emulator.server import Emulator
from tests.fake_slack import FakeSlack
from tests.helpers import bot_env

TARGET = 10
TOML = (
    '[alerts]\nmax_posts_per_second = 0\nbackoff = "20ms"\nretries = 2\n'
    '[veeam]\nattempts = 3\nbackoff = "5ms"\n'
)


def one_run(seed: int) -> tuple[int, int, bool]:
    """(failures, polls until all were delivered, each exactly once)."""
    sessions = generate(
        360, now=datetime.now(UTC), seed=seed, span=timedelta(hours=20), failure_rate=0.2,
        extras=False,
    )  # fmt: skip
    em = Emulator(SessionStore(sessions)).start()
    slack = FakeSlack().start()
    em.fault_rate, em.faults = 0.3, random.Random(seed * 7)
    slack.fail_rate, slack.lose_rate, slack.read_fail_rate = 0.3, 0.1, 0.3
    slack.faults = random.Random(seed * 11)
    wanted = Counter(
        s.uid
        for s in sessions
        if s.type == "ReplicaTaskSession" and s.state == "Completed" and s.result != "Success"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = bot_env(Path(tmp), em.url, slack.url, TOML)
            polls = 0
            while polls < 30:
                polls += 1
                proc = subprocess.run(
                    [sys.executable, "-m", "bot", "poll", "--once"],
                    cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                )  # fmt: skip
                if proc.returncode == 0 and Counter(slack.announced_uids()) >= wanted:
                    break
            got = Counter(slack.announced_uids())
    finally:
        em.stop()
        slack.stop()
    return len(wanted), polls, got == wanted


if __name__ == "__main__":
    results = [one_run(seed) for seed in range(1, 6)]
    for n, (failures, polls, once) in enumerate(results, 1):
        print(f"run {n}: {failures} failures, all in Slack after {polls} poll(s), once: {once}")
    worst = max(p for _, p, _ in results)
    ok = worst <= TARGET and all(once for _, _, once in results)
    print(f"polls: {[p for _, p, _ in results]}; worst {worst} (target ≤ {TARGET}) "
          f"{'OK' if ok else 'MISSED'}")  # fmt: skip
    sys.exit(0 if ok else 1)
