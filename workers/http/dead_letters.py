"""Dead letters in plain words for the dashboard: what happened, what to do, and whether Replay helps.

A reason in the audit DB is a stable code plus detail (``ticket-not-found: ...``,
``retries-exhausted after 5 attempts: autotask-unavailable: ...``); an operator on the first day
should not need the code table to know what to do. The raw reason stays visible next to the sentence.

Replay re-runs the stored event as it was received. Where nothing that run depends on can have
changed (the same unparseable bytes; a ticket that still does not exist), a Replay button only
produces the same dead letter again, so the page says why instead of offering it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from pipelines.audit import EventState, InboundEvent

__all__ = ["Explanation", "explain", "explain_event"]


@dataclass(frozen=True)
class Explanation:
    code: str  # the reason's leading code, "" when there is no reason
    sentence: str  # one plain sentence: what happened and what to do
    replay_helps: bool
    why_no_replay: str | None = None  # shown instead of the button


# code -> (sentence, does a replay help once the operator did what the sentence says)
_SENTENCES: dict[str, tuple[str, bool]] = {
    "autotask-auth": ("Autotask refused atrelay's credentials: check ATRELAY_AUTOTASK_USERNAME, _SECRET and "
                      "_INTEGRATION_CODE (`atrelay doctor` says which), then replay.", True),
    "unknown-status": ("The rules map this event to a status Autotask does not have (or has made inactive): fix "
                       "the rules file or the status in Autotask, restart atrelay, then replay.", True),
    "retries-exhausted": ("Autotask kept failing until the retry horizon passed: once Autotask answers again "
                          "(see the health panel), replay.", True),
    "autotask-rejected": ("Autotask rejected the change (see its error below): correct the ticket in Autotask "
                          "(for example a required field or a closed ticket), then replay.", True),
    "invalid": ("The partner's signed request failed validation and was kept as received: replay re-checks it "
                "with the current atrelay (after a fix), or ask the partner to resend it corrected.", True),
}
_NOT_FOUND = ("Autotask has no ticket with this number or id: check the ticket reference in the partner's "
              "system (a typo, a merged or deleted ticket).")
_NOT_FOUND_WHY = ("Replay is not offered: it would look up the same ticket reference, and no event since has "
                  "found that ticket in Autotask. If the ticket exists now, `atrelay replay {id}` runs it.")
_UNPARSEABLE = ("The stored request could not be read as this partner's event: the partner sent something atrelay "
                "does not understand.")
_UNPARSEABLE_WHY = ("Replay is not offered: it would parse the same bytes and fail the same way. Ask the partner to "
                    "resend it, or after upgrading atrelay run `atrelay replay {id}`.")


def _code(reason: str) -> str:
    head = reason.split(":", 1)[0].strip()
    return head.split(" ", 1)[0] if head.startswith("retries-exhausted") else head


def explain(event_id: int, state: str, reason: str | None, *, ticket_found_since: int | None = None) -> Explanation:
    """The dead letter (or invalid event) ``event_id`` explained.

    ``ticket_found_since``: a later event that reached the same ticket in Autotask, if any; after a
    ``ticket-not-found`` it means the ticket exists now and a replay can succeed.
    """
    text = (reason or "").strip()
    code = "invalid" if state == "invalid" else _code(text)
    if code == "ticket-not-found":
        if ticket_found_since is not None:
            return Explanation(code, f"{_NOT_FOUND} Event #{ticket_found_since} has since reached this ticket, so "
                               "a replay can succeed now.", True)
        return Explanation(code, _NOT_FOUND, False, _NOT_FOUND_WHY.format(id=event_id))
    if code == "unparseable":
        return Explanation(code, _UNPARSEABLE, False, _UNPARSEABLE_WHY.format(id=event_id))
    if code in _SENTENCES:
        sentence, helps = _SENTENCES[code]
        return Explanation(code, sentence, helps)
    return Explanation(code, "atrelay gave up on this event: read the reason below, fix the cause, then replay.",
                       True)


def explain_event(s: Session, event: InboundEvent) -> Explanation:
    """``explain`` for a stored event, looking up whether a later event has found its ticket since."""
    found: int | None = None
    if (event.reason or "").startswith("ticket-not-found") and (event.ticket_number or event.ticket_id):
        same = (col(InboundEvent.ticket_number) == event.ticket_number) if event.ticket_number else (
            col(InboundEvent.ticket_id) == event.ticket_id)
        # Applied or skipped with a ticket id: that run read the ticket in Autotask, so it exists.
        found = s.exec(select(InboundEvent.id).where(
            col(InboundEvent.id) > (event.id or 0), same, col(InboundEvent.ticket_id).is_not(None),
            col(InboundEvent.state).in_([EventState.APPLIED, EventState.SKIPPED]),
        ).order_by(col(InboundEvent.id)).limit(1)).first()
    return explain(event.id or 0, str(event.state), event.reason, ticket_found_since=found)
