"""Helpers to build emulator data and wire the real pipeline to the fakes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from random import Random

from bot.alerts.pipeline import Pipeline
from bot.config.render import MAX_BLOCKS, MAX_HEADER, MAX_SECTION, Message, Renderer
from bot.config.settings import AlertSettings, JobsSettings, Secret, Settings, SlackSettings
from bot.emulator.data import SERVERS, EmSession, Job, Maker
from bot.emulator.jobs import EmJobSession
from bot.emulator.server import Emulator
from bot.models import TaskSession
from bot.slack.client import Pacer, web_client
from bot.slack.web import SlackNotifier
from bot.store.store import Store
from bot.veeam.client import EMClient
from tests.conftest import veeam_settings
from tests.fake_slack import TOKEN, FakeSlack

_rng = Random(5)
M = timedelta(minutes=1)


def job_run(
    emu: Emulator,
    now: datetime,
    outcomes: list[tuple[str, str, str]],
    *,
    job: str = "Replication Job 2",
    ended_ago: timedelta = timedelta(minutes=5),
    kind: str = "Replica",
) -> list[EmSession]:
    """Add one completed job run whose tasks all ended `ended_ago` before `now`."""
    spec = Job(job, kind, SERVERS[0], tuple(v for v, _, _ in outcomes), "job-" + job, "srv-0")
    run = Maker(_rng, now + timedelta(days=1)).run(
        spec, now - ended_ago - timedelta(hours=1), outcomes
    )
    end = now - ended_ago
    run = [
        replace(s, ended=end - timedelta(seconds=i), state="Completed") for i, s in enumerate(run)
    ]
    emu.store.add(run)
    return run


def job_only(now: datetime, **kw: object) -> EmJobSession:
    """A job session with no task session of its own (a file share job failing)."""
    base: dict[str, object] = {
        "uid": "urn:veeam:BackupJobSession:0badc0de-0000-4000-8000-00000000f11e",
        "type": "BackupJobSession",
        "name": "Projects share@2026-11-20 01:00:00",
        "job": "Projects share",
        "job_uid": "urn:veeam:Job:0badc0de-0000-4000-8000-0000000000f1",
        "job_type": "NasBackup",
        "server": "vbr01.example.local",
        "server_uid": "urn:veeam:BackupServer:0badc0de-0000-4000-8000-0000000000b1",
        "state": "Stopped",
        "result": "Failed",
        "failure": "Failed to connect to \\\\nas01\\projects <!channel> & co",
        "is_retry": False,
        "progress": 0,
        "created": now - 20 * M,
        "ended": now - 19 * M,
    }
    base.update(kw)
    return EmJobSession(**base)  # type: ignore[arg-type]


def settings_for(
    emu: Emulator, slack: FakeSlack, tmp: Path, *, inventory: bool = False, **alerts: object
) -> Settings:
    """Settings of a test bot. The job inventory (and its stale alerts) is off unless a
    test is about it: the scenarios' jobs have a day's runs, and would be told stale."""
    return Settings(
        veeam=veeam_settings(emu),
        alerts=AlertSettings(channel="#veeam-alerts", max_posts_per_second=0, **alerts),  # type: ignore[arg-type]
        jobs=JobsSettings(refresh=timedelta(minutes=15) if inventory else timedelta(0)),
        slack=SlackSettings(bot_token=Secret(TOKEN), api_url=slack.url),
        state_path=str(tmp / "state.sqlite"),
    )


class Rig:
    """The real pipeline with real parts: EM client → emulator, WebClient → fake Slack."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self.settings = settings
        self.em = EMClient(settings.veeam)
        self.store = Store(settings.state_path, now=now)
        client = web_client(TOKEN, settings.slack.api_url, timeout=5, read_backoff=0.01)
        self.notifier = SlackNotifier(client, Pacer(0, 1))
        self.pipeline = Pipeline(
            settings, self.em, self.store, self.notifier, Renderer(), retries=2, backoff=0.01
        )

    def em_session(self, uid: str) -> TaskSession:
        """A session as the bot reads it from EM."""
        (s,) = self.em.query("ReplicaTaskSession", f'UID=="{uid}"')
        return s

    def close(self) -> None:
        self.em.close()
        self.store.close()


ROOT = Path(__file__).resolve().parents[1]


def bot_env(tmp: Path, em_url: str, slack_url: str = "", toml: str = "") -> dict[str, str]:
    """A clean environment for `python -m bot …` pointed at the fakes, with its own config."""
    cfg = tmp / "bot.toml"
    cfg.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "VEEAM_", "BOT_"))}
    env.update(
        VEEAM_URL=em_url,
        VEEAM_USERNAME="demo",
        VEEAM_PASSWORD="demo",
        BOT_CONFIG=str(cfg),
        BOT_STATE_PATH=str(tmp / "state.sqlite"),
    )
    if slack_url:
        env.update(
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_API_URL=slack_url,
            SLACK_ALERT_CHANNEL="#veeam-alerts",
            SLACK_SIGNING_SECRET="test-signing-secret",
        )
    return env


def start_bot(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`python -m bot run` (or `args`) in the background, its stderr kept for the test."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *(args or ("run",))],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port() -> int:
    """A TCP port nothing listens on (for a server to bind, or a dead EM to point at)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_bot(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def limit_problems(message: Message) -> list[str]:
    """Every Slack limit this message breaks (empty when it is fine)."""
    problems = []
    blocks = message.all_blocks()
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks > {MAX_BLOCKS}")
    if not message.text.strip():
        problems.append("no fallback text")
    for b in blocks:
        if b["type"] == "section" and len(b["text"]["text"]) > MAX_SECTION:
            problems.append(f"section of {len(b['text']['text'])} chars")
        if b["type"] == "header" and len(b["text"]["text"]) > MAX_HEADER:
            problems.append(f"header of {len(b['text']['text'])} chars")
    return problems
