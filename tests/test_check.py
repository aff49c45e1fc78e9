"""`python -m bot check` against the emulator and the fake Slack: all ✓ when all is well, and
one ✗ with its fix for each thing a new install gets wrong."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bot.emulator.server import Emulator
from tests.fake_slack import APP_TOKEN, CONFIG_TOKEN, FakeSlack
from tests.helpers import bot_env, run_bot


def run_check(env: dict[str, str]) -> tuple[int, list[str], str]:
    proc = run_bot(env, "check", timeout=60)
    marks = [line for line in proc.stdout.splitlines() if line[:1] in "✓✗·"]
    return proc.returncode, marks, proc.stdout


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("✗")]


@pytest.fixture
def env(em: Emulator, slack: FakeSlack, tmp_path: Path) -> dict[str, str]:
    e = bot_env(tmp_path, em.url, slack.url, '[veeam]\nattempts = 1\ntimeout = "3s"\n')
    e["PORT"] = "0"
    return e


def test_all_good(env: dict[str, str], em: Emulator, slack: FakeSlack) -> None:
    code, lines, out = run_check(env)
    assert code == 0, out
    assert failures(lines) == []
    steps = "\n".join(lines)
    for words in (
        "✓ configuration",
        "✓ templates",
        "✓ state store",
        "logon: logged on to",
        "one-row query: ReplicaTaskSession answered",
        "job sessions: ReplicaJobSession answered",
        "jobs: Job answered",
        "logout: logon session ended",
        "✓ Slack auth.test",
        "✓ alert channel #veeam-alerts: bot is a member of #veeam-alerts (C0ALERTS)",
        "✓ alert channel history",
        "✓ /veeam over HTTP",
    ):
        assert words in steps, steps
    assert "all steps passed" in out
    # each one-row query asked for one row (task sessions, job sessions, jobs), and the
    # session was ended
    assert [q.params["type"] for q in em.queries()] == [
        "ReplicaTaskSession",
        "ReplicaJobSession",
        "Job",
    ]
    assert {q.params["pageSize"] for q in em.queries()} == {"1"}
    assert em.tokens == {}
    assert not [c for c in slack.calls if c[0] == "chat.postMessage"], "check posts nothing"


def test_bad_password(env: dict[str, str]) -> None:
    env["VEEAM_PASSWORD"] = "wrong"
    code, lines, out = run_check(env)
    (bad,) = failures(lines)
    assert code == 1 and "logon" in bad and "wrong username or password" in bad
    assert "fix: check VEEAM_USERNAME and VEEAM_PASSWORD" in out
    assert "Portal User" in out
    assert "wrong" not in out.replace("wrong username", "")  # the password is not shown


def test_unreachable_em(env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["VEEAM_URL"] = f"http://127.0.0.1:{port}"
    code, lines, out = run_check(env)
    (bad,) = failures(lines)
    assert code == 1 and "cannot reach EM" in bad
    assert "fix: check the URL (EM's REST API listens on port 9398)" in out


def test_channel_not_joined(env: dict[str, str], slack: FakeSlack) -> None:
    slack.members.discard("C0ALERTS")
    code, lines, out = run_check(env)
    (bad,) = failures(lines)
    assert code == 1 and "bot is not in #veeam-alerts" in bad
    assert "fix: /invite @veeam in #veeam-alerts" in out
    assert "· alert channel history: skipped" in out


def test_history_scope_missing(env: dict[str, str], slack: FakeSlack) -> None:
    slack.scopes.discard("channels:history")
    code, lines, out = run_check(env)
    (bad,) = failures(lines)
    assert code == 1 and "missing_scope" in bad and "channels:history" in out


def test_rejected_bot_token(env: dict[str, str]) -> None:
    env["SLACK_BOT_TOKEN"] = "xoxb-revoked"
    code, lines, out = run_check(env)
    (bad,) = failures(lines)
    assert code == 1 and "Slack rejected the bot token: invalid_auth" in bad
    assert "fix: SLACK_BOT_TOKEN is wrong or revoked" in out
    assert "xoxb-revoked" not in out


def test_rejected_app_token(env: dict[str, str]) -> None:
    env["SLACK_APP_TOKEN"] = "xapp-wrong"
    code, lines, _out = run_check(env)
    (bad,) = failures(lines)
    assert code == 1 and "SLACK_APP_TOKEN: Slack rejected it (invalid_auth)" in bad
    env["SLACK_APP_TOKEN"] = APP_TOKEN
    code, lines, out = run_check(env)
    assert code == 0 and "✓ /veeam over Socket Mode" in out


def test_digest_channel_checked_too(env: dict[str, str], slack: FakeSlack) -> None:
    env["SLACK_DIGEST_CHANNEL"] = "#veeam-digest"
    slack.members.discard("C0DIGEST")
    _code, lines, _ = run_check(env)
    (bad,) = failures(lines)
    assert "digest channel #veeam-digest" in bad and "bot is not in #veeam-digest" in bad


def test_invalid_config_is_exit_78(env: dict[str, str]) -> None:
    Path(env["BOT_CONFIG"]).write_text('[poll]\ninterval = "often"\n')
    code, _lines, out = run_check(env)
    assert code == 78
    assert "✗ configuration: [poll] interval" in out


def test_each_enterprise_manager_is_checked(em: Emulator, slack: FakeSlack, tmp_path: Path) -> None:
    toml = f"""
[veeam]
attempts = 1
[[veeam.servers]]
name = "em-good"
url = "{em.url}"
[[veeam.servers]]
name = "em-bad"
url = "{em.url}"
password_env = "EM_BAD_PASSWORD"
"""
    env = bot_env(tmp_path, "", slack.url, toml)
    del env["VEEAM_URL"]
    env.update(PORT="0", EM_BAD_PASSWORD="not-the-password")
    code, lines, out = run_check(env)
    (bad,) = failures(lines)
    assert code == 1 and "Enterprise Manager em-bad logon" in bad
    assert "fix: check VEEAM_USERNAME and EM_BAD_PASSWORD" in out
    assert "✓ Enterprise Manager em-good one-row query" in out
    assert "not-the-password" not in out


def test_every_route_channel_is_checked(em: Emulator, slack: FakeSlack, tmp_path: Path) -> None:
    slack.members.discard("C0OPS")  # the bot was never invited to #ops
    toml = (
        '[veeam]\nattempts = 1\n[[alerts.routes]]\nchannel = "#ops"\njobs = ["SQL*"]\n'
        '[[alerts.routes]]\nchannel = "C0DIGEST"\n[[alerts.routes]]\nchannel = "#nowhere"\n'
    )
    env = {**bot_env(tmp_path, em.url, slack.url, toml), "PORT": "0"}
    code, lines, out = run_check(env)
    assert code == 1, out
    steps = "\n".join(lines)
    assert "✗ route #1 channel #ops" in steps  # not a member
    assert "✓ route #2 channel C0DIGEST" in steps
    assert "✗ route #3 channel #nowhere: not found" in steps


def test_the_home_tab_event_is_checked_when_the_manifest_can_be_read(
    env: dict[str, str], slack: FakeSlack
) -> None:
    code, lines, out = run_check(env)
    assert "· Home tab event (app_home_opened): not checked: set SLACK_APP_CONFIG_TOKEN" in out
    env.update(SLACK_APP_CONFIG_TOKEN=CONFIG_TOKEN, SLACK_APP_ID="A1")
    code, lines, out = run_check(env)
    assert "✓ Home tab event (app_home_opened)" in "\n".join(lines), out
    slack.manifest["settings"]["event_subscriptions"]["bot_events"] = []
    code, lines, out = run_check(env)
    assert code == 1
    assert "✗ Home tab event (app_home_opened): the app lacks the app_home_opened bot event" in out
    assert "Subscribe to bot events" in out
