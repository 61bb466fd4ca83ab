"""The ticket note atrelay writes: what changed, why, and which event caused it (pure text)."""

from __future__ import annotations

from datetime import datetime

from connectors.common.events import PartnerEvent

__all__ = ["marker", "render_note"]


def marker(event_id: int) -> str:
    """A tag in every note, so a re-run can find a note whose creation was not recorded."""
    return f"[atrelay:event:{event_id}]"


def render_note(
    event: PartnerEvent,
    *,
    event_id: int,
    from_status: str | None,
    to_status: str | None,
    received_at: datetime,
) -> tuple[str, str]:
    if to_status is not None and from_status == to_status:
        title = f"Status confirmed: {to_status} ({event.source})"
        head = f"The ticket was already {to_status}; atrelay recorded why and left the status as it was."
    elif to_status is not None:
        title = f"Status set to {to_status} ({event.source})"
        head = f"atrelay changed the ticket status from {from_status or 'unknown'} to {to_status}."
    else:
        title = f"Partner update from {event.source}: {event.type}"
        head = f"atrelay recorded a partner event; the status stays {from_status or 'unchanged'}."
    lines = [head, f"Why: {event.summary}."]
    if event.details:
        lines.append("")
        lines.extend(f"{label}: {value}" for label, value in event.details)
    lines += [
        "",
        f"Source: {event.source} event {event.external_id}, "
        f"happened {event.occurred_at.isoformat(timespec='seconds')}, "
        f"received {received_at.isoformat(timespec='seconds')}.",
        f"atrelay event #{event_id} {marker(event_id)}",
    ]
    return title, "\n".join(lines)
