"""The one intake path: record the raw event, commit, then enqueue its id.

The ingress (signed webhooks), the TimeZest poll and Autotask callouts all come through here, so
"nothing is lost" has one implementation: an event is durable before any queue hears of it, and a
failed enqueue only delays it (the sweeper re-queues whatever is owed and was never run).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import tuple_
from sqlmodel import Session, col, select

from pipelines import store
from pipelines.audit import EventState, InboundEvent
from pipelines.db import engine_for, utcnow

__all__ = ["Enqueue", "EnqueueMany", "GroupIntake", "accept", "enqueue_committed", "record_in"]

log = logging.getLogger("atrelay.intake")

#: Puts one committed event id on the work queue (built by ``workers``; pipelines never see Celery).
Enqueue = Callable[[int], None]


def enqueue_committed(enqueue: Enqueue, event_ids: Iterable[int]) -> None:
    """Enqueue ids whose rows are committed; a broker failure is logged, never raised.

    The row is the record of what is owed: an id that could not be queued is picked up by the
    sweeper, so the caller can answer its sender as soon as the commit is done.
    """
    for event_id in event_ids:
        try:
            enqueue(event_id)
        except Exception:
            log.exception("intake.enqueue_failed", extra={"event_id": event_id})


def accept(db: str, new: store.NewEvent, enqueue: Enqueue) -> tuple[int, bool]:
    """Record one event in its own transaction, then enqueue it; return (id, created).

    A repeat of (source, external_id) is not recorded again and not enqueued again.
    """
    event_id, created = store.insert_event(db, new)  # committed when this returns
    if created and new.state == EventState.ACCEPTED:
        enqueue_committed(enqueue, [event_id])
    return event_id, created


def record_in(session: Session, new: store.NewEvent) -> int | None:
    """Add an event inside the caller's transaction (a poll that also saves its own state).

    Returns the id to enqueue once that transaction commits, or None when the event was already
    recorded or is not runnable (recorded as ignored, with its reason).
    """
    exists = session.exec(select(InboundEvent.id).where(
        InboundEvent.source == new.source, InboundEvent.external_id == new.external_id)).first()
    if exists is not None:
        return None
    row = InboundEvent(
        source=new.source, external_id=new.external_id, event_type=new.event_type, body=new.body,
        headers=store.safe_headers(new.headers), ticket_id=new.ticket_id, ticket_number=new.ticket_number,
        occurred_at=new.occurred_at, caused_by_id=new.caused_by_id, not_before=new.not_before,
        state=EventState(new.state), reason=new.reason,
    )
    session.add(row)
    session.flush()
    return row.id if row.state == EventState.ACCEPTED else None


# ---- group commit: the ingress's form of accept() ----------------------------------------------
#: Puts several committed ids on the work queue in one go (one broker connection for the batch).
EnqueueMany = Callable[[Sequence[int]], None]


@functools.lru_cache(maxsize=4)
def _insert_many_statement(dialect: str) -> Any:
    """store's prepared INSERT ... ON CONFLICT DO NOTHING, returning the key with the id."""
    return store._insert_statement(dialect).returning(  # the one prepared statement (store owns it)
        col(InboundEvent.source), col(InboundEvent.external_id))


def _insert_all(db: str, news: Sequence[store.NewEvent]) -> list[tuple[int, bool]]:
    """:func:`store.insert_event` for several events in one transaction: (id, created) for each.

    One executemany of the prepared statement, which SQLAlchemy sends as one multi-row INSERT
    ... RETURNING ("insertmanyvalues"): one round trip for the batch. A row that conflicts returns
    nothing, so results are matched by (source, external_id), and the ids of repeats are read in
    one SELECT. Inside a batch, the first event with a key is the one created, later ones are
    duplicates, as if they had come one after the other.
    """
    engine = engine_for(db)
    now = utcnow()
    params = [{
        "source": new.source, "external_id": new.external_id, "event_type": new.event_type,
        "body": new.body, "headers": store.safe_headers(new.headers), "ticket_id": new.ticket_id,
        "ticket_number": new.ticket_number, "occurred_at": new.occurred_at,
        "caused_by_id": new.caused_by_id, "not_before": new.not_before, "state": str(new.state),
        "received_at": now, "updated_at": now, "attempts": 0, "replays": 0, "reason": new.reason,
    } for new in news]
    with engine.begin() as conn:
        rows = conn.execute(_insert_many_statement(engine.dialect.name), params).all()
        created = {(source, external_id): int(event_id) for event_id, source, external_id in rows}
        repeats = {(new.source, new.external_id) for new in news} - created.keys()
        existing: dict[tuple[str, str], int] = {}
        if repeats:
            found = conn.execute(select(InboundEvent.id, InboundEvent.source, InboundEvent.external_id).where(
                tuple_(col(InboundEvent.source), col(InboundEvent.external_id)).in_(list(repeats)))).all()
            existing = {(source, external_id): int(event_id) for event_id, source, external_id in found}
    out: list[tuple[int, bool]] = []
    for new in news:
        key = (new.source, new.external_id)
        if key in created:
            out.append((created.pop(key), True))
            existing[key] = out[-1][0]  # a later event with the same key is its duplicate
        else:
            out.append((existing[key], False))
    return out


class GroupIntake:
    """:func:`accept` for many concurrent requests: those that arrive together share one commit.

    Each request awaits :meth:`accept`; its event joins the pending batch. One flush at a time runs
    on a thread of its own: every pending event is inserted in one transaction, committed, and the
    new ids are enqueued together (one broker round trip where the transport can batch); then every
    waiting request gets its own (id, created). Nothing is answered before its row is committed, a
    repeat is still a duplicate (inside one batch too: the first event with a key is created, later
    ones are its duplicates), nothing is enqueued twice, and while one flush commits the next
    batch gathers, so under load a commit (an fsync on PostgreSQL) and a thread hop are paid per
    batch instead of per request, and at low load a request waits for no timer.

    If a batch's transaction fails, its events are retried one transaction each, so one bad row (or
    a connection dropped mid-batch) fails only its own request, exactly as :func:`accept` would.
    """

    def __init__(self, db: str, enqueue: Enqueue, enqueue_many: EnqueueMany | None = None,
                 max_batch: int = 128) -> None:
        self.db, self.enqueue, self.max_batch = db, enqueue, max_batch
        self.enqueue_many: EnqueueMany = enqueue_many or (lambda ids: enqueue_committed(enqueue, ids))
        self._pending: list[tuple[store.NewEvent, asyncio.Future[tuple[int, bool]]]] = []
        self._flushing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # One thread: flushes are serial (batches form while one commits), and the default pool's
        # threads stay free for everything else the app runs there.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atrelay-intake")
        self.batches = 0  # for the benchmark and tests: how many transactions served the requests

    async def accept(self, new: store.NewEvent) -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test client may run one per request)
            self._loop, self._pending, self._flushing, self._task = loop, [], False, None
        future: asyncio.Future[tuple[int, bool]] = loop.create_future()
        self._pending.append((new, future))
        if not self._flushing:
            self._flushing = True
            # A task starts on the loop's next turn, so requests already parsed in this turn join the
            # batch. The reference keeps the running task from being garbage-collected.
            self._task = loop.create_task(self._drain())
        # shield: a client that hangs up does not cancel the commit its event is part of.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                try:
                    results = await loop.run_in_executor(self._executor, self._flush, [n for n, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flushing = False

    def _flush(self, news: list[store.NewEvent]) -> list[tuple[int, bool] | BaseException]:
        """On the intake thread: one transaction for the batch, then its enqueues."""
        results: list[tuple[int, bool] | BaseException]
        try:
            results = list(_insert_all(self.db, news))
        except Exception:
            if len(news) == 1:
                raise
            log.warning("intake.batch_failed", extra={"size": len(news)}, exc_info=True)
            results = []
            for new in news:  # one at a time: only the event at fault fails
                try:
                    results.append(store.insert_event(self.db, new))
                except Exception as exc:
                    results.append(exc)
        self.batches += 1
        owed = [r[0] for r, new in zip(results, news, strict=True)
                if not isinstance(r, BaseException) and r[1] and new.state == EventState.ACCEPTED]
        if owed:
            try:
                self.enqueue_many(owed)
            except Exception:  # the rows are committed: the sweeper re-queues what was not sent
                log.exception("intake.enqueue_failed", extra={"event_ids": owed})
        return results

    def close(self) -> None:
        self._executor.shutdown(wait=True)
