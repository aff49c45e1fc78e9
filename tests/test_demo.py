"""`make demo` as a user sees it: alerts on the console, no tokens or configuration."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_alerts_without_any_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "VEEAM_", "BOT_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--cycles", "2", "--interval", "0.2"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("→ #veeam-alerts") >= 3
    assert "Reason:" in out and "poll: fetched" in out
    assert "&lt;" not in out, "the console shows text, not Slack escapes"
    # within its first polls, one of each failure no VM tells and each job that stopped
    for headline in (
        "Failed: SQL Nightly (backup)",  # a job failing before any VM
        "Failed: Projects file share (file share backup)",
        "Warning: Sales laptops (agent backup)",
        "Not running: Weekly archive",
        "Running long: Exchange mailboxes",
        "Schedule disabled: File server weekly full",  # disabled after the first poll
    ):
        assert headline in out, headline
    # The state file it names shows an operator the named tables, with what the demo did.
    state = Path(re.search(r"The demo's state file: (\S+)", out).group(1))  # type: ignore[union-attr]
    with sqlite3.connect(state) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        announced = conn.execute("SELECT COUNT(*) FROM announced").fetchone()[0]
    assert {"announced", "pending", "held", "problems", "alerts", "mutes", "checkpoints"} <= tables
    assert "state" not in tables and announced >= 3
