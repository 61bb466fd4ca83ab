"""The pure half of the TimeZest poll: given what was seen before and what TimeZest lists now, which events.

No I/O and no state: the caller (``pipelines.timezest_poll``) reads what it saw last from the audit
database, lists requests with the client, and records what this returns.

A change of status emits ``timezest.<status>`` with external id ``"{request id}:{status}"``, so
re-polls never duplicate. A request first seen already ``scheduled`` emits only that. A request
still ``scheduled`` whose ``selected_start_time`` differs from the one seen last was re-booked:
``timezest.rescheduled`` with external id ``"{request id}:rescheduled:{updated_at}"`` (one per move,
even when a later move returns to an earlier time). During the very
first poll (the bootstrap) only requests changed since ``recent_cutoff`` emit events, so switching
atrelay on does not replay months of history onto old tickets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.common.events import EventType
from connectors.timezest.parse import STATUS_EVENTS, SchedulingRequest

__all__ = ["WATCH_DAYS", "Change", "Known", "diff", "listing_floor", "watch_filter"]

OVERLAP_SECONDS = 3600  # requests created shortly before the mark may appear late in the listing
#: A request is watched while its appointment is ahead or it changed this recently: a booking can be
#: cancelled or moved long after the request was created, which a created_at window never sees.
WATCH_DAYS = 30


@dataclass(frozen=True)
class Known:
    """What the poller saw last of one request."""

    status: str
    start: int | None = None  # selected_start_time; None before booking (or before it was recorded)


@dataclass(frozen=True)
class Change:
    """One event the poll owes: ``ticketless`` ones are recorded as ignored, not run."""

    request: SchedulingRequest
    event_type: EventType
    external_id: str

    @property
    def ticketless(self) -> bool:
        ticket = self.request.autotask_ticket
        return ticket is None or (ticket.id is None and not ticket.number)


def listing_floor(high_water: int | None) -> int | None:
    """Stop listing (newest first) below this ``created_at``; None lists the whole bootstrap window."""
    return None if high_water is None else int(high_water) - OVERLAP_SECONDS


def watch_filter(now: int) -> str:
    """TQL (TimeZest's query language, https://developer.timezest.com/tql/) for the requests worth
    re-reading: appointment still ahead, or changed lately."""
    since = now - WATCH_DAYS * 86400
    return f"scheduling_request.selected_start_time GTE {now} OR scheduling_request.updated_at GTE {since}"


def diff(known: Mapping[str, str | Known], seen: Iterable[SchedulingRequest], *, bootstrap: bool,
         recent_cutoff: int) -> list[Change]:
    """Events for requests whose status (or booked time) differs from ``known`` (request id -> what
    was seen last: a status, or a :class:`Known` with the booked start time)."""
    changes: list[Change] = []
    for req in seen:
        before = known.get(req.id)
        last = before if isinstance(before, Known) else Known(before) if before is not None else None
        if bootstrap and req.updated_at < recent_cutoff:
            continue
        if last is not None and last.status == req.status:
            moved = (req.status == "scheduled" and last.start is not None
                     and req.selected_start_time is not None and req.selected_start_time != last.start)
            if moved:
                changes.append(Change(req, EventType.TIMEZEST_RESCHEDULED,
                                      f"{req.id}:rescheduled:{req.updated_at}"))
            continue
        etype = STATUS_EVENTS.get(req.status)
        if etype is None:
            continue
        changes.append(Change(req, etype, f"{req.id}:{req.status}"))
    return changes
