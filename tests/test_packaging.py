"""A real install: the wheel holds the templates and the example config, and a bot
installed from it runs `poll --once` from another folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.emulator.server import Emulator
from tests.fake_slack import FakeSlack
from tests.helpers import ROOT, bot_env, job_run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by setuptools from a copy of the tracked files (no network)."""
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    build = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-c", build, str(dist)],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dist / proc.stdout.strip().splitlines()[-1]


def test_the_wheel_holds_the_templates_and_the_example_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {p.name for p in (ROOT / "templates").glob("*.j2")}
    assert len(packaged) > 10
    assert {f"bot/templates/{n}" for n in packaged} <= names
    assert "bot/config/example/bot.toml" in names


def test_an_installed_bot_polls_from_another_folder(
    wheel: Path, em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel installs as its files
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (s,) = job_run(em, datetime.now(UTC), [("sql01", "Failed", "disk full")])
    env = bot_env(tmp_path, em.url, slack.url, "[alerts]\nmax_posts_per_second = 0\n")
    env["PYTHONPATH"] = str(site)
    env.pop("BOT_CONFIG")  # no config file at all: defaults and the environment

    def bot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    where = bot("-c", "import bot, os; print(os.path.dirname(bot.__file__))")
    assert Path(where.stdout.strip()) == site / "bot"
    proc = bot("-m", "bot", "poll", "--once")
    assert proc.returncode == 0, proc.stderr
    assert slack.announced_uids() == [s.uid]
    example = bot("-m", "bot", "example-config")
    assert example.returncode == 0 and "[poll]" in example.stdout
    assert example.stdout == (ROOT / "config" / "bot.toml").read_text()
    assert list(elsewhere.iterdir()) == []  # the state file is where BOT_STATE_PATH says
