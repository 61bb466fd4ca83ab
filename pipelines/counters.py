"""Running totals of the audit log for `/metrics`, kept so a scrape never counts the whole history.

A scrape used to group every event and every Autotask call (1.9 s at 300k events). Now the totals
live in ``metric_counters``, each stream with a cursor (an id, or a time for the events' final
states), and a scrape only reads rows past its cursor through an index:

* rows older than ``FOLD_LAG`` are *folded*: added to the stored totals, cursor advanced, in one
  transaction (a conditional cursor update, so two ingresses scraping at once never add twice);
* younger rows are counted *live* for this answer only, so a scrape shows what happened a moment
  ago, and a transaction still open when the row's id or time was taken is not skipped for good.

The work per scrape is bounded by what happened since the previous scrape, never by history. The
totals are in the database, not in the process, so every ingress answers the same numbers and
restarts lose nothing (pruning old audit rows leaves the totals alone).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, Float, String, and_, case, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, SQLModel

from pipelines.audit import EventState, InboundEvent, OutboundAttempt, RejectedRequest
from pipelines.clock import SIGNATURE_FORM_HEADER
from pipelines.db import engine_for, utcnow

__all__ = ["DEACTIVATION_SOURCE", "FOLD_LAG", "LATENCY_BUCKETS", "MetricCounter", "Totals", "endpoint_label",
           "fold", "read_totals"]

#: Rows younger than this are counted live, not folded: a writer's transaction may commit a little
#: after it took its id or timestamp, and a folded cursor never looks back.
FOLD_LAG = timedelta(seconds=30)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
#: Deactivation notices are filed in the rejections table (same value as pipelines.autotask_status).
DEACTIVATION_SOURCE = "autotask-deactivation"
_FINAL = [s.value for s in EventState if s.final]
_ID = re.compile(r"/\d+(?=/|$)")
_CURSOR = "cursor"


class MetricCounter(SQLModel, table=True):
    """One running total (``name`` + JSON ``labels``), or a stream's cursor (``name == "cursor"``)."""

    __tablename__ = "metric_counters"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    labels: str = Field(sa_column=Column(String(400), primary_key=True))
    # Ids and microsecond timestamps stay exact in a double (both under 2**53).
    value: float = Field(default=0.0, sa_column=Column(Float, nullable=False))


@dataclass
class Totals:
    """What a scrape reports: counters by (name, labels), and 'latest' gauges (epoch seconds)."""

    counters: dict[tuple[str, tuple[str, ...]], float] = field(default_factory=lambda: defaultdict(float))
    latest: dict[str, float] = field(default_factory=dict)
    rows_read: int = 0  # audit rows this scrape read (tests show it does not grow with history)

    def add(self, name: str, labels: Sequence[str], n: float = 1.0) -> None:
        self.counters[(name, tuple(labels))] += n

    def seen(self, name: str, at: datetime | None) -> None:
        if at is not None:
            self.latest[name] = max(self.latest.get(name, 0.0), at.timestamp())

    def merge(self, other: Totals) -> None:
        for key, n in other.counters.items():
            self.counters[key] += n
        for name, at in other.latest.items():
            self.latest[name] = max(self.latest.get(name, 0.0), at)
        self.rows_read += other.rows_read


def endpoint_label(path: str) -> str:
    """``/ATServicesRest/V1.0/Tickets/123/Notes`` -> ``Tickets/{id}/Notes`` (bounded label values)."""
    return _ID.sub("/{id}", path.rsplit("/V1.0/", 1)[-1].rsplit("/v1.0/", 1)[-1])


def _micros(at: datetime) -> float:
    return float(int(at.timestamp() * 1_000_000))


def _from_micros(value: float) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


# ---- the streams: each reads rows past its cursor through an index, and splits fold from live ----

def _final_events(conn: Connection, cursor: float, hi: datetime, fold: Totals, live: Totals) -> float:
    """Events that reached a final state (via ix_inbound_state_updated); cursor = microseconds."""
    e = InboundEvent.__table__  # type: ignore[attr-defined]
    rows = conn.execute(select(e.c.source, e.c.event_type, e.c.state, e.c.received_at, e.c.updated_at)
                        .where(e.c.state.in_(_FINAL), e.c.updated_at > _from_micros(cursor))).all()
    for source, etype, state, received, updated in rows:
        into = fold if updated <= hi else live
        into.rows_read += 1
        into.add("events", (source, etype, state))
        if state == EventState.APPLIED.value:
            seconds = max(0.0, (updated - received).total_seconds())
            into.add("latency_sum", (), seconds)
            into.add("latency_count", ())
            for bound in LATENCY_BUCKETS:
                if seconds <= bound:
                    into.add("latency_bucket", (str(bound),))
    return max(cursor, _micros(hi))


def _by_id(conn: Connection, table: Any, columns: Sequence[Any], *, at: Any, cursor: float, hi: datetime,
           fold: Totals, live: Totals, count: Any) -> float:
    """Rows with id past the cursor, in id order; fold up to the first one younger than ``hi``."""
    rows = conn.execute(select(table.c.id, at, *columns).where(table.c.id > int(cursor)).order_by(table.c.id)).all()
    folding = True
    for row in rows:
        folding = folding and row[1] <= hi
        into = fold if folding else live
        into.rows_read += 1
        count(into, *row[1:])
        if folding:
            cursor = float(row[0])
    return cursor


def _attempt(into: Totals, _at: datetime, method: str, path: str, status: int | None) -> None:
    into.add("calls", (method, endpoint_label(path), str(status or "none")))


def _inbound(into: Totals, at: datetime, source: str, external_id: str, *, caused_by: int | None,
             headers: dict[str, str] | None) -> None:
    into.add("received", (source,))
    if source == "autotask" and caused_by is None:
        via = "reconciliation" if external_id.startswith("reconcile:") else "callout"
        into.add("autotask_intake", (via,))
        if via == "callout":
            into.seen("autotask_last_callout", at)
            # Which bytes the signature covered: what the tenant really sends (workers/http/autotask_ingress.py).
            form = (headers or {}).get(SIGNATURE_FORM_HEADER)
            if form in ("raw", "escaped"):
                into.add("autotask_signature", (form,))


def _rejection(into: Totals, at: datetime, source: str, status: int) -> None:
    into.add("rejected", (source, str(status)))
    if source == DEACTIVATION_SOURCE:
        into.seen("autotask_last_deactivation", at)


def _scan(conn: Connection, cursors: dict[str, float], hi: datetime) -> tuple[Totals, Totals, dict[str, float]]:
    fold, live = Totals(), Totals()
    e, a, r = (InboundEvent.__table__, OutboundAttempt.__table__,  # type: ignore[attr-defined]
               RejectedRequest.__table__)  # type: ignore[attr-defined]
    new = {
        "final_events": _final_events(conn, cursors.get("final_events", 0.0), hi, fold, live),
        "attempts": _by_id(conn, a, (a.c.method, a.c.path, a.c.status_code), at=a.c.at,
                           cursor=cursors.get("attempts", 0.0), hi=hi, fold=fold, live=live, count=_attempt),
        "inbound": _by_id(conn, e, (e.c.source, e.c.external_id, e.c.caused_by_id, e.c.headers), at=e.c.received_at,
                          cursor=cursors.get("inbound", 0.0), hi=hi, fold=fold, live=live,
                          count=lambda into, at, source, key, caused, headers: _inbound(
                              into, at, source, key, caused_by=caused, headers=headers)),
        "rejections": _by_id(conn, r, (r.c.source, r.c.status_code), at=r.c.at,
                             cursor=cursors.get("rejections", 0.0), hi=hi, fold=fold, live=live, count=_rejection),
    }
    return fold, live, new


def _stored(conn: Connection) -> tuple[Totals, dict[str, float]]:
    t = MetricCounter.__table__  # type: ignore[attr-defined]
    totals, cursors = Totals(), {}
    for name, labels, value in conn.execute(select(t.c.name, t.c.labels, t.c.value)).all():
        if name == _CURSOR:
            cursors[labels] = float(value)
        elif name.startswith("latest:"):
            totals.latest[name.removeprefix("latest:")] = float(value)
        else:
            totals.add(name, tuple(json.loads(labels)), float(value))
    return totals, cursors


def _persist(conn: Connection, old: dict[str, float], new: dict[str, float], fold: Totals) -> bool:
    """Add ``fold`` to the stored totals and move the cursors; False if another scraper moved them first."""
    t = MetricCounter.__table__  # type: ignore[attr-defined]
    for stream, position in new.items():
        if stream in old:
            # Taking the cursor rows first makes a concurrent scraper wait here, then find them moved.
            moved = conn.execute(update(t).where(and_(t.c.name == _CURSOR, t.c.labels == stream,
                                                      t.c.value == old[stream])).values(value=position))
            if moved.rowcount != 1:
                return False
        else:
            conn.execute(t.insert().values(name=_CURSOR, labels=stream, value=position))
    rows = [(name, json.dumps(list(labels)), n) for (name, labels), n in fold.counters.items()]
    rows += [(f"latest:{name}", "[]", at) for name, at in fold.latest.items()]
    for name, labels, n in rows:
        # "latest:" rows keep the greater time; the others add.
        value = case((t.c.value < n, n), else_=t.c.value) if name.startswith("latest:") else t.c.value + n
        changed = conn.execute(update(t).where(and_(t.c.name == name, t.c.labels == labels)).values(value=value))
        if changed.rowcount == 0:
            conn.execute(t.insert().values(name=name, labels=labels, value=n))
    return True


def fold(conn: Connection, hi: datetime) -> Totals | None:
    """In ``conn``'s transaction: stored totals + rows folded up to ``hi`` + the live tail after it.

    None when another scraper moved the cursors first (the caller rolls back and reads again).
    The migration that adds the table calls this once, so the history is counted at upgrade time
    and never by a scrape.
    """
    stored, cursors = _stored(conn)
    folded, live, new = _scan(conn, cursors, hi)
    if not _persist(conn, cursors, new, folded):
        return None
    stored.merge(folded)
    stored.merge(live)
    stored.rows_read = folded.rows_read + live.rows_read
    return stored


def read_totals(db: str, *, now: datetime | None = None) -> Totals:
    """The running totals as of now, in one short transaction per scrape."""
    hi = (now or utcnow()) - FOLD_LAG
    engine = engine_for(db)
    for attempt in range(5):
        try:
            with engine.connect() as conn, conn.begin() as tx:
                totals = fold(conn, hi)
                if totals is not None:
                    return totals
                tx.rollback()
        except (IntegrityError, OperationalError):
            # Another scraper created the first cursors, or (SQLite) committed between our read and
            # our write: its fold is in; read again from the cursors it left.
            if attempt == 4:
                raise
    raise RuntimeError("metric counters kept moving under this scrape")
