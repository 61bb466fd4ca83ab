"""Sending alerts exactly once: a lease per kind, a delivery record per URL, bounded retries.

* **One sender per kind.** A sender first takes the kind's lease (``alert_senders``: a conditional
  UPDATE, so of four send tasks that start together one sends, the others find it taken). A sender
  that dies mid-send loses the lease after ``LEASE``; only then can a message it may have sent be
  sent again.
* **Per URL.** Each alert's delivery to each URL is its own row (``alert_deliveries``): when one of two
  URLs refuses, the one that took the message is done, and only the other is tried again.
* **Bounded.** A refused delivery is tried again after ``retry_seconds``, doubling, at most
  ``max_attempts`` times; then it is ``failed`` and so is its alert, which the dashboard shows with the
  URL (masked) and the error.
* **Digest.** At most one message per kind and URL each ``digest_seconds``; what waits meanwhile goes
  out as one digest. A critical alert (no worker alive) does not wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, update
from sqlmodel import col, select

from pipelines.alerts import Alert
from pipelines.audit import AlertDelivery, AlertSender
from pipelines.db import db_now, insert_for, session_scope

__all__ = ["LEASE", "Target", "claim", "due", "failed_deliveries", "mark_shown", "record", "release", "settle"]

#: A send of one kind (a message to each URL, apprise's own timeouts) finishes well within this.
LEASE = timedelta(seconds=120)


@dataclass(frozen=True)
class Target:
    """One of ``ATRELAY_NOTIFY_URLS``: ``key`` a digest of the URL (never stored itself: it holds tokens),
    ``label`` its masked form for people, ``markdown`` whether the target renders markdown."""

    key: str
    label: str
    markdown: bool


def claim(db: str, kind: str, owner: str) -> bool:
    """Take the kind's send lease (or renew our own); False while another sender holds it."""
    now = db_now(db)
    with session_scope(db) as s:
        dialect = s.get_bind().dialect.name
        s.execute(insert_for(dialect)(AlertSender).values(kind=kind).on_conflict_do_nothing())
        taken = s.execute(update(AlertSender).where(
            col(AlertSender.kind) == kind,
            or_(col(AlertSender.until).is_(None), col(AlertSender.until) < now, col(AlertSender.owner) == owner),
        ).values(owner=owner, until=now + LEASE)).rowcount  # type: ignore[attr-defined]
    return bool(taken)


def release(db: str, kind: str, owner: str) -> None:
    with session_scope(db) as s:
        s.execute(update(AlertSender).where(col(AlertSender.kind) == kind, col(AlertSender.owner) == owner)
                  .values(owner=None, until=None))


def mark_shown(db: str, kind: str) -> int:
    """No URL configured: pending alerts of the kind are shown on the dashboard, and that is all."""
    with session_scope(db) as s:
        return int(s.execute(update(Alert).where(col(Alert.kind) == kind, col(Alert.state) == "pending")
                             .values(state="shown", sent_at=db_now(db))).rowcount or 0)  # type: ignore[attr-defined]


def due(db: str, kind: str, target: Target, *, digest_seconds: float, now: datetime | None = None,
        limit: int = 200) -> list[list[Alert]]:
    """The messages owed to ``target`` now, each a list of alerts (one alert, or a digest of several):
    pending alerts of ``kind`` never tried there, or whose retry is due.

    A critical alert is a message of its own, at once. The others wait while the target had a message of
    this kind within the digest interval, then go out together as one digest.
    """
    now = now or db_now(db)
    with session_scope(db) as s:
        rows = list(s.exec(select(Alert, AlertDelivery).join(
            AlertDelivery, (col(AlertDelivery.alert_id) == col(Alert.id)) & (col(AlertDelivery.target) == target.key),
            isouter=True).where(col(Alert.kind) == kind, col(Alert.state) == "pending")
            .order_by(col(Alert.id)).limit(limit)).all())
        owed = [a for a, d in rows if d is None or (d.state == "pending" and (d.next_try_at is None
                                                                                or d.next_try_at <= now))]
        if not owed:
            return []
        last = s.exec(select(func.max(AlertDelivery.sent_at)).join(Alert, col(Alert.id) == col(AlertDelivery.alert_id))
                      .where(col(Alert.kind) == kind, col(AlertDelivery.target) == target.key,
                             col(AlertDelivery.state) == "sent")).one()
    waiting = last is not None and now - last < timedelta(seconds=digest_seconds)
    messages = [[a] for a in owed if a.severity == "critical"]
    rest = [a for a in owed if a.severity != "critical"]
    if rest and not waiting:
        messages.append(rest)
    return messages


def record(db: str, alert_ids: list[int], target: Target, *, error: str | None, retry_seconds: float,
           max_attempts: int) -> None:
    """What happened to one message (one or a digest of several alerts) at one URL."""
    now = db_now(db)
    with session_scope(db) as s:
        for alert_id in alert_ids:
            row = s.exec(select(AlertDelivery).where(AlertDelivery.alert_id == alert_id,
                                                     AlertDelivery.target == target.key)).first()
            if row is None:
                row = AlertDelivery(alert_id=alert_id, target=target.key, label=target.label[:200])
                s.add(row)
            row.attempts += 1
            if error is None:
                row.state, row.sent_at, row.last_error, row.next_try_at = "sent", now, None, None
            elif row.attempts >= max_attempts:
                row.state, row.last_error, row.next_try_at = "failed", error[:500], None
            else:
                row.last_error = error[:500]
                row.next_try_at = now + timedelta(seconds=retry_seconds * 2 ** (row.attempts - 1))


def settle(db: str, kind: str, targets: list[Target]) -> None:
    """Each pending alert of ``kind`` takes the state its deliveries to today's URLs add up to."""
    keys = {t.key for t in targets}
    with session_scope(db) as s:
        pending = list(s.exec(select(Alert).where(Alert.kind == kind, Alert.state == "pending")).all())
        ids = [a.id for a in pending if a.id is not None]
        deliveries: dict[int, list[AlertDelivery]] = {}
        if ids:
            for d in s.exec(select(AlertDelivery).where(col(AlertDelivery.alert_id).in_(ids))).all():
                if d.target in keys:
                    deliveries.setdefault(d.alert_id, []).append(d)
        for alert in pending:
            mine = deliveries.get(alert.id or 0, [])
            alert.attempts = max((d.attempts for d in mine), default=0)
            errors = [f"{d.label}: {d.last_error}" for d in mine if d.last_error]
            alert.last_error = "; ".join(errors)[:500] or None
            if len(mine) < len(keys) or any(d.state == "pending" for d in mine):
                continue
            if all(d.state == "sent" for d in mine):
                alert.state, alert.sent_at = "sent", max(d.sent_at for d in mine if d.sent_at is not None)
                alert.batch = f"{kind}:{len(mine)} url(s)"
            else:
                alert.state = "failed"


def failed_deliveries(db: str, limit: int = 20) -> list[tuple[Alert, AlertDelivery]]:
    """Alerts some URL refused every time it was tried, newest first (the dashboard shows them)."""
    with session_scope(db) as s:
        return [(a, d) for a, d in s.exec(select(Alert, AlertDelivery).join(
            AlertDelivery, col(AlertDelivery.alert_id) == col(Alert.id)).where(col(AlertDelivery.state) == "failed")
            .order_by(col(AlertDelivery.id).desc()).limit(limit)).all()]
