"""Production files: the systemd unit verifies, the Procfile names both process types, and
the version is one value everywhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot import __version__
from tests.helpers import ROOT, run_bot

UNIT = ROOT / "deploy" / "veeam-slack-bot.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify`, with ExecStart pointed at this machine's Python (the one
    line that depends on where the bot is installed)."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/veeam-slack-bot/bin/python -m bot run" in text
    unit = tmp_path / "veeam-slack-bot.service"
    unit.write_text(text.replace("/opt/veeam-slack-bot/bin/python", sys.executable))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for line in (
        "StateDirectory=veeam-slack-bot",
        "EnvironmentFile=/etc/veeam-slack-bot/secrets.env",
        "Restart=on-failure",
        "RestartPreventExitStatus=75 78",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=veeam-slack-bot",
    ):
        assert line in text


def test_the_procfile_has_a_web_and_a_worker_process() -> None:
    kinds = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert kinds.keys() == {"web", "worker"}
    assert "python -m bot run" in kinds["web"] and "python -m bot run" in kinds["worker"]


def test_one_version_everywhere(tmp_path: Path) -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bot.__version__"}
    assert f"## {__version__} " in (ROOT / "CHANGELOG.md").read_text()
    proc = run_bot({"PATH": "/usr/bin:/bin"}, "--version")
    assert proc.stdout.strip() == f"python -m bot {__version__}"
