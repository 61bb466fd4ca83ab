"""The status table (data) and ``decide`` (a pure function): which Autotask status an event sets.

Defaults follow the MSP's knowledge base ("Ticket Statuses"): statuses that must only be set "by
workflow rules or APIs" are set here. A TOML file named by ``ATRELAY_RULES_FILE`` overrides rows::

    [events."timezest.cancelled"]
    status = "Follow Up Needed:Resource"   # or "" for a note only
    note = true

    [events."form.submitted"]
    status = "Received Form Response"

    [autotask."mc-no-contact"]               # what Autotask's own events mean (watch rules)
    enabled = false                          # switch a row off ...
    # status = "MC No Contact"               # ... or re-target the status that triggers it
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from connectors.common.events import EventType, PartnerEvent

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_WATCH_RULES",
    "Ignore",
    "Rule",
    "RulesError",
    "Transition",
    "WatchRule",
    "decide",
    "load_rules",
    "load_watch_rules",
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
    # A booked appointment cancelled: the office admin re-books it (knowledge base, "FOLLOW UP NEEDED:
    # ADMIN"). A request cancelled before anyone booked stays note only (the event says so: note_only).
    EventType.TIMEZEST_CANCELLED: Rule("Follow Up Needed: Admin"),
    EventType.TIMEZEST_RESCHEDULED: Rule(None, note=True),  # the new time in a note; status unchanged
}


@dataclass(frozen=True)
class WatchRule:
    """What a change seen in Autotask means: a status set (or a note added) -> a partner event.

    ``status`` is the label that triggers a ``status`` rule; ``note_title`` rules match the note's
    title against ``ATRELAY_WEBFORM_NOTE_TITLE``. Changes made by atrelay itself never trigger one.
    """

    name: str
    on: str  # "status" | "note"
    emits: EventType
    kb: str  # the knowledge-base line it implements, shown by `atrelay rules`
    status: str | None = None
    enabled: bool = True


DEFAULT_WATCH_RULES: dict[str, WatchRule] = {
    rule.name: rule
    for rule in (
        WatchRule("mc-escalated", "status", EventType.MC_ESCALATED, status="Sent from MC",
                  kb="Sent from MC: set by Mission Control when it escalates a ticket to the MSP"),
        WatchRule("mc-out-of-scope", "status", EventType.MC_OUT_OF_SCOPE, status="Out of Scope",
                  kb="Out of Scope: set by Mission Control for requests outside its scope"),
        WatchRule("mc-no-contact", "status", EventType.MC_NO_CONTACT, status="MC No Contact",
                  kb="MC No Contact: Mission Control could not reach the user; moved on to Waiting Customer"),
        WatchRule("emailed-form", "note", EventType.FORM_SUBMITTED,
                  kb="Received Form Response: new user form submitted and emailed from the web site to the ticket"),
    )
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
    if event.note_only:  # the connector knows this occurrence moves no status (see PartnerEvent)
        return Transition(status=None, note=rule.note) if rule.note else Ignore("rule-disabled")
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


def load_watch_rules(path: Path | None) -> dict[str, WatchRule]:
    """The default watch rules, with ``[autotask."<name>"]`` rows of ``path`` (enabled, status) laid over."""
    rules = dict(DEFAULT_WATCH_RULES)
    if path is None:
        return rules
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"rules file {path}: {exc}") from None
    section = data.get("autotask", {})
    if not isinstance(section, dict):
        raise RulesError(f"rules file {path}: [autotask] must be a table")
    for name, row in section.items():
        if name not in rules:
            raise RulesError(f"rules file {path}: unknown Autotask rule [autotask.{name!r}]; "
                             f"known: {', '.join(rules)}")
        if not isinstance(row, dict) or set(row) - {"enabled", "status"}:
            bad = sorted(set(row) - {"enabled", "status"}) if isinstance(row, dict) else []
            raise RulesError(f"rules file {path}: [autotask.{name!r}] takes only 'enabled' and 'status'"
                             + (f" (got {', '.join(bad)})" if bad else ""))
        rule = rules[name]
        if "enabled" in row:
            if not isinstance(row["enabled"], bool):
                raise RulesError(f"rules file {path}: [autotask.{name!r}] enabled must be true or false")
            rule = replace(rule, enabled=row["enabled"])
        if "status" in row:
            if rule.on != "status" or not isinstance(row["status"], str) or not row["status"].strip():
                raise RulesError(f"rules file {path}: [autotask.{name!r}] status must be a status label "
                                 "(and only status rules take one)")
            rule = replace(rule, status=row["status"].strip())
        rules[name] = rule
    return rules
