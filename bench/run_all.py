"""Run every benchmark in turn (`make bench`). Each prints its own numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "parse_bench.py",
    "catchup_bench.py",
    "steady_bench.py",
    "sweep_bench.py",
    "problems_bench.py",
    "slash_bench.py",
    "digest_bench.py",
    "servers_bench.py",
    "stale_bench.py",
    "routes_bench.py",
    "faults_bench.py",
]

if __name__ == "__main__":
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    for script in SCRIPTS:
        if (HERE / script).exists():
            print(f"== {script}", flush=True)
            subprocess.run([sys.executable, str(HERE / script)], env=env, check=True)
