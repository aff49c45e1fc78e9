"""`make demo`: the real pipeline against an in-process emulator, printing alerts to the console.

No tokens, no configuration: the emulator plays Enterprise Manager, new failures are injected
every few seconds, and a console sink stands in for Slack.
"""

from __future__ import annotations

import re
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import TextIO

from bot.emulator.data import SessionStore, generate, inject_failures
from bot.emulator.server import Emulator
from bot.pipeline import Pipeline
from bot.render import Message, Renderer
from bot.settings import AlertSettings, PollSettings, Secret, Settings, VeeamSettings
from bot.slack import Receipt
from bot.store import Store
from bot.veeam.client import EMClient

ANSI = {"#E01E5A": "\033[1;31m", "#ECB22E": "\033[1;33m", "#2EB67D": "\033[1;32m"}
RESET, DIM = "\033[0m", "\033[2m"
EMOJI_CHARS = {":red_circle:": "🔴", ":large_yellow_circle:": "🟡", ":large_green_circle:": "🟢"}
_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")


def unslack(text: str) -> str:
    """mrkdwn → readable terminal text: dates to their fallback, entities back to characters."""
    text = _DATE.sub(r"\1", text)
    for code, char in EMOJI_CHARS.items():
        text = text.replace(code, char)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("*", "")


class ConsoleSink:
    """A Notifier that prints each alert readably instead of posting it."""

    def __init__(self, out: TextIO, colour: bool) -> None:
        self.out, self.colour, self.count = out, colour, 0

    def channel_id(self, channel: str) -> str | None:
        return channel

    def find_posted(self, channel: str, uids: set[str], oldest: float) -> dict[str, Receipt]:
        return {}

    def post(self, channel: str, message: Message, *, label: str = "") -> Receipt:
        self.count += 1
        att = message.attachments[0] if message.attachments else {}
        tint = ANSI.get(att.get("color", ""), "") if self.colour else ""
        end, dim = (RESET, DIM) if self.colour else ("", "")
        bar = f"{tint}┃{end} "
        title = unslack(message.blocks[0]["text"]["text"])
        lines = [f"{tint}{title}{end}   {dim}→ {channel}{end}"]
        for block in att.get("blocks", []):
            if block["type"] == "section":
                lines += [bar + ln for ln in unslack(block["text"]["text"]).splitlines()]
            elif block["type"] == "context":
                lines.append(bar + dim + unslack(block["elements"][0]["text"]) + end)
        print("\n".join(lines) + "\n", file=self.out, flush=True)
        return Receipt(channel, f"{time.time():.6f}")


def run_demo(*, interval: float, cycles: int, out: TextIO, seed: int = 1) -> int:
    now = datetime.now(UTC)
    rng = Random(seed)  # noqa: S311 - demo data, not security
    emu = Emulator(SessionStore(generate(3000, now=now, seed=seed, span=timedelta(days=3)))).start()
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
        state_path=str(state),
    )
    sink = ConsoleSink(out, colour=out.isatty())
    print(f"Demo: EM emulator at {emu.url} with {len(emu.store)} task sessions; alerts of the "
          f"last 4 h first, then new failures every {interval:g}s. Ctrl-C stops.\n",
          file=out, flush=True)  # fmt: skip
    em = EMClient(settings.veeam)
    store = Store(state, now=now)
    pipeline = Pipeline(settings, em, store, sink, Renderer())
    n = 0
    try:
        while True:
            started = time.monotonic()
            result = pipeline.poll_once(datetime.now(UTC))
            print(f"{DIM if sink.colour else ''}poll: {result.summary(time.monotonic() - started)}"
                  f"{RESET if sink.colour else ''}\n", file=out, flush=True)  # fmt: skip
            n += 1
            if cycles and n >= cycles:
                break
            time.sleep(interval)
            inject_failures(emu.store, datetime.now(UTC), rng)
    except KeyboardInterrupt:
        print("\nstopped", file=out)
    finally:
        em.close()
        store.close()
        emu.stop()
    return 0
