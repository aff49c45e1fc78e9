"""`python -m bot query` as a user runs it, against a running emulator."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.emulator.data import SessionStore, generate
from bot.emulator.jobs import EmJob
from bot.emulator.server import Emulator
from tests.helpers import bot_env, run_bot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_em() -> Iterator[Emulator]:
    emu = Emulator(
        SessionStore(
            generate(
                150,
                now=datetime.now(UTC),
                seed=2,
                extras=False,
                failure_rate=0.25,
                span=timedelta(days=7),
            )
        )
    )
    yield emu.start()
    emu.stop()


def run_cli(emu: Emulator, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return run_bot(bot_env(tmp, emu.url), "query", *args, timeout=60)


def test_json_prints_exactly_the_failed_sessions_of_the_last_three_days(
    small_em: Emulator, tmp_path: Path
) -> None:
    before = datetime.now(UTC)
    proc = run_cli(small_em, "--json", "failed since:3d", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    cutoff = before - timedelta(days=3)
    expected = {
        s.uid
        for s in small_em.store.all()
        if s.type == "ReplicaTaskSession"
        and s.result == "Failed"
        and s.created >= cutoff.replace(microsecond=0)
    }
    assert 0 < len(expected) <= 20
    assert {r["uid"] for r in rows} == expected
    assert all(
        set(r)
        == {
            "uid",
            "type",
            "vm",
            "job",
            "server",
            "state",
            "result",
            "reason",
            "created",
            "ended",
            "total_size",
        }
        for r in rows
    )
    created = [r["created"] for r in rows]
    assert created == sorted(created, reverse=True)


def test_words_as_several_arguments_and_a_table(small_em: Emulator, tmp_path: Path) -> None:
    proc = run_cli(small_em, "failed", "warning", "since:14d", "limit:5", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ENDED (UTC)")
    assert len([ln for ln in lines[1:] if ln.startswith("20")]) == 5
    assert "showing 5" in proc.stdout
    assert 'filter (ReplicaTaskSession): (Result=="Failed",Result=="Warning")' in proc.stdout


def test_bad_word_goes_to_stderr_with_usage(small_em: Emulator, tmp_path: Path) -> None:
    proc = run_cli(small_em, "faild", tmp=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "unknown word 'faild'" in proc.stderr and "usage:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_em_unreachable_is_one_line(tmp_path: Path) -> None:
    proc = run_bot(bot_env(tmp_path, "http://127.0.0.1:9"), "query", "failed", timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    *retries, last = proc.stderr.strip().splitlines()
    assert last.startswith("error: cannot reach EM at http://127.0.0.1:9")
    assert len(retries) == 2 and all("retry" in line for line in retries)  # 3 attempts
    assert "Traceback" not in proc.stderr


def test_jobs_reads_every_job_from_em_with_its_marks(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    emu = Emulator(SessionStore(generate(40, now=now, seed=3, extras=False))).start()
    try:
        emu.job_list.add([EmJob("urn:veeam:Job:0badc0de-0000-4000-8000-0000000005ad", "Stopped job",
                                "Replica", "VMware", "vbr01", "urn:veeam:BackupServer:1",
                                next_run=now - timedelta(hours=5))])  # fmt: skip
        env = bot_env(tmp_path, emu.url)
        proc = run_bot(env, "jobs", "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        rows = {r["job"]: r for r in json.loads(proc.stdout)}
        assert rows["Stopped job"]["marks"] == ["stale"]
        assert rows["Stopped job"]["last_success"] is None
        replicas = {s.job for s in emu.store.all() if s.type == "ReplicaTaskSession"}
        assert set(rows) == replicas | {"Stopped job"}  # the watched type's jobs
        text = run_bot(env, "jobs", "stale", timeout=60)
        assert text.returncode == 0, text.stderr
        assert "[stale] Stopped job (vbr01) · no run seen · last success never" in text.stdout
        bad = run_bot(env, "jobs", "sometimes", timeout=60)
        assert bad.returncode == 1
        assert "usage: /veeam jobs [stale|disabled|running|failing]" in bad.stderr
    finally:
        emu.stop()
