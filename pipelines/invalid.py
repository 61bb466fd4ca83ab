"""Signed requests whose body fails validation: kept whole as ``invalid`` events, re-checked on replay.

Why: a request with a good signature is authenticated data from a partner (or Autotask). If its body
does not pass today's checks (a new field spelling, a ticket number we cannot read yet), refusing it
and keeping nothing loses the event for good: the sender has been answered 422 and will not send it
differently. So it is recorded whole, in state ``invalid``, shown with the dead letters, and an
operator can replay it once the code or the rules are fixed. A replay runs the very checks the
ingress runs (:func:`check_webhook`, :func:`check_callout`) on the stored bytes: if they pass now, the
event gets its real type, ticket and external id and runs like any other; if not, it stays invalid
with the current reason. Unsigned requests are never kept here: anyone can send those, so they only
reach the capped rejections table.

An invalid event's ``event_type`` is ``invalid`` and its ``external_id`` is ``invalid:...``, so a
valid copy of the same message delivered later (same ``webhook-id``) is still a new event, and a
replay that finds one already recorded does not run the message twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlmodel import Session, select

from connectors.autotask.callouts import CalloutPayload, canonical_digest, dedupe_key, parse_callout
from connectors.common.events import Observation, Source
from connectors.common.text import one_line
from pipelines.audit import InboundEvent
from pipelines.clock import CLAMPED_HEADER, clamp_future
from pipelines.registry import WEBHOOKS, WebhookConnector

__all__ = [
    "DEFAULT_MAX_SKEW_SECONDS",
    "INVALID_TYPE",
    "CheckedCallout",
    "InvalidBody",
    "Valid",
    "callout_key",
    "check_callout",
    "check_webhook",
    "field_errors",
    "ignored_key",
    "revalidate_into",
    "webhook_key",
]

#: The event type recorded for a body that is not (yet) an event of any type.
INVALID_TYPE = "invalid"
_PREFIX = "invalid:"
#: ``ATRELAY_MAX_CLOCK_SKEW_SECONDS``'s default, for a replay whose caller does not pass the setting.
DEFAULT_MAX_SKEW_SECONDS = 300.0
_EXTERNAL_ID_MAX = 200  # the audit column's width


class InvalidBody(Exception):
    """The body failed a check: the HTTP status the sender gets, the reason, the fields at fault."""

    def __init__(self, status: int, reason: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.fields = status, reason, fields or []


@dataclass(frozen=True)
class Valid:
    """What the audit row needs from a body that passed: its index columns."""

    event_type: str
    external_id: str
    ticket_id: int | None
    ticket_number: str | None
    occurred_at: datetime | None
    clamped_from: datetime | None = None  # the partner's own time when it was clamped


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as ``[{"field": "data.ticket_number", "message": ...}]`` (the 422 body)."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(body)"
        # A validator's message may quote the sender's value: shown escaped, storable in any audit DB.
        out.append({"field": one_line(loc, 200),
                    "message": one_line(str(err.get("msg", "invalid")).removeprefix("Value error, "), 300)})
    return out


def _json(body: bytes) -> None:
    try:
        json.loads(body)
    except RecursionError:
        raise InvalidBody(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer over Python's 4,300 digits
        raise InvalidBody(400, f"malformed JSON: {exc}") from None


def check_webhook(conn: WebhookConnector, body: bytes, webhook_id: str, received_at: datetime,
                  max_skew_seconds: float) -> Valid:
    """A partner webhook body's checks after its signature (ingress and replay): JSON, shape, time."""
    _json(body)
    try:
        payload = conn.parse(body)
    except ValidationError as exc:
        fields = field_errors(exc)
        raise InvalidBody(422, f"{fields[0]['field']}: {fields[0]['message']}", fields) from None
    try:
        # Stored in UTC: a valid ISO date near year 1 or 9999 can overflow once converted.
        occurred = payload.timestamp.astimezone(UTC) if payload.timestamp else None
    except (OverflowError, ValueError):
        raise InvalidBody(422, "timestamp: out of range once converted to UTC") from None
    occurred, clamped = clamp_future(occurred, received_at, max_skew_seconds)
    return Valid(payload.event_type.value, webhook_id, payload.data.ticket_id, payload.data.ticket_number,
                 occurred, clamped)


@dataclass(frozen=True)
class CheckedCallout:
    """A signed callout that passed the checks: what it is, its time, and whether atrelay takes it."""

    payload: CalloutPayload
    occurred_at: datetime | None
    clamped_from: datetime | None = None  # Autotask's EventTime when it was clamped to the receipt
    ignored: str | None = None  # why atrelay keeps it only as a record (an entity or action it does not watch)


def _admission(payload: CalloutPayload, *, note: bool) -> str | None:
    """Why a well-formed callout is only recorded, not run (None: it is run).

    Answered 2xx whatever the reason: any other answer makes Autotask retry five times and count the
    failure toward deactivating the webhook, and no retry would change what the callout is.
    """
    url, wanted = ("notes", "note") if note else ("tickets", "ticket")
    if payload.entity is None:
        return (f"EntityType '{one_line(payload.entity_type, 60)}' is neither a ticket nor a ticket note: "
                "atrelay does not watch it")
    if payload.entity != wanted:
        return f"EntityType '{one_line(payload.entity_type, 60)}' on the {url} URL, which takes {wanted} callouts only"
    if payload.verb is None:
        return f"Action '{one_line(payload.action, 60)}' is none of Create, Update, Delete"
    if payload.verb == "delete":
        return f"a deleted {'ticket note' if note else 'ticket'}: no status to keep true"
    return None


def check_callout(body: bytes, *, note: bool, received_at: datetime | None = None,
                  max_skew_seconds: float = DEFAULT_MAX_SKEW_SECONDS) -> CheckedCallout:
    """An Autotask callout's checks after its signature (ingress and replay): JSON, shape, time, entity.

    ``EventTime`` further ahead of ``received_at`` than ``max_skew_seconds`` is clamped to it, as partner
    times are: a callout dated 9999-12-31 would otherwise make every later change on its ticket look older.
    """
    _json(body)
    try:
        payload = parse_callout(body)
    except ValidationError as exc:
        fields = [{"field": one_line(".".join(str(p) for p in e.get("loc", ())) or "(body)", 200),
                   "message": one_line(e.get("msg", "invalid"), 300)} for e in exc.errors()]
        raise InvalidBody(422, f"{fields[0]['field']}: {fields[0]['message']}", fields) from None
    occurred = payload.event_time
    if occurred is not None:
        try:
            occurred = (occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC)).astimezone(UTC)
        except (OverflowError, ValueError):
            raise InvalidBody(422, "EventTime: out of range once converted to UTC") from None
    occurred, clamped = clamp_future(occurred, received_at or datetime.now(UTC), max_skew_seconds)
    return CheckedCallout(payload, occurred, clamped, _admission(payload, note=note))


def _fit(key: str) -> str:
    """``invalid:<key>``, with a key too long for the column replaced by its digest."""
    if len(_PREFIX) + len(key) <= _EXTERNAL_ID_MAX:
        return _PREFIX + key
    return f"{_PREFIX}sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def webhook_key(webhook_id: str) -> str:
    """The external id of an invalid partner webhook: its message id, marked (one row per message)."""
    return _fit(f"webhook:{webhook_id}")


def callout_key(body: bytes, *, note: bool) -> str:
    """The external id of an invalid Autotask callout: which URL it came to, and the digest of its JSON
    value (escaped or not, the same callout is one record; see :func:`canonical_digest`)."""
    try:
        digest = canonical_digest(body)
    except (ValueError, RecursionError):
        digest = hashlib.sha256(body).hexdigest()
    return f"{_PREFIX}{'notes' if note else 'tickets'}:{digest}"


def ignored_key(key: str, *, note: bool) -> str:
    """The external id of a callout recorded as ignored: marked, so a callout that the same key names
    later (after a fix, say) is still a new event; a redelivery of this one is its duplicate."""
    full = f"ignored:{'notes' if note else 'tickets'}:{key}"
    return full if len(full) <= _EXTERNAL_ID_MAX else f"ignored:sha256:{hashlib.sha256(full.encode()).hexdigest()}"


def _revalidate(row: InboundEvent, max_skew_seconds: float) -> Valid:
    if row.source == Source.AUTOTASK.value:
        note = row.external_id.startswith(f"{_PREFIX}notes:")
        checked = check_callout(row.body, note=note, received_at=row.received_at, max_skew_seconds=max_skew_seconds)
        if checked.ignored is not None:  # valid now, but not something atrelay runs: it stays where it is
            raise InvalidBody(422, f"not run: {checked.ignored}")
        kind = Observation.NOTE_ADDED if note else Observation.TICKET_CHANGED
        payload = checked.payload
        return Valid(kind.value, dedupe_key(payload, row.body), payload.ticket_id, None, checked.occurred_at,
                     checked.clamped_from)
    conn = next((c for c in WEBHOOKS.values() if c.source.value == row.source), None)
    webhook_id = (row.headers or {}).get("webhook-id")
    if conn is None or not webhook_id:
        raise InvalidBody(422, f"no webhook check for source {row.source!r} (or no webhook-id kept)")
    return check_webhook(conn, row.body, webhook_id, row.received_at, max_skew_seconds)


def revalidate_into(session: Session, row: InboundEvent,
                    max_skew_seconds: float = DEFAULT_MAX_SKEW_SECONDS) -> str | None:
    """Re-check an invalid event's stored body with today's code, inside the replay's transaction.

    When it passes, the row takes the event's real type, ticket, time and external id (the caller
    then queues it) and None is returned. Otherwise the row stays invalid with the current reason,
    and the reason is returned. A valid copy of the same message already recorded means the message
    is not run a second time.
    """
    try:
        valid = _revalidate(row, max_skew_seconds)
    except InvalidBody as bad:
        row.reason = f"still invalid: {bad.reason}"[:2000]
        session.add(row)
        return row.reason
    copy = session.exec(select(InboundEvent.id).where(
        InboundEvent.source == row.source, InboundEvent.external_id == valid.external_id)).first()
    if copy is not None:
        row.reason = f"valid now, but the same message was received valid as event #{copy}: not run twice"
        session.add(row)
        return row.reason
    row.event_type, row.external_id = valid.event_type, valid.external_id
    row.ticket_id, row.ticket_number, row.occurred_at = valid.ticket_id, valid.ticket_number, valid.occurred_at
    if valid.clamped_from is not None:
        row.headers = {**(row.headers or {}), CLAMPED_HEADER: valid.clamped_from.isoformat()}
    return None
