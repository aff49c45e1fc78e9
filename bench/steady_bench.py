"""Steady state: a poll with nothing new, against N UIDs in the store and N sessions of EM
history (plus the same 500 recent sessions for every N). Reports the median time of
`poll_once` in the running bot (EM logon kept).

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

from common import start_emulator, start_fake_slack

from bot.pipeline import Pipeline
from bot.render import Renderer
from bot.settings import AlertSettings, PollSettings, Secret, Settings, SlackSettings, VeeamSettings
from bot.slack import Pacer, SlackNotifier, web_client
from bot.store import Store
from bot.veeam.client import EMClient


def steady(n: int) -> None:
    # N sessions of history ending 2 h ago, plus the same 500 sessions in the last hour for
    # every N: the polls see identical recent work, so only the history size differs.
    em_proc, em_url = start_emulator(n, "14d", 0.1, "--end-offset", "2h", "--recent", "500")
    slack_proc, slack_url = start_fake_slack()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            now = datetime.now(UTC)
            settings = Settings(
                veeam=VeeamSettings(url=em_url, username="demo", password=Secret("demo")),
                poll=PollSettings(
                    initial_lookback=timedelta(hours=1), overlap=timedelta(minutes=30)
                ),
                alerts=AlertSettings(channel="C0ALERTS", max_posts_per_second=0),
                slack=SlackSettings(bot_token=Secret("xoxb-test-token"), api_url=slack_url),
                state_path=str(Path(tmp) / "state.sqlite"),
            )
            store = Store(settings.state_path, now=now)
            t0 = time.monotonic()
            store.bulk_announced(
                [f"urn:veeam:ReplicaTaskSession:{uuid.uuid4()}" for _ in range(n)],
                "C0ALERTS",
                "1.0",
                now,
            )
            loaded = time.monotonic() - t0
            em = EMClient(settings.veeam)
            notifier = SlackNotifier(web_client("xoxb-test-token", slack_url), Pacer(0, 1))
            pipeline = Pipeline(settings, em, store, notifier, Renderer())
            first = pipeline.poll_once(now)  # announces the last hour; later polls find nothing
            times, queries = [], []
            for i in range(1, 61):
                before = em.requests
                t = time.perf_counter()
                r = pipeline.poll_once(now + timedelta(seconds=i))
                times.append((time.perf_counter() - t) * 1000)
                queries.append(em.requests - before)
                assert r.new == 0 and r.announced == 0, r
            em.close()
            store.close()
            print(
                f"{n:>9,} UIDs in store and EM history (loaded in {loaded:.1f}s; first poll "
                f"announced {first.announced}): poll with nothing new median "
                f"{statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f}); "
                f"EM queries per poll: {set(queries)}; fetched {r.fetched} in the overlap"
            )
    finally:
        em_proc.terminate()
        slack_proc.terminate()


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [1_000, 1_000_000]:
        steady(n)
