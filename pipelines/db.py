"""Database engine and sessions for the audit log (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

__all__ = ["REPLACEMENT", "UTCDateTime", "db_now", "engine_for", "forget_engines_after_fork", "insert_for",
           "session_scope", "storable", "storable_counted", "utcnow"]


def insert_for(dialect: str) -> Any:
    """The dialect's INSERT (it has ``on_conflict_do_nothing``): PostgreSQL's, else SQLite's."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


def utcnow() -> datetime:
    return datetime.now(UTC)


#: What stands in for a character the audit database cannot keep in a text column.
REPLACEMENT = "\ufffd"


#: Characters no audit database keeps in text: NUL (PostgreSQL refuses it in text) and lone UTF-16
#: surrogates (a JSON ``"\\ud800"`` decodes to one; neither PostgreSQL nor SQLite's UTF-8 can encode it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_counted(text: str | None) -> tuple[str | None, int]:
    """:func:`storable` and how many characters it replaced (for the event's story)."""
    if text is None or _UNSTORABLE.search(text) is None:  # the common case: no copy made
        return text, 0
    return _UNSTORABLE.subn(REPLACEMENT, text)


def storable(text: str | None) -> str | None:
    """``text`` as a text column can keep it: NUL and lone surrogates become U+FFFD. Only what atrelay
    *stores* changes; what it sends to Autotask is sent as the partner wrote it."""
    return storable_counted(text)[0]


_CLOCK_REFRESH = 30.0
_clock_offsets: dict[str, tuple[float, float]] = {}  # url -> (database clock - ours, when measured)


def db_now(url: str) -> datetime:
    """The current time on the *database's* clock, for leases and the sweeper.

    Several machines share one PostgreSQL: if each judged leases by its own clock, a host two
    minutes fast would expire every live lease. The offset to the server's ``clock_timestamp()``
    is measured (midpoint of the round trip) and refreshed every 30 s, so this costs no query per
    call. SQLite lives on one machine: its clock is ours.
    """
    if not url.startswith("postgresql"):
        return utcnow()
    offset, measured = _clock_offsets.get(url, (0.0, float("-inf")))
    if time.monotonic() - measured > _CLOCK_REFRESH:
        with engine_for(url).connect() as conn:
            before = time.time()
            server = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
            after = time.time()
        offset = server.timestamp() - (before + after) / 2
        _clock_offsets[url] = (offset, time.monotonic())
    return utcnow() + timedelta(seconds=offset)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite keeps no offset, so values are stored as naive UTC and given their zone back on read;
    comparisons in Python then never mix naive and aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the audit log; use UTC-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process (Celery prefork children build their own after fork).

    Thread-safe: the worker's pool threads and the ingress's threads share it.
    """
    engine = _engines.get(url)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(url)
            if engine is None:
                engine = _engines[url] = _create(url)
    return engine


def forget_engines_after_fork() -> None:
    """In a forked child, drop the parent's pooled connections without closing them.

    Sharing a socket between processes corrupts the protocol (psycopg reports "prepared statement
    already exists"), so every child starts with empty pools; the parent keeps its connections.
    """
    for engine in _engines.values():
        engine.dispose(close=False)


def _close_sqlite_before_fork() -> None:
    """Before any fork: close the idle pooled connections to SQLite files.

    SQLite must not be carried across a fork: the child inherits the library's record of the open
    file and its locks, which the child does not hold (POSIX locks are not inherited), so the child's
    first writes can go unguarded and be lost or clobber the parent's. Measured: the embedded beat,
    forked from a worker that had just read the picklists, lost its first heartbeat in about one
    start in four. With no SQLite connection open at the fork the child starts clean; the parent
    reopens on its next use (a few hundred microseconds)."""
    for url, engine in list(_engines.items()):
        if url.startswith("sqlite"):
            engine.dispose()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_sqlite_before_fork)


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the ingress write while workers read; busy_timeout waits out short locks
            # instead of failing, since ingress, worker and beat share one file.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # The ingress runs its database work on a thread pool (40 threads): enough connections for it.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    session = Session(engine_for(url), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
