"""kombu's SQLAlchemy transport (embedded mode's broker) with batched publishes and a short poll.

Three changes, all about round trips and waits, none about what is delivered:

* **Batched publish.** kombu's stock channel commits once per message. The ingress's group commit
  hands it a batch of ids inside ``Producer.batch()``; this channel inserts every message of the batch
  with one executemany (the rows kombu's ORM would write, without its per-object unit of work) and
  commits once (all or none: a failed commit raises, the events stay recorded and the sweeper
  re-queues them). Outside a batch, publishing is kombu's own code.
* **Short poll.** The transport has no push: an idle worker polls the message table, once a second
  by default, which alone put up to a second between accept and run. Polling every 50 ms keeps that
  wait inside the embedded mode's end-to-end budget (p99 < 300 ms); its price, measured by
  ``make bench`` (section 7), is about 3-4 % of one core while idle (each poll is a short
  ``BEGIN IMMEDIATE`` transaction through kombu's ORM), against about 1 % with the 1 s default.
* **Cheaper hand-over on SQLite** (issue 24: the embedded default's burst against Autotask's thread
  limit). With the governor's in-process wait (``DbGovernor._admitted``), these took a 200-form burst
  by ticket number at 150 ms per call from 74-78 % (median 77 %) to 77-85 % (median 83 %) of what the
  limit allows, in four paired runs at load 4-5 on 2 cores with a low-priority soak running (bench/
  changes.md); in an earlier series at load 6-8, leaving any one of the four out lowered the figure in
  both rounds, by 0.6 to 16 points, which that machine's noise cannot separate further:

  - the broker file in WAL mode with ``synchronous=NORMAL``, as the audit database already is: the
    ingress's publish and the worker's polls no longer block each other's readers. A power cut can
    lose the last publishes, which the audit database (the record of what is owed) and the sweeper
    bring back;
  - a delivery is one ``DELETE ... RETURNING`` statement (kombu's ORM reads the row, then updates it
    to invisible: two statements and an ORM flush in the write lock, and a table that keeps every
    message ever delivered: kombu never reads an invisible one again);
  - an ack or reject wakes the idle poll at once: with prefetch 1 per run, the message for a thread
    that just finished waited up to a whole poll interval before it was taken.

Registered under the ``sqla`` scheme by :func:`use`, so ``ATRELAY_BROKER_URL=sqla+sqlite:///...``
keeps its meaning.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as sqla
from kombu.utils.json import dumps, loads
from sqlalchemy import delete, event, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

__all__ = ["POLL_SECONDS", "Transport", "use"]

#: How often an idle worker looks for messages.
POLL_SECONDS = 0.05


class _Batch:
    """The publish batch kombu's ``Producer.batch()`` drives: messages added, one commit on flush."""

    def __init__(self, channel: Channel, max_size: int) -> None:
        self.channel, self.max_size = channel, max_size
        self.queues: dict[str, Any] = {}  # queue rows looked up once per batch, not once per message
        self.rows: list[dict[str, Any]] = []

    @property
    def pending(self) -> int:
        return len(self.rows)

    def publish(self, message: Any, **kwargs: Any) -> Any:
        result = self.channel.basic_publish(message, _publish_batch=self, **kwargs)  # type: ignore[no-untyped-call]
        if self.pending >= self.max_size:
            self.flush()
        return result

    def flush(self) -> None:
        if not self.rows:
            return
        session = self.channel.session
        rows, self.rows = self.rows, []
        try:
            # What kombu's Message(payload, queue) becomes: visible, version 1, no timestamp yet.
            session.execute(insert(self.channel.message_cls.__table__), rows)
            session.commit()
        except OperationalError:
            session.rollback()
            raise

    def discard(self) -> None:
        self.channel.session.rollback()
        self.rows = []

    def close(self) -> None:
        """Nothing of its own to release: the session is the channel's."""


#: ``DELETE ... RETURNING`` needs SQLite 3.35; an older library takes kombu's own two statements.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL for the broker file too (pipelines/db.py sets the same on the audit database)."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Channel(sqla.Channel):
    _queue_ids: dict[str, int]

    def _engine_from_config(self) -> Engine:
        engine: Engine = super()._engine_from_config()  # type: ignore[no-untyped-call]
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def create_publish_batch(self, max_size: int) -> _Batch:
        return _Batch(self, max_size)

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)  # type: ignore[no-untyped-call]
        self.connection.wake()  # the ack frees prefetch: the consumer may take the next message now

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]
        self.connection.wake()

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        """The oldest visible message of ``queue``, taken off the table in one statement (SQLite)."""
        session = self.session
        if session.bind.dialect.name != "sqlite" or not _RETURNING:
            return super()._get(queue)  # type: ignore[no-untyped-call]
        ids = self.__dict__.setdefault("_queue_ids", {})
        queue_id = ids.get(queue)
        if queue_id is None:
            queue_id = ids[queue] = self._get_or_create(queue).id  # type: ignore[no-untyped-call]
        table = self.message_cls.__table__
        oldest = (select(table.c.id).where(table.c.queue_id == queue_id, table.c.visible.is_not(False))
                  .order_by(table.c.timestamp, table.c.id).limit(1).scalar_subquery())
        session.execute(text("BEGIN IMMEDIATE TRANSACTION"))  # as kombu's: take the write lock first
        try:
            payload = session.execute(delete(table).where(table.c.id == oldest)
                                      .returning(table.c.payload)).scalar_one_or_none()
        finally:
            session.commit()
        if payload is None:
            raise Empty()
        return loads(payload)  # type: ignore[no-untyped-call]

    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        batch = kwargs.pop("_publish_batch", None)
        if batch is None:
            super()._put(queue, payload, **kwargs)  # type: ignore[no-untyped-call]
            return
        obj = batch.queues.get(queue)
        if obj is None:
            obj = batch.queues[queue] = self._get_or_create(queue)  # type: ignore[no-untyped-call]
        batch.rows.append({"payload": dumps(payload), "queue_id": obj.id,  # type: ignore[no-untyped-call]
                           "visible": True, "version": 1})


class Transport(sqla.Transport):
    Channel = Channel
    implements = sqla.Transport.implements.extend(batch_publish=True)
    polling_interval = POLL_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._wakeup = threading.Event()

    def wake(self) -> None:
        """Something this process did may let the consumer take a message now (an ack freed prefetch)."""
        self._wakeup.set()

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> None:
        """kombu's loop, but an idle wait ends early when :meth:`wake` is called."""
        started = time.monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        assert self.cycle is not None  # set when the transport's first channel opens
        while True:
            self._wakeup.clear()
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[no-untyped-call]
                return
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise TimeoutError from None  # socket.timeout, which Celery expects
                if interval is not None:
                    self._wakeup.wait(interval)

def use() -> None:
    """Make ``sqla+...`` broker URLs mean this transport, in this process."""
    TRANSPORT_ALIASES["sqla"] = f"{__name__}:Transport"
