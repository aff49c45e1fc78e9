"""20 concurrent `/veeam` commands while EM takes 5 s to answer: ack latency p50/p99 and
whether every answer arrives on its response_url.

    .venv/bin/python bench/slash_bench.py [COMMANDS] [EM_DELAY_S]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from bot.config.render import Renderer
from bot.config.settings import AlertSettings, Secret, Settings, SlackSettings, VeeamSettings
from bot.emulator.data import SessionStore, generate
from bot.emulator.server import Emulator
from bot.slack.client import web_client
from bot.slack.surface import Surface, bolt_app
from bot.slash.commands import SlashDeps, SlashPool, register
from bot.store.store import Store
from bot.veeam.client import EMClient
from tests.fake_slack import TOKEN, FakeSlack, signed_command

SECRET = "bench-secret"


def signed(url: str, text: str, hook: str) -> urllib.request.Request:
    fields = {"text": text, "user_id": "U1", "channel_id": "C1", "response_url": hook}
    return signed_command(url, SECRET, fields)


def main(n: int, delay: float) -> None:
    now = datetime.now(UTC)
    emu = Emulator(SessionStore(generate(2000, now=now)), delay=delay).start()
    slack = FakeSlack().start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            veeam=VeeamSettings(url=emu.url, username="demo", password=Secret("demo")),
            alerts=AlertSettings(channel="C0ALERTS"),
            slack=SlackSettings(
                bot_token=Secret(TOKEN), signing_secret=Secret(SECRET), api_url=slack.url
            ),
            state_path=str(Path(tmp) / "s.sqlite"),
            port=0,
        )
        em, store = EMClient(settings.veeam), Store(settings.state_path, now=now)
        pool = SlashPool(settings.slash.workers)
        app = bolt_app(settings, web_client(TOKEN, slack.url))
        register(app, SlashDeps(settings, em, store, Renderer(), pool, lambda: datetime.now(UTC)))
        surface = Surface(settings, app, host="127.0.0.1")
        surface.start()
        url = f"http://127.0.0.1:{surface.port}/slack/events"
        acks: list[float] = []
        statuses: list[int] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            req = signed(url, "failed since:1d limit:5", slack.hook_base + f"b{i}")
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
                with lock:
                    acks.append((time.perf_counter() - t) * 1000)
                    statuses.append(resp.status)

        started = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 120
        while len(slack.hooks) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        done = time.monotonic() - started
        q = statistics.quantiles(acks, n=100, method="inclusive")
        print(
            f"{n} concurrent /veeam, EM answering in {delay:g}s: statuses {sorted(set(statuses))}; "
            f"ack p50 {statistics.median(acks):.0f} ms, p99 {q[98]:.0f} ms, "
            f"max {max(acks):.0f} ms; "
            f"answers delivered {len({h for h, _ in slack.hooks})}/{n}, last after {done:.1f}s "
            f"({settings.slash.workers} query workers)"
        )
        surface.stop()
        pool.shutdown(wait=True)
        em.close()
        store.close()
    slack.stop()
    emu.stop()


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 20,
        float(sys.argv[2]) if len(sys.argv) > 2 else 5,
    )
