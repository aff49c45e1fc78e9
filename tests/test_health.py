"""/healthz: 200 while polls succeed, 503 with the reason when EM is gone, 200 when it is back."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.emulator.data import SessionStore
from bot.emulator.server import Emulator
from bot.health import health
from tests.fake_slack import FakeSlack
from tests.helpers import ROOT, bot_env

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("last_poll", "status", "words"),
    [
        (None, 503, "no successful poll yet"),
        ({"outcome": "EM error: down", "ok_at": None}, 503, "EM error: down"),
        ({"outcome": "ok", "ok_at": (T - 14 * 60 * timedelta(seconds=1)).timestamp()}, 200, "ok"),
        (
            {"outcome": "EM error: x", "ok_at": (T - timedelta(minutes=16)).timestamp()},
            503,
            "16 min",
        ),
    ],
)
def test_health(last_poll: dict[str, object] | None, status: int, words: str) -> None:
    got, body = health(last_poll, T, FIVE)
    assert got == status
    assert words in json.dumps(body)


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(url: str, status: int, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, object]] = (0, {})
    while time.monotonic() < deadline:
        try:
            last = get(url)
        except OSError:
            last = (0, {})
        if last[0] == status:
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"/healthz stayed {last}")


def test_healthz_follows_em_in_http_mode(slack: FakeSlack, tmp_path: Path) -> None:
    em = Emulator(SessionStore([])).start()
    port = int(em.url.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http_port = s.getsockname()[1]
    toml = '[poll]\ninterval = "1s"\n[veeam]\nattempts = 1\ntimeout = "2s"\n'
    env = bot_env(tmp_path, em.url, slack.url, toml)
    env["PORT"] = str(http_port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{http_port}/healthz"
    try:
        assert wait_for(url, 200)["status"] == "ok"
        em.stop()
        body = wait_for(url, 503)
        assert body["status"] == "failing" and "cannot reach EM" in str(body["reason"])
        em = Emulator(SessionStore([]), port=port).start()  # back, at the same address
        assert wait_for(url, 200)["last_outcome"] == "ok"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        em.stop()
