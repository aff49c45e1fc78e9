"""Self-monitoring and several Enterprise Managers, over real HTTP to emulators and the fake
Slack. Time is passed in where the test decides it; `run` is used where the scheduler's
own workers are what is tested."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.alerts.source import SOURCE_EVENT, Step, step
from bot.app import Services
from bot.config.load import load_settings
from bot.config.settings import AlertSettings, Secret, Settings, SlackSettings
from bot.emulator.data import SessionStore
from bot.emulator.server import Emulator
from tests.conftest import veeam_settings
from tests.fake_slack import TOKEN, FakeSlack
from tests.helpers import bot_env, free_port, job_run, run_bot, start_bot

MIN = timedelta(minutes=1)
T0 = datetime(2026, 11, 20, 12, 0).astimezone()
AFTER = timedelta(minutes=15)


@pytest.mark.parametrize(
    ("state", "error", "minutes", "action", "keeps"),
    [
        (None, "", 0, "none", None),  # fine, and nothing to tell
        (None, "down", 0, "none", {"since": 0.0, "error": "down"}),  # first failure: note it
        ({"since": 0.0, "error": "a"}, "b", 14, "none", {"since": 0.0, "error": "b"}),
        ({"since": 0.0, "error": "a"}, "b", 15, "post", {"since": 0.0, "error": "b"}),
        ({"since": 0.0, "error": "a", "ts": "1.0"}, "b", 60, "none", {"ts": "1.0"}),  # once
        ({"since": 0.0, "error": "a"}, "", 10, "forget", None),  # a blip nobody was told of
        ({"since": 0.0, "error": "a", "ts": "1.0"}, "", 30, "back", {"back_at": 1800.0}),
        # it came back while "back" could not be told: that comes first, then a new outage
        ({"since": 0.0, "error": "a", "ts": "1.0", "back_at": 60.0}, "c", 2, "back", {}),
    ],
)
def test_step(
    state: dict[str, Any] | None, error: str, minutes: int, action: str, keeps: dict[str, Any]
) -> None:
    base = T0.timestamp()
    if state is not None:
        state = {k: v + base if k in ("since", "back_at") else v for k, v in state.items()}
    got: Step = step(state, error, T0 + minutes * MIN, AFTER)
    assert got.action == action
    if keeps is None:
        assert got.state is None
    else:
        assert got.state is not None
        for k, v in keeps.items():
            assert got.state[k] == (v + base if k in ("since", "back_at") else v)


def settings_of(tmp: Path, slack: FakeSlack, *servers: Any, **alerts: Any) -> Settings:
    return Settings(
        veeam=servers[0],
        servers=tuple(servers),
        alerts=AlertSettings(channel="#veeam-alerts", max_posts_per_second=0, **alerts),
        slack=SlackSettings(bot_token=Secret(TOKEN), api_url=slack.url),
        state_path=str(tmp / "state.sqlite"),
    )


@pytest.fixture
def services(em: Emulator, slack: FakeSlack, tmp_path: Path) -> Iterator[Services]:
    server = veeam_settings(em, attempts=1, timeout=timedelta(seconds=2))
    settings = settings_of(tmp_path, slack, server, backoff=timedelta(milliseconds=1))
    s = Services(settings, T0, threading.Event())
    yield s
    s.close()


def source_alerts(slack: FakeSlack, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
    return [
        m
        for m in slack.posted(channel)
        if (m.get("metadata") or {}).get("event_type") == SOURCE_EVENT
        and m.get("thread_ts", m["ts"]) == m["ts"]
    ]


def test_em_down_past_the_threshold_gives_one_alert_and_its_return_one_reply(
    services: Services, em: Emulator, slack: FakeSlack
) -> None:
    (label,) = services.pipelines
    port = int(em.url.rsplit(":", 1)[1])
    assert services.poll(label, T0).em_error == ""
    em.stop()
    for minutes in (5, 10, 14):  # down, but not for 15 minutes yet: nothing in Slack
        assert services.poll(label, T0 + minutes * MIN).em_error
    assert source_alerts(slack) == []
    for minutes in (16, 20, 40, 90):  # past the threshold: one alert, never one per poll
        services.poll(label, T0 + minutes * MIN)
    (alert,) = source_alerts(slack)
    text = str(alert["blocks"])
    assert f"Enterprise Manager {label} unreachable since" in text
    assert "cannot reach EM" in text
    assert slack.thread(alert["ts"]) == []

    back = Emulator(SessionStore([]), port=port).start()
    try:
        for minutes in (95, 100):
            assert services.poll(label, T0 + minutes * MIN).em_error == ""
    finally:
        back.stop()
    (reply,) = slack.thread(alert["ts"])
    assert "answers again" in reply["text"] and "down for 1h 30m" in reply["text"]
    (update,) = [u for u in slack.updates if u[1] == alert["ts"]]
    assert "✅" in str(update[2]["blocks"]) and "unreachable from" in str(update[2]["blocks"])
    assert len(source_alerts(slack)) == 1


def test_slack_down_keeps_the_alerts_pending_and_says_so(
    services: Services, em: Emulator, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    (label,) = services.pipelines
    job_run(em, T0, [("sql01", "Failed", "disk full")])
    slack.fail_next.extend([503] * 10)
    caplog.set_level(logging.INFO, logger="bot")
    result = services.poll(label, T0)
    assert result.pending == 1 and "503" in result.slack_error
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("poll "))
    assert "outcome=slack_error" in line and "pending=1" in line
    samples = services.metrics.exposition().decode()
    assert 'veeam_bot_slack_errors_total{code="fatal_error"} 4.0' in samples
    assert f'veeam_bot_deliveries_pending{{server="{label}"}} 1.0' in samples
    assert slack.announced_uids() == []

    slack.fail_next.clear()
    assert services.poll(label, T0 + 5 * MIN).pending == 0
    assert len(slack.announced_uids()) == 1


def test_three_servers_one_down_one_slow(slack: FakeSlack, tmp_path: Path) -> None:
    """`run` with three Enterprise Managers: the healthy one's alert is in Slack before the
    slow one (5 s) has answered; the dead one raises its one self-monitoring alert; each
    alert names its server."""
    now = datetime.now().astimezone()
    fast = Emulator(SessionStore([])).start()
    slow = Emulator(SessionStore([]), delay=5.0).start()
    job_run(fast, now, [("fast-vm", "Failed", "disk full")])
    job_run(slow, now, [("slow-vm", "Failed", "quota")])
    toml = f"""
[poll]
interval = "1s"
[alerts]
source_down_after = "2s"
[veeam]
attempts = 1
timeout = "10s"
[[veeam.servers]]
name = "em-fast"
url = "{fast.url}"
[[veeam.servers]]
name = "em-dead"
url = "http://127.0.0.1:{free_port()}"
password_env = "DEAD_PASSWORD"
[[veeam.servers]]
name = "em-slow"
url = "{slow.url}"
[[alerts.routes]]
channel = "#ops"
servers = ["em-dead"]
"""
    env = bot_env(tmp_path, "", slack.url, toml)
    del env["VEEAM_URL"]  # the servers are listed; shared VEEAM_USERNAME/PASSWORD stay
    env["DEAD_PASSWORD"] = "other-secret"
    env["PORT"] = str(free_port())
    started = time.monotonic()
    proc = start_bot(env)
    arrived: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (
            len(arrived) < 2 or not source_alerts(slack, "C0OPS")
        ):
            for m in slack.posted():
                for vm in ("fast-vm", "slow-vm"):
                    if vm in str(m.get("blocks")) and vm not in arrived:
                        arrived[vm] = time.monotonic() - started
            time.sleep(0.05)
        time.sleep(3)  # more polls of the dead one: still one alert
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        fast.stop()
        slow.stop()
    assert set(arrived) == {"fast-vm", "slow-vm"}, err[-3000:]
    assert arrived["fast-vm"] < arrived["slow-vm"] - 3, arrived  # the slow one held up nothing
    (down,) = source_alerts(slack, "C0OPS")  # its route's channel, by its server
    assert source_alerts(slack) == []
    assert "Enterprise Manager em-dead unreachable since" in str(down["blocks"])
    posts = {vm: m for m in slack.posted() for vm in arrived if vm in str(m.get("blocks"))}
    assert "em-fast" in str(posts["fast-vm"]["blocks"])
    assert "em-slow" in str(posts["slow-vm"]["blocks"])
    assert "poll server=em-fast outcome=ok" in err
    assert "poll server=em-dead outcome=em_error" in err
    assert "other-secret" not in err


def test_servers_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text(
        """
[veeam]
session_types = ["ReplicaTaskSession", "BackupTaskSession"]
[[veeam.servers]]
name = "em1"
url = "https://em1.corp:9398/api"
username_env = "EM1_USER"
password_env = "EM1_PASSWORD"
[[veeam.servers]]
name = "em2"
url = "https://em2.corp:9398"
username = "svc"
format = "json"
"""
    )
    env = {"BOT_CONFIG": str(cfg), "EM1_USER": "u1", "EM1_PASSWORD": "p1", "VEEAM_PASSWORD": "p"}
    s = load_settings(env, require=("veeam",))
    em1, em2 = s.servers
    assert (em1.server, em1.url, em1.username, em1.password.value) == (
        "em1",
        "https://em1.corp:9398",
        "u1",
        "p1",
    )
    assert (em2.username, em2.password.value, em2.format) == ("svc", "p", "json")
    assert em2.session_types == ("ReplicaTaskSession", "BackupTaskSession")
    assert s.many and s.veeam == em1 and "p1" not in repr(s)


@pytest.mark.parametrize(
    ("entries", "env", "problem"),
    [
        ('name = "em1"\nurl = "https://x"', {}, "password_env is required (or VEEAM_PASSWORD"),
        (
            'name = "em1"\nurl = "https://x"\npassword_env = "EM1_PW"',
            {"VEEAM_USERNAME": "u"},
            "EM1_PW: not set (password of Enterprise Manager em1)",
        ),
        ('name = "bad name"\nurl = "https://x"', {}, "name must be"),
        ('name = "em1"', {"VEEAM_USERNAME": "u", "VEEAM_PASSWORD": "p"}, "url is required"),
        ('name = "em1"\nurl = "https://x"\ncolour = 1', {}, "[[veeam.servers]] em1 colour"),
        (
            'name = "em1"\nurl = "https://x"',
            {"VEEAM_URL": "https://y", "VEEAM_USERNAME": "u", "VEEAM_PASSWORD": "p"},
            "VEEAM_URL (or [veeam] url): set, but [[veeam.servers]]",
        ),
    ],
)
def test_servers_settings_errors(
    tmp_path: Path, entries: str, env: dict[str, str], problem: str
) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text(f"[[veeam.servers]]\n{entries}\n")
    with pytest.raises(Exception, match="invalid configuration") as exc:
        load_settings({"BOT_CONFIG": str(cfg), **env})
    assert problem in str(exc.value)


def test_pipelines_keep_their_checkpoints_apart(slack: FakeSlack, tmp_path: Path) -> None:
    """Two servers in one store: each has its own checkpoint and pending rows; the same job
    and VM on both are two problems, and each alert names its server."""
    a, b = Emulator(SessionStore([])).start(), Emulator(SessionStore([])).start()
    try:
        job_run(a, T0, [("vm1", "Failed", "x")])
        job_run(b, T0, [("vm1", "Failed", "x")])
        servers = [
            replace(veeam_settings(a), server="em-a"),
            replace(veeam_settings(b), server="em-b"),
        ]
        svc = Services(settings_of(tmp_path, slack, *servers), T0, threading.Event())
        try:
            svc.poll_all(T0)
            svc.poll_all(T0 + 5 * MIN)
            cps = {k: p.checkpoints() for k, p in svc.pipelines.items()}
            assert cps["em-a"][0] is not None and cps["em-b"][0] is not None
            assert svc.store.open_problems_by_em() == {"em-a": 1, "em-b": 1}
        finally:
            svc.close()
    finally:
        a.stop()
        b.stop()
    heads = sorted(str(m["blocks"][0]) for m in slack.posted())
    assert len(heads) == 2 and "em-a" in heads[0] and "em-b" in heads[1]


def test_query_and_digest_name_the_server(tmp_path: Path) -> None:
    """`query` asks every server and names each row's; `em:` narrows it; the digest shows
    jobs as "em-a · Job"."""
    now = datetime.now().astimezone()
    a, b = Emulator(SessionStore([])).start(), Emulator(SessionStore([])).start()
    try:
        job_run(a, now, [("vm-a", "Failed", "x")])
        job_run(b, now, [("vm-b", "Warning", "y")], job="Backup Job 7")
        toml = f"""
[[veeam.servers]]
name = "em-a"
url = "{a.url}"
[[veeam.servers]]
name = "em-b"
url = "{b.url}"
"""
        env = bot_env(tmp_path, "", "", toml)
        del env["VEEAM_URL"]
        out = run_bot(env, "query", "--json", "failed", "warning")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert sorted((r["em"], r["vm"]) for r in rows) == [("em-a", "vm-a"), ("em-b", "vm-b")]
        table = run_bot(env, "query", "warning", "em:em-b").stdout
        assert table.splitlines()[0].startswith("EM ") and "vm-b" in table and "vm-a" not in table
        digest = run_bot(env, "digest", "--dry-run")
        assert digest.returncode == 0, digest.stderr
        assert "em-a · Replication Job 2" in digest.stdout
        assert "em-b · Backup Job 7" in digest.stdout
    finally:
        a.stop()
        b.stop()


def test_digest_names_an_enterprise_manager_that_is_down(slack: FakeSlack, tmp_path: Path) -> None:
    """One server down: the digest still counts the other's sessions and says which one is
    missing, and since when when self-monitoring knows."""
    a, b = Emulator(SessionStore([])).start(), Emulator(SessionStore([])).start()
    try:
        job_run(a, T0, [("vm-a", "Failed", "x")])
        servers = [
            replace(veeam_settings(a), server="em-a"),
            replace(veeam_settings(b, attempts=1), server="em-b"),
        ]
        svc = Services(settings_of(tmp_path, slack, *servers), T0, threading.Event())
        try:
            b.stop()
            text = str(svc.digest.build(T0 + MIN).blocks)
            assert "em-a · Replication Job 2" in text
            assert "*Enterprise Manager em-b* did not answer for this digest: cannot reach" in text
            for minutes in (0, 20):  # down past source_down_after: self-monitoring knows
                svc.poll("em-b", T0 + minutes * MIN)
            text = str(svc.digest.build(T0 + 21 * MIN).blocks)
            assert "*Enterprise Manager em-b* unreachable since <!date^" in text
        finally:
            svc.close()
    finally:
        a.stop()
        b.stop()


def test_moving_to_a_server_list_loses_no_pending_alert(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    """A bot of one server (`VEEAM_URL`) leaves alerts pending (Slack was down) and is then
    given `[[veeam.servers]]`: the first server delivers them, once; what was announced is
    not announced again."""
    job_run(em, T0, [("sent", "Failed", "x")], job="Job 1")
    one = Services(settings_of(tmp_path, slack, veeam_settings(em)), T0, threading.Event())
    try:
        one.poll_all(T0)
        job_run(em, T0 + 5 * MIN, [("stuck", "Failed", "y")], job="Job 2", ended_ago=MIN)
        slack.fail_next.extend([400] * 1)  # refused once: it stays pending
        assert one.poll_all(T0 + 5 * MIN)[next(iter(one.pipelines))].pending == 1
    finally:
        one.close()
    other = Emulator(SessionStore([])).start()
    servers = [
        replace(veeam_settings(em), server="em-a"),
        replace(veeam_settings(other), server="em-b"),
    ]
    many = Services(settings_of(tmp_path, slack, *servers), T0, threading.Event())
    try:
        results = many.poll_all(T0 + 10 * MIN)
        assert results["em-a"].pending == 0 and results["em-b"].pending == 0
    finally:
        many.close()
        other.stop()
    posted = [m["text"] for m in slack.posted() if "Failed" in m["text"]]
    assert sum("sent" in t for t in posted) == 1 and sum("stuck" in t for t in posted) == 1
