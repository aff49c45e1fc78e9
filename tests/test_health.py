"""/healthz: 200 while polls succeed, 503 with the reason when EM is gone, 200 when it is back."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import __version__
from bot.emulator.data import SessionStore
from bot.emulator.jobs import EmJob
from bot.emulator.server import Emulator
from bot.ops.health import health
from tests.fake_slack import APP_TOKEN, FakeSlack
from tests.helpers import bot_env, free_port, job_run, start_bot

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


@pytest.mark.parametrize("mode", ["http", "socket"])
def test_healthz_follows_em(slack: FakeSlack, tmp_path: Path, mode: str) -> None:
    """HTTP mode serves /healthz beside /slack/events on $PORT; Socket Mode on a small
    server of its own at `[http] port`."""
    em = Emulator(SessionStore([])).start()
    port = int(em.url.rsplit(":", 1)[1])
    http_port = free_port()
    toml = '[poll]\ninterval = "1s"\n[veeam]\nattempts = 1\ntimeout = "2s"\n'
    if mode == "socket":
        toml += f"[http]\nport = {http_port}\n"
    env = bot_env(tmp_path, em.url, slack.url, toml)
    if mode == "socket":
        env["SLACK_APP_TOKEN"] = APP_TOKEN  # no WebSocket here: it keeps retrying, polls go on
    else:
        env["PORT"] = str(http_port)
    proc = start_bot(env)
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


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, read with prometheus_client's own parser."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_in_a_scenario(slack: FakeSlack, tmp_path: Path) -> None:
    """A failure is announced, EM goes away: the counters and gauges say so, per server."""
    em = Emulator(SessionStore([])).start()
    now = datetime.now(UTC)
    job_run(em, now, [("sql01", "Failed", "disk full"), ("web01", "Warning", "slow")])
    em.job_list.add([EmJob("urn:veeam:Job:0badc0de-0000-4000-8000-0000000005ad", "Idle job",
                           "Replica", "VMware", "vbr01", "urn:veeam:BackupServer:1",
                           next_run=now - timedelta(hours=3))])  # fmt: skip
    http_port = free_port()
    toml = '[poll]\ninterval = "1s"\n[veeam]\nattempts = 2\nbackoff = "0s"\ntimeout = "2s"\n'
    env = {**bot_env(tmp_path, em.url, slack.url, toml), "PORT": str(http_port)}
    proc = start_bot(env)
    url = f"http://127.0.0.1:{http_port}/metrics"
    server = "127.0.0.1"
    try:
        wait_for(f"http://127.0.0.1:{http_port}/healthz", 200)
        first = metrics(url)
        assert value(first, "veeam_bot_info", version=__version__) == 1
        assert value(first, "veeam_bot_alerts_announced_total", server=server, result="Failed") == 1
        assert (
            value(first, "veeam_bot_alerts_announced_total", server=server, result="Warning") == 1
        )
        assert value(first, "veeam_bot_polls_total", server=server, outcome="ok") >= 1
        assert value(first, "veeam_bot_sessions_fetched_total", server=server) >= 2
        assert value(first, "veeam_bot_open_problems", server=server) == 2
        assert value(first, "veeam_bot_jobs_not_running", server=server, kind="stale") == 1
        assert ("veeam_bot_jobs_not_running", (("kind", "disabled"), ("server", server))) in first
        assert value(first, "veeam_bot_deliveries_pending", server=server) == 0
        assert value(first, "veeam_bot_em_request_seconds_count", server=server) >= 2
        assert value(first, "veeam_bot_last_success_timestamp_seconds", server=server) > (
            now.timestamp() - 60
        )
        em.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            later = metrics(url)
            if value(later, "veeam_bot_poll_errors_total", server=server, kind="em_unreachable"):
                break
            time.sleep(0.2)
        assert value(later, "veeam_bot_source_down", server=server) == 1
        assert value(later, "veeam_bot_retries_total", server=server) >= 1
        assert value(later, "veeam_bot_polls_total", server=server, outcome="em_error") >= 1
        assert value(later, "veeam_bot_alerts_announced_total", server=server, result="Failed") == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        em.stop()
