"""A beat stopped on purpose says so at once (docs/reliability.md, Heartbeats): `systemctl stop` sends
SIGTERM, a terminal's Ctrl-C SIGINT. Before, the beat's row stayed "alive" for a heartbeat timeout after
it had gone, so every screen said a beat was running while nothing swept, polled or reconciled."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.support import ROOT, Proc, wait_for


def _beats(db: Path) -> list[tuple[int, str | None]]:
    if not db.exists():
        return []
    with closing(sqlite3.connect(db)) as conn:  # read from the file, not through atrelay
        try:
            return conn.execute("SELECT pid, stopped_at FROM process_heartbeats WHERE role = 'beat'").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_beat_is_not_alive_from_that_moment(tmp_path: Path, sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env["ATRELAY_VAR_DIR"] = str(tmp_path / "var")
    subprocess.run([sys.executable, "-m", "workers.cli", "migrate"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    db = tmp_path / "var" / "atrelay.db"
    proc = Proc("beat", ["beat"], env, tmp_path)
    try:
        (pid, stopped), = wait_for(lambda: _beats(db), timeout=60, what="the beat's first heartbeat")
        assert pid == proc.proc.pid and stopped is None
        proc.proc.send_signal(sig)
        assert proc.proc.wait(timeout=30) == 0, proc.log()[-3000:]
    finally:
        proc.stop(signal.SIGKILL)
    ((_, stopped),) = _beats(db)
    assert stopped is not None, f"the beat stopped without saying so:\n{proc.log()[-3000:]}"
