"""Partner clocks at intake: a time too far ahead of receipt is clamped, and the clamp recorded.

Why: the ordering rule skips an event older than the last one applied to its ticket ("stale"). One
partner time in the future (``9999-12-31T23:59:59Z``, or local time labelled ``Z``) would make every
later event on that ticket look older, replays included, for good. Such a time cannot be true: it
becomes the receipt time, and what the partner said is kept in the event's headers.

The clamp is recorded among the event's headers, so this module also says which headers an event is
recorded with (:func:`own_headers`): atrelay's own marks, never a sender's, and no signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

__all__ = ["CLAMPED_HEADER", "REDACTED", "SIGNATURE_FORM_HEADER", "as_utc", "before_last", "clamp_future",
           "clamped_from", "own_headers", "signature_form"]

#: Kept in the event's headers when its partner time was clamped: the time the partner claimed.
CLAMPED_HEADER = "x-atrelay-clamped-from"
_OURS = "x-atrelay-"
#: Kept in an Autotask callout's headers: which bytes its signature covered ("raw" or "escaped").
SIGNATURE_FORM_HEADER = "x-atrelay-signature"
#: What a signature header's value is recorded as.
REDACTED = "(redacted)"
_SIGNATURES = frozenset({"x-hook-signature", "webhook-signature"})


def as_utc(moment: datetime | None) -> datetime | None:
    """A time Autotask sent (UTC, without an offset) as an aware datetime; aware times pass unchanged."""
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def clamp_future(occurred_at: datetime | None, received_at: datetime,
                 max_skew_seconds: float) -> tuple[datetime | None, datetime | None]:
    """(the time to record, the partner's own time if it was clamped, else None)."""
    if occurred_at is None or occurred_at - received_at <= timedelta(seconds=max_skew_seconds):
        return occurred_at, None
    return received_at, occurred_at


def own_headers(headers: Mapping[str, str], clamped: datetime | None,
                marks: Mapping[str, str] | None = None) -> dict[str, str]:
    """The request's headers to record: less any ``x-atrelay-*`` a sender supplied (only atrelay writes
    those), signatures redacted, plus the clamp mark when there was one and atrelay's other ``marks``.

    A stored signature would let whoever reads the audit log test guesses of a weak secret offline; the
    header is kept (that the request was signed is part of its story), its value is not.
    """
    kept = {k: (REDACTED if k.lower() in _SIGNATURES else v) for k, v in headers.items()
            if not k.lower().startswith(_OURS)}
    if clamped is not None:
        kept[CLAMPED_HEADER] = clamped.isoformat()
    kept.update(marks or {})
    return kept


def clamped_from(headers: Mapping[str, str] | None) -> str | None:
    """The partner's own time of a clamped event (as recorded), or None."""
    return (headers or {}).get(CLAMPED_HEADER)


def signature_form(headers: Mapping[str, str] | None) -> str | None:
    """For an Autotask callout: what its signature was found to cover, in words (None for other events)."""
    form = (headers or {}).get(SIGNATURE_FORM_HEADER)
    return {"raw": "the raw bytes, as delivered",
            "escaped": "the bytes once escaped as Autotask's .NET serializer writes them (delivered unescaped)"}.get(
        form or "")


def before_last(occurred_at: datetime, event_id: int, last_at: datetime | None, last_event_id: int | None) -> bool:
    """Whether an event is older than the last one applied to its ticket ("stale").

    Partner times are ordered to the second; within one second, by receipt (the event id), so two
    events stamped in the same second settle the same way whichever a worker happens to run first.
    """
    if last_at is None:
        return False
    mine, last = occurred_at.replace(microsecond=0), last_at.replace(microsecond=0)
    if mine != last:
        return mine < last
    return last_event_id is not None and event_id < last_event_id
