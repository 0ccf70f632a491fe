"""The CLI as a user runs it, for the fuzz tests' samples: a fresh process, no cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def assert_exits_0_or_1(args: list[str], cwd: Path, context: str = "") -> None:
    """`vramc ARGS` answers (0 or 1) without an internal error (3) or a traceback, within a minute."""
    env = {k: v for k, v in os.environ.items() if k != "VRAMC_CACHE"}
    env["VRAMC_NO_CACHE"] = "1"
    r = subprocess.run(
        [sys.executable, "-m", "vramc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode in (0, 1), f"{context}\n{args}: {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr
