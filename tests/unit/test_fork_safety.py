"""No SQLite connection is carried across a fork (pipelines/db.py, ``_close_sqlite_before_fork``).

SQLite's rule is that a connection open in a parent must not be used, nor exist, in a forked child: the
child inherits the library's record of the file and its locks but not the locks themselves. The embedded
beat is forked from the worker, which has used the audit database by then; before this, the beat's first
heartbeat was lost in about one start in four (seen in `atrelay run` restarts: /readyz said "no beat
alive" for one heartbeat interval). What can be checked without racing two processes: at every fork the
parent's SQLite pools hold no open connection, and the parent works on afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text

from pipelines.db import engine_for


def test_a_fork_finds_no_open_sqlite_connection(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path / 'fork.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]  # pooled, open, as in a worker
    pid = os.fork()
    if pid == 0:  # the child only exits: what matters is the parent's state at the fork
        os._exit(0)
    os.waitpid(pid, 0)
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    with engine.begin() as conn:  # and the parent reopens on its next use
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
