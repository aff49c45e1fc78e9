"""`make demo`: the real pipeline against an in-process emulator, printing alerts to the console.

No tokens, no configuration: the emulator plays Enterprise Manager, new failures are injected
every few seconds, and a console sink stands in for Slack.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, TextIO

from bot.alerts.pipeline import Pipeline
from bot.config.render import Message, Renderer
from bot.config.settings import (
    AlertSettings,
    JobsSettings,
    PollSettings,
    Secret,
    Settings,
    VeeamSettings,
)
from bot.emulator.data import SessionStore, generate, inject_failures
from bot.emulator.jobs import DISABLED_JOB_UID, job_scenarios
from bot.emulator.server import Emulator
from bot.slack.console import DIM, RESET, format_message
from bot.slack.web import Receipt
from bot.store.store import Store
from bot.veeam.client import EMClient


class ConsoleSink:
    """A Notifier that prints each alert readably instead of posting it."""

    def __init__(self, out: TextIO, colour: bool, clock: Callable[[], datetime]) -> None:
        self.out, self.colour, self.count, self.clock = out, colour, 0, clock

    def channel_id(self, channel: str) -> str | None:
        return channel

    def find_posted(self, channel: str, uids: set[str], oldest: float) -> dict[str, Receipt]:
        return {}

    def find_events(
        self, channel: str, event_type: str, oldest: float
    ) -> list[tuple[dict[str, Any], Receipt]]:
        return []

    def update(self, channel: str, ts: str, message: Message) -> None:
        print(f"(updated {ts})", file=self.out, flush=True)

    def find_in_thread(self, channel: str, thread_ts: str, uids: set[str]) -> dict[str, Receipt]:
        return {}

    def post(self, channel: str, message: Message, *, label: str = "") -> Receipt:
        self.count += 1
        print(
            format_message(message, colour=self.colour, channel=channel), file=self.out, flush=True
        )
        return Receipt(channel, f"{self.clock().timestamp():.6f}")


def run_demo(
    *, interval: float, cycles: int, out: TextIO, clock: Callable[[], datetime], seed: int = 1
) -> int:
    """The clock is read only through `clock` (the CLI's), once per poll and per injection."""
    now = clock()
    rng = Random(seed)  # noqa: S311 - demo data, not security
    emu = Emulator(SessionStore(generate(3000, now=now, seed=seed, span=timedelta(days=3)))).start()
    jobs, runs = job_scenarios(now)  # failures no VM tells, jobs that stop running
    emu.job_list.add(jobs)
    emu.jobs.add(runs)
    state = Path(tempfile.mkdtemp(prefix="veeam-bot-demo-")) / "state.sqlite"
    settings = Settings(
        veeam=VeeamSettings(
            url=emu.url,
            username="demo",
            password=Secret("demo"),
            page_size=200,
            session_types=("ReplicaTaskSession", "BackupTaskSession"),
        ),
        poll=PollSettings(
            interval=timedelta(seconds=interval), initial_lookback=timedelta(hours=4)
        ),
        alerts=AlertSettings(channel="#veeam-alerts", max_posts_per_second=0),
        jobs=JobsSettings(refresh=timedelta(seconds=interval)),  # every poll reads the jobs
        state_path=str(state),
    )
    sink = ConsoleSink(out, out.isatty(), clock)
    print(
        f"Demo: EM emulator at {emu.url} with {len(emu.store)} task sessions; alerts of the "
        f"last 4 h first, then new failures every {interval:g}s. Ctrl-C stops.\n",
        file=out,
        flush=True,
    )
    em = EMClient(settings.veeam)
    store = Store(state, now=now)
    pipeline = Pipeline(settings, em, store, sink, Renderer())
    n = 0
    try:
        while True:
            started = time.monotonic()
            result = pipeline.poll_once(clock())
            print(
                f"{DIM if sink.colour else ''}poll: {result.summary(time.monotonic() - started)}"
                f"{RESET if sink.colour else ''}\n",
                file=out,
                flush=True,
            )
            n += 1
            if cycles and n >= cycles:
                break
            time.sleep(interval)
            if n == 1:  # someone disables a job's schedule: the next poll says so
                emu.job_list.change(DISABLED_JOB_UID, schedule_enabled=False)
            inject_failures(emu.store, clock(), rng)
    except KeyboardInterrupt:
        print("\nstopped", file=out)
    finally:
        em.close()
        store.close()
        emu.stop()
    print(f"The demo's state file: {state} (sqlite3 {state} .tables)", file=out, flush=True)
    return 0
