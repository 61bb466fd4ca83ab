"""The suite's date-sensitive tests, run again with the clock a year ahead.

A test that hard-codes "a date in the future" passes until that date comes (the seed due date of
2026-11-28 did exactly that). The tests marked ``date_sensitive`` (due dates, reconciliation windows,
partner clocks, retry horizons) run here in a child pytest under libfaketime (``FAKETIME=+365d``,
preloaded into every process they start: sandboxes, workers, ingress), so each must hold on any day.

SQLite only: PostgreSQL's server keeps the real clock, and a host a year off from its database is
not a situation atrelay claims to handle (leases follow the database's clock; see docs/reliability.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import libfaketime
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(900)
def test_date_sensitive_tests_pass_a_year_from_now() -> None:
    lib = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src"
    env = {**os.environ, "LD_LIBRARY_PATH": str(lib), "LD_PRELOAD": "libfaketime.so.1", "FAKETIME": "+365d",
           "DONT_FAKE_MONOTONIC": "1", "FAKETIME_NO_CACHE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "date_sensitive",
         "-k", "not postgresql and not redis", "--ignore", str(Path(__file__).relative_to(ROOT)), "tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=880)
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"date-sensitive tests fail a year ahead:\n{tail}"
    assert " passed" in done.stdout and "deselected" in done.stdout, tail  # something did run
