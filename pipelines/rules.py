"""The status table (data) and ``decide`` (a pure function): which Autotask status an event sets.

Defaults follow the MSP's knowledge base ("Ticket Statuses"): statuses that must only be set "by
workflow rules or APIs" are set here. A TOML file named by ``ATRELAY_RULES_FILE`` overrides rows::

    [events."timezest.cancelled"]
    status = "Follow Up Needed:Resource"   # or "" for a note only
    note = true

    [events."form.submitted"]
    status = "Received Form Response"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from connectors.common.events import EventType, PartnerEvent

__all__ = [
    "DEFAULT_RULES",
    "Ignore",
    "Rule",
    "RulesError",
    "Transition",
    "decide",
    "load_rules",
]


class RulesError(Exception):
    """The rules file is malformed; the message names the row and the problem."""


@dataclass(frozen=True)
class Rule:
    status: str | None  # target status label; None = add a note only
    note: bool = True
    follow_up: EventType | None = None  # derived event once this rule's transition is applied


DEFAULT_RULES: dict[EventType, Rule] = {
    EventType.FORM_SUBMITTED: Rule("Received Form Response"),
    EventType.MC_ESCALATED: Rule("Sent from MC"),
    EventType.MC_OUT_OF_SCOPE: Rule("Out of Scope"),
    EventType.MC_NO_CONTACT: Rule("MC No Contact", follow_up=EventType.MC_NO_CONTACT_FOLLOW_UP),
    # The knowledge base's workflow rule: MC No Contact is moved on to Waiting Customer.
    EventType.MC_NO_CONTACT_FOLLOW_UP: Rule("Waiting Customer"),
    EventType.TIMEZEST_LINK_SENT: Rule("Scheduling Link Sent"),
    EventType.TIMEZEST_SCHEDULED: Rule("Scheduled"),
    EventType.TIMEZEST_CANCELLED: Rule(None, note=True),
}


@dataclass(frozen=True)
class Transition:
    """Set ``status`` (None: leave the status alone) and/or add a note."""

    status: str | None
    note: bool
    follow_up: EventType | None = None


@dataclass(frozen=True)
class Ignore:
    reason: str


def decide(event: PartnerEvent, rules: dict[EventType, Rule]) -> Transition | Ignore:
    rule = rules.get(event.type)
    if rule is None:
        return Ignore(f"no-rule: {event.type}")
    if rule.status is None and not rule.note:
        return Ignore("rule-disabled")
    return Transition(status=rule.status, note=rule.note, follow_up=rule.follow_up)


def load_rules(path: Path | None) -> dict[EventType, Rule]:
    """The defaults, with the rows of ``path`` (if any) laid over them."""
    rules = dict(DEFAULT_RULES)
    if path is None:
        return rules
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"rules file {path}: {exc}") from None
    events = data.get("events", {})
    if not isinstance(events, dict):
        raise RulesError(f"rules file {path}: [events] must be a table")
    for name, row in events.items():
        try:
            etype = EventType(name)
        except ValueError:
            known = ", ".join(e.value for e in EventType)
            raise RulesError(f"rules file {path}: unknown event type {name!r}; known: {known}") from None
        if not isinstance(row, dict) or set(row) - {"status", "note"}:
            raise RulesError(f"rules file {path}: [events.{name!r}] takes only 'status' and 'note'")
        rule = rules[etype]
        if "status" in row:
            if not isinstance(row["status"], str):
                raise RulesError(f"rules file {path}: {name}.status must be a string")
            rule = replace(rule, status=row["status"].strip() or None)
        if "note" in row:
            if not isinstance(row["note"], bool):
                raise RulesError(f"rules file {path}: {name}.note must be true or false")
            rule = replace(rule, note=row["note"])
        rules[etype] = rule
    return rules
