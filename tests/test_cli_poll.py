"""`python -m bot poll --once` and `run` as processes: exit codes, summary lines, SIGKILL safety."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.emulator.data import EmSession, SessionStore, generate, inject_failures
from bot.emulator.server import Emulator
from tests.fake_slack import TOKEN, FakeSlack
from tests.helpers import ROOT, bot_env, run_bot, start_bot


def history(n: int, *, seed: int) -> list[EmSession]:
    """N sessions over the last 20 h, a fifth of them Failed or Warning."""
    return generate(
        n,
        now=datetime.now(UTC),
        seed=seed,
        span=timedelta(hours=20),
        failure_rate=0.2,
        extras=False,
    )


@pytest.fixture
def em() -> Iterator[Emulator]:
    emu = Emulator(SessionStore(history(500, seed=21))).start()
    yield emu
    emu.stop()


def expected_uids(em: Emulator) -> set[str]:
    return {
        s.uid
        for s in em.store.all()
        if s.type == "ReplicaTaskSession"
        and s.state == "Completed"
        and s.result in ("Failed", "Warning")
    }


def env_for(em: Emulator, slack: FakeSlack, tmp: Path, extra_toml: str = "") -> dict[str, str]:
    toml = '[alerts]\nmax_posts_per_second = 0\nbackoff = "20ms"\nretries = 2\n' + extra_toml
    return bot_env(tmp, em.url, slack.url, toml)


def poll(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_bot(env, "poll", "--once")


def test_exit_0_announces_everything_once(em: Emulator, slack: FakeSlack, tmp_path: Path) -> None:
    env = env_for(em, slack, tmp_path)
    first = poll(env)
    assert first.returncode == 0, first.stderr
    expected = expected_uids(em)
    assert Counter(slack.announced_uids()) == Counter(expected)
    (line,) = first.stdout.splitlines()
    # the task sessions, and the job session of each run (told by its tasks: no message)
    runs = len({s.job_session_uid for s in em.store.all() if s.uid in set(expected)})
    assert line.startswith(
        f"fetched {len(expected) + runs}, new {len(expected)}, announced {len(expected)}, "
        "pending 0,"
    )
    second = poll(env)
    assert second.returncode == 0 and ", new 0, announced 0, pending 0," in second.stdout
    assert Counter(slack.announced_uids()) == Counter(expected)


def test_exit_2_when_slack_fails_then_delivered(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    env = env_for(em, slack, tmp_path)
    slack.fail_next = [503] * 3
    first = poll(env)
    assert first.returncode == 2
    assert "pending" in first.stdout
    (err,) = first.stderr.strip().splitlines()[-1:]
    assert err.startswith("error: ") and "still pending" in err and "HTTP 503" in err
    assert "Traceback" not in first.stderr
    second = poll(env)
    assert second.returncode == 0, second.stderr
    assert Counter(slack.announced_uids()) == Counter(expected_uids(em))


def test_exit_1_when_em_is_unreachable(em: Emulator, slack: FakeSlack, tmp_path: Path) -> None:
    env = env_for(em, slack, tmp_path)
    env["VEEAM_URL"] = "http://127.0.0.1:9"
    proc = poll(env)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: cannot reach EM at http://127.0.0.1:9")
    )
    assert "Traceback" not in proc.stderr


def test_sigkill_at_random_moments_never_loses_or_doubles(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    em.store.add(history(1500, seed=22))
    env = env_for(em, slack, tmp_path)
    slack.delay = 0.06  # a slow Slack: each post is stored, then answered 60 ms later
    rng = random.Random(1234)
    kills = runs = 0
    while kills < 12 and runs < 40:
        runs += 1
        for _ in range(4):  # new job runs with failures, so that every run has posts to make
            inject_failures(em.store, datetime.now(UTC), rng)
        slack.stored.clear()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "poll", "--once"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Kill at a random moment while Slack is receiving this run's posts: the message
        # stored but not answered, answered but not recorded, recorded but not committed…
        if slack.stored.wait(20):
            time.sleep(rng.uniform(0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 10, f"only {kills} of {runs} runs were killed while posting"
    slack.delay = 0
    final = poll(env)
    assert final.returncode == 0, final.stderr
    counts = Counter(slack.announced_uids())
    assert set(counts) == expected_uids(em)
    assert [uid for uid, n in counts.items() if n != 1] == []
    # The kills also hit thread replies (repeats, recoveries) and alert updates: none of
    # those is doubled either.
    replies = [m for thread in slack.replies.values() for m in thread]
    recoveries = Counter(
        m["metadata"]["event_payload"]["uid"]
        for m in replies
        if (m.get("metadata") or {}).get("event_type") == "veeam_recovery"
    )
    assert replies and recoveries and slack.updates
    assert [uid for uid, n in recoveries.items() if n != 1] == []


def test_run_polls_at_start_and_stops_on_sigterm(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    env = env_for(em, slack, tmp_path, '[poll]\ninterval = "1h"\n')
    env["PORT"] = "0"
    proc = start_bot(env)
    try:
        deadline = time.monotonic() + 30
        while len(slack.announced_uids()) < len(expected_uids(em)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if Counter(slack.announced_uids()) != Counter(expected_uids(em)):
            proc.kill()
            pytest.fail("run did not announce: " + proc.communicate(timeout=10)[1][-3000:])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err


def test_run_with_a_rejected_token_stops_with_one_line(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    env = env_for(em, slack, tmp_path)
    env["SLACK_BOT_TOKEN"] = "xoxb-revoked"
    proc = run_bot(env, "run", timeout=60)
    assert proc.returncode == 78
    assert "SLACK_BOT_TOKEN: Slack rejected it (invalid_auth)" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("app_token", "error"),
    [("xapp-revoked", "invalid_auth"), ("xoxb-a-bot-token", "not_allowed_token_type")],
)
def test_run_with_a_rejected_app_token_stops_with_one_line(
    em: Emulator, slack: FakeSlack, tmp_path: Path, app_token: str, error: str
) -> None:
    """Socket Mode with a token Slack refuses: /veeam would be dead, so `run` stops at once
    (exit 78) naming SLACK_APP_TOKEN, instead of retrying forever."""
    env = env_for(em, slack, tmp_path)
    env["SLACK_APP_TOKEN"] = app_token
    started = time.monotonic()
    proc = run_bot(env, "run", timeout=60)
    assert proc.returncode == 78, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "SLACK_APP_TOKEN" in ln]
    assert len(lines) == 1 and f"Slack rejected it ({error})" in lines[0]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 20


def test_flaky_em_and_flaky_slack_settle_with_every_alert_once(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    """30 % of EM requests answer 500, 30 % of posts answer 500, and a tenth of the rest
    are stored by Slack but answered 500. `poll --once`, run again and again as cron would,
    reaches two clean runs in a row within a few runs, each session announced once."""
    em.fault_rate, em.faults = 0.3, random.Random(3)
    slack.fail_rate, slack.lose_rate, slack.faults = 0.3, 0.1, random.Random(4)
    env = env_for(em, slack, tmp_path, '[veeam]\nattempts = 3\nbackoff = "5ms"\n')
    codes: list[int] = []
    retried = 0
    while len(codes) < 5 and codes[-2:] != [0, 0]:
        proc = poll(env)
        assert "Traceback" not in proc.stderr, proc.stderr
        codes.append(proc.returncode)
        if proc.returncode in (0, 2):
            retried += int(proc.stdout.split(", retries ")[1].split(",")[0])
    assert codes[-2:] == [0, 0], codes
    print(f"exit codes of successive runs: {codes}; {retried} retries")
    assert retried > 0  # the faults did happen, and the summary line counts them
    assert Counter(slack.announced_uids()) == Counter(expected_uids(em))
    calls = sum(1 for name, _ in slack.calls if name == "chat.postMessage")
    assert calls > len(slack.posted())  # some posts failed and were sent again


def test_a_second_process_on_the_same_state_file_exits_75_naming_the_first(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    env = env_for(em, slack, tmp_path)
    em.delay = 2.0  # the first poll holds the state file while EM answers slowly
    first = start_bot(env, "poll", "--once")
    try:
        deadline = time.monotonic() + 30
        while not em.queries() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert em.queries(), "the first poll never reached EM"
        second = run_bot(env, "poll", "--once", timeout=30)
        assert second.returncode == 75
        assert second.stdout == ""
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith("error: the state file ") and "is in use by process " in line
        assert f"process {first.pid} (python -m bot poll" in line
        assert len(em.queries()) == 1  # the second never queried EM
    finally:
        _out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    third = run_bot(env, "poll", "--once")  # the lock went with the first process
    assert third.returncode == 0, third.stderr


def test_logs_json_lines_one_poll_line_each_and_no_secret(slack: FakeSlack, tmp_path: Path) -> None:
    """A whole run with faults, at DEBUG, as JSON lines: one key=value poll line per poll,
    and neither the EM password, the EM session token nor a Slack secret anywhere."""
    password = "pw-Zq8!unique-secret"
    em = Emulator(SessionStore(history(300, seed=23)), password=password).start()
    try:
        em.fault_rate, em.faults = 0.2, random.Random(8)
        slack.fail_rate, slack.lose_rate, slack.faults = 0.2, 0.1, random.Random(9)
        env = env_for(em, slack, tmp_path, '[veeam]\nattempts = 3\nbackoff = "5ms"\n')
        env.update(VEEAM_PASSWORD=password, LOG_FORMAT="json", SLACK_APP_TOKEN="")
        logs = ""
        for _ in range(3):
            proc = run_bot(env, "--log-level", "debug", "poll", "--once")
            logs += proc.stderr
        tokens = em.sessions_seen()
    finally:
        em.stop()
    lines = [json.loads(ln) for ln in logs.splitlines() if ln.startswith("{")]
    assert {ln["level"] for ln in lines} >= {"DEBUG", "INFO"}
    polls = [ln["message"] for ln in lines if ln["message"].startswith("poll server=")]
    assert len(polls) == 3
    assert all(" fetched=" in p and " retries=" in p and " ms=" in p for p in polls)
    secrets = [password, TOKEN, "test-signing-secret", *tokens]
    for secret in secrets:
        assert secret not in logs, secret


def test_a_state_file_locked_by_another_program_exits_75_and_loses_nothing(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    """Someone opened the state file in an sqlite3 shell and left a transaction open: the
    poll waits a few seconds, exits 75 naming the file, moves nothing aside, and once the
    lock is gone the next poll announces nothing a second time."""
    env = env_for(em, slack, tmp_path)
    assert poll(env).returncode == 0
    before = list(slack.announced_uids())
    assert before
    state = tmp_path / "state.sqlite"
    holder = sqlite3.connect(state, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = poll(env)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert locked.returncode == 75, locked.stderr
    (line,) = locked.stderr.strip().splitlines()
    assert line.startswith(f"error: the state file {state} is locked by another program")
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
    after = poll(env)
    assert after.returncode == 0, after.stderr
    assert slack.announced_uids() == before


def test_flaky_reads_too_every_failure_is_delivered_within_ten_polls(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    """30 % of EM requests answer 500; 30 % of Slack posts *and reads* (history, replies)
    answer 500; a tenth of the posts Slack takes are answered 500 all the same. A read is
    retried within the poll, so one 500 on conversations.history does not give up the
    poll's delivery: every failure is in Slack, once, within 10 runs of `poll --once`."""
    em.fault_rate, em.faults = 0.3, random.Random(21)
    slack.fail_rate, slack.lose_rate, slack.faults = 0.3, 0.1, random.Random(33)
    slack.read_fail_rate = 0.3
    env = env_for(em, slack, tmp_path, '[veeam]\nattempts = 3\nbackoff = "5ms"\n')
    wanted = Counter(expected_uids(em))
    polls = 0
    while polls < 10:
        proc = poll(env)
        polls += 1
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 0 and Counter(slack.announced_uids()) == wanted:
            break
    print(f"{len(wanted)} failures delivered in {polls} polls")
    assert Counter(slack.announced_uids()) == wanted, f"not all delivered in {polls} polls"
    reads = [n for n, _ in slack.calls if n.startswith("conversations.")]
    assert len(reads) > polls  # reads happened, and some were answered 500 and retried
