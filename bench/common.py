"""Shared helpers: start the emulator and the fake Slack as their own processes.

Importing this module compiles `bot/` to bytecode first. An installed bot has its `.pyc`
files; with PYTHONDONTWRITEBYTECODE set (as on some CI machines) every bot process started
by a benchmark would otherwise compile the sources again, about 40-80 ms per start.
"""

from __future__ import annotations

import compileall
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
compileall.compile_dir(ROOT / "bot", quiet=1)

from bot.alerts.pipeline import Pipeline  # noqa: E402 - after the bytecode is written
from bot.config.render import Renderer  # noqa: E402
from bot.config.settings import (  # noqa: E402
    AlertSettings,
    JobsSettings,
    PollSettings,
    Secret,
    Settings,
    SlackSettings,
    VeeamSettings,
)
from bot.slack.client import Pacer, web_client  # noqa: E402
from bot.slack.web import SlackNotifier  # noqa: E402
from bot.store.store import Store  # noqa: E402
from bot.veeam.client import EMClient  # noqa: E402

BENCH_TOKEN = "xoxb-test-token"


def bench_pipeline(
    em_url: str,
    slack_url: str,
    state: Path,
    now: datetime,
    poll: PollSettings,
    *,
    jobs: bool = True,
    **alerts: Any,
) -> tuple[Pipeline, Store, EMClient]:
    """The real pipeline against an emulator and the fake Slack (pacing off), its state in
    `state`: (pipeline, its store, its EM client). `jobs=False`: as before job sessions and
    the job inventory were read."""
    settings = Settings(
        veeam=VeeamSettings(
            url=em_url, username="demo", password=Secret("demo"), job_sessions=jobs
        ),
        jobs=JobsSettings(refresh=timedelta(minutes=15) if jobs else timedelta(0)),
        poll=poll,
        alerts=AlertSettings(channel="C0ALERTS", max_posts_per_second=0, **alerts),
        slack=SlackSettings(bot_token=Secret(BENCH_TOKEN), api_url=slack_url),
        state_path=str(state),
    )
    store = Store(settings.state_path, now=now)
    em = EMClient(settings.veeam)
    notifier = SlackNotifier(web_client(BENCH_TOKEN, slack_url), Pacer(0, 1))
    return Pipeline(settings, em, store, notifier, Renderer()), store, em


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def start_emulator(
    sessions: int, span: str = "24h", failure_rate: float = 0.1, *extra: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "bot",
            "emulator",
            "--port",
            str(port),
            "--sessions",
            str(sessions),
            "--span",
            span,
            "--failure-rate",
            str(failure_rate),
            *extra,
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def start_fake_slack() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [PY, "-m", "tests.fake_slack", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def bot_env(em_url: str, slack_url: str, state: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "VEEAM_"))}
    env.update(
        VEEAM_URL=em_url,
        VEEAM_USERNAME="demo",
        VEEAM_PASSWORD="demo",
        SLACK_BOT_TOKEN="xoxb-test-token",
        SLACK_API_URL=slack_url,
        SLACK_ALERT_CHANNEL="C0ALERTS",
        BOT_CONFIG=str(config),
        BOT_STATE_PATH=str(state),
        LOG_LEVEL="WARNING",
    )
    return env


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[int, str, float, float]:
    """Run a child; return (exit code, stdout, wall seconds, peak RSS in MB)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, wall, usage.ru_maxrss / 1024
