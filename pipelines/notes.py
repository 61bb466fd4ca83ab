"""The ticket note atrelay writes: what changed, why, and which event caused it (pure text).

Layout, atrelay's own lines first and the partner's text after, quoted::

    [atrelay:event:42:3f9c0a1b2d] atrelay event #42
    atrelay changed the ticket status from New to Received Form Response.
    Why: a web form was submitted.

    Partner's details, quoted as received:
    > Event id: msg_...
    > Form: new-user
    > Submitted by: Jane Example <jane@example.com>
    > First name: Sam
    > Notes: first line
    >   second line

    Source: webform, happened ..., received ....

* The **marker** is the first line, so the 32,000-character limit can never cut it off, and it
  carries a tag keyed with a per-deployment secret: partner text cannot forge a marker that a
  retry would mistake for its own note. Anything in partner text that looks like a marker is
  neutralised.
* **Partner text** is quoted line by line (``> ``) and kept apart from atrelay's sentences; values
  never start a line of their own, so an answer cannot pose as "atrelay changed the status ...".
  Every piece of it: the answers, who submitted the form, even the sender's event id. The "Why:" and
  "Source:" lines hold atrelay's words only (a connector's ``summary`` is atrelay's sentence; what the
  partner said goes in ``details``). Over the budget it is cut with a visible "... N more characters"
  line.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime

from connectors.common.events import PartnerEvent

__all__ = ["DESCRIPTION_BUDGET", "marker", "render_note"]

DESCRIPTION_BUDGET = 32_000  # Autotask's note description limit (REST docs, TicketNotes entity)
_MARKERISH = re.compile(r"\[\s*atrelay\s*:[^\]]*\]?", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def marker(event_id: int, key: str = "") -> str:
    """The tag atrelay puts in each of its notes, so a re-run can find a note whose creation was not recorded."""
    tag = hmac.new(key.encode(), f"note:{event_id}".encode(), hashlib.sha256).hexdigest()[:10]
    return f"[atrelay:event:{event_id}:{tag}]"


def _clean(text: str) -> str:
    """Partner text with anything marker-like neutralised (brackets dropped, so it no longer matches)."""
    return _MARKERISH.sub(lambda m: "(atrelay-like tag removed)", text)


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", _clean(text)).strip()


def _quoted(details: list[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for label, value in details:
        parts = _clean(value).splitlines() or [""]
        lines.append(f"> {_one_line(label)}: {parts[0]}")
        lines.extend(f">   {part}" for part in parts[1:])
    return lines


def _cut(lines: list[str], budget: int) -> list[str]:
    """Keep whole lines within ``budget`` characters; say how much was left out."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) + 1 > budget:
            rest = sum(len(x) + 1 for x in lines[i:])
            room = budget - used - 80
            if room > 40:
                out.append(line[:room] + " ...")
                rest -= room
            out.append(f"> ... {rest} more characters (the full text is kept in atrelay's audit log)")
            return out
        out.append(line)
        used += len(line) + 1
    return out


def render_note(
    event: PartnerEvent,
    *,
    event_id: int,
    from_status: str | None,
    to_status: str | None,
    received_at: datetime,
    key: str = "",
    budget: int = DESCRIPTION_BUDGET,
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
    top = [f"{marker(event_id, key)} atrelay event #{event_id}", head, f"Why: {_one_line(event.summary)}."]
    tail = [
        "",
        f"Source: {event.source}, happened {event.occurred_at.isoformat(timespec='seconds')}, "
        f"received {received_at.isoformat(timespec='seconds')}.",
    ]
    # The sender's own id for the event is the sender's text too (a webhook-id is any string it likes).
    details = [("Event id", event.external_id[:200]), *event.details]
    room = budget - sum(len(x) + 1 for x in top + tail) - 60
    body = ["", "Partner's details, quoted as received:", *_cut(_quoted(details), max(room, 200))]
    return title, "\n".join([*top, *body, *tail])
