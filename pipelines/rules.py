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

    [autotask."guard-complete-open-checklist"]  # a knowledge-base guard (docs/rules.md): off ...
    enabled = false
    [events."guard.deferred_no_due_date"]       # ... or re-target the status it sets
    status = "Follow Up Needed: Admin"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from connectors.common.events import EventType, PartnerEvent

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_WATCH_RULES",
    "GUARD_RULES",
    "TIMEZEST_CASES",
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
    # guard.clobbered: no fixed status; it sets again the status atrelay set and a stale form undid.
    reapply: bool = False


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
    # The knowledge-base guards (docs/rules.md): what each sets when its rule finds a breach.
    EventType.GUARD_SCHEDULING_LINK: Rule("Scheduling Link Sent"),
    EventType.GUARD_WAITING_AFTER_LINK: Rule("Scheduling Link Sent"),
    EventType.GUARD_COMPLETE_OPEN_CHECKLIST: Rule("Incomplete - Re-opened"),
    EventType.GUARD_DEFERRED_NO_DUE_DATE: Rule("Follow Up Needed:Resource"),
    EventType.GUARD_CLOBBERED: Rule(None, reapply=True),
}


#: What atrelay does with a TimeZest event, by what TimeZest's own PSA actions already did to the ticket
#: (they set a status and write a note as TimeZest's API resource, ATRELAY_TIMEZEST_RESOURCE_ID): (TimeZest
#: set the status atrelay would set, TimeZest set another status, TimeZest set no status). Where atrelay
#: sets no status, TimeZest's own note for the transition decides about atrelay's. Shown by `atrelay
#: rules`; docs/rules.md gives the same text (a unit test compares them); pipelines.process does it.
TIMEZEST_CASES: dict[EventType, tuple[str, str, str]] = {
    EventType.TIMEZEST_LINK_SENT: (
        "nothing: applied, already-set-by-timezest (its note says it)",
        "the rule's status, one note (a status set after the event by a person stands: superseded)",
        "sets the rule's status, one note saying TimeZest's own update had not arrived"),
    EventType.TIMEZEST_SCHEDULED: (
        "nothing: applied, already-set-by-timezest; undone by a stale edit form: restored once (guard-clobbered)",
        "the rule's status, one note (a status set after the event by a person stands: superseded)",
        "sets the rule's status, one note saying TimeZest's own update had not arrived"),
    EventType.TIMEZEST_CANCELLED: (
        "TimeZest's status stays; a note only when TimeZest's note lacks the cancelled appointment's time, "
        "saying only that",
        "TimeZest's status for the cancellation stays (its choice); a note as when it set the rule's status",
        "sets the rule's status, one note leaving out what TimeZest's own note says; with status \"\" or "
        "before anyone booked, no status and no note when TimeZest's note says it all"),
    EventType.TIMEZEST_RESCHEDULED: (
        "(TimeZest sets no status for a reschedule)",
        "(TimeZest sets no status for a reschedule)",
        "no status; a note with the new time, none when TimeZest's note says the new time and with whom, "
        "only what it lacks otherwise"),
}


@dataclass(frozen=True)
class WatchRule:
    """What a change seen in Autotask means: a status set (or a note added) -> a partner event.

    ``status`` is the label that triggers a ``status`` rule; ``note_title`` rules match the note's
    title against ``ATRELAY_WEBFORM_NOTE_TITLE``. Changes made by atrelay itself never trigger one.
    """

    name: str
    on: str  # "status" | "note" | "guard" (a knowledge-base guard: see GUARD_RULES)
    emits: EventType
    kb: str  # the knowledge-base line it implements, shown by `atrelay rules`
    status: str | None = None
    enabled: bool = True
    undo: str | None = None  # guards: how a person takes the guard's change back (said in its note)

    def switched_off(self) -> str:
        return f"rule-disabled: [autotask.{self.name!r}] enabled = false in the rules file"


_OFF = "to switch this rule off: [autotask.\"{}\"] enabled = false in atrelay's rules file"

#: The knowledge-base rules people follow by hand because Autotask cannot enforce them (issue 12).
#: ``status`` is the status that triggers the guard (re-targetable); what it sets is DEFAULT_RULES'.
GUARD_RULES: dict[str, WatchRule] = {
    rule.name: rule
    for rule in (
        WatchRule("guard-scheduling-link", "guard", EventType.GUARD_SCHEDULING_LINK,
                  kb="If you include the scheduling link in a ticket note to the customer, you must set the "
                     "status to SCHEDULING LINK SENT manually. TZ will not do it",
                  undo="set the status you meant; atrelay acts once per note. " + _OFF.format("guard-scheduling-link")),
        WatchRule("guard-waiting-after-link", "guard", EventType.GUARD_WAITING_AFTER_LINK, status="Waiting Customer",
                  kb="Waiting Customer: Do not use this status after sending a scheduling link. "
                     "Use SCHEDULING LINK SENT",
                  undo="cancel the TimeZest request (or let it be scheduled) and set the status again. "
                       + _OFF.format("guard-waiting-after-link")),
        WatchRule("guard-complete-open-checklist", "guard", EventType.GUARD_COMPLETE_OPEN_CHECKLIST,
                  status="Complete",
                  kb="Incomplete - Re-opened: triggered when ticket status is set to complete but a checklist "
                     "item is not complete",
                  undo="complete the open checklist items, then set Complete again. "
                       + _OFF.format("guard-complete-open-checklist")),
        WatchRule("guard-deferred-no-due-date", "guard", EventType.GUARD_DEFERRED_NO_DUE_DATE, status="Deferred",
                  kb="Deferred: YOU MUST UPDATE THE DUE DATE WHEN DEFERRING A TICKET ... there is no way to set a "
                     "workflow rule in AT to account for this",
                  undo="set a due date in the future, then set Deferred again. "
                       + _OFF.format("guard-deferred-no-due-date")),
        WatchRule("guard-clobbered", "guard", EventType.GUARD_CLOBBERED,
                  kb="A status set by a partner's update must not be undone by an edit form opened before it "
                     "(a stale save puts the old status back)",
                  undo="to make your change stick, set the status again (atrelay re-applies only once), or set "
                       "any other status. " + _OFF.format("guard-clobbered")),
    )
}

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
} | GUARD_RULES


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
    if rule.reapply:
        if not event.reapply_status:
            return Ignore("no-status-to-re-apply")
        return Transition(status=event.reapply_status, note=rule.note, follow_up=rule.follow_up)
    return Transition(status=rule.status, note=rule.note, follow_up=rule.follow_up)


def _section(path: Path, name: str) -> dict[str, Any]:
    """One top-level table of the rules file (empty when absent), or :class:`RulesError` naming the file."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"rules file {path}: {exc}") from None
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise RulesError(f"rules file {path}: [{name}] must be a table")
    return section


def _row(path: Path, section: str, name: str, row: object, allowed: tuple[str, ...]) -> dict[str, Any]:
    """One ``[section."name"]`` row, checked to be a table of known keys; the error names the bad key."""
    takes = " and ".join(repr(k) for k in allowed)
    if not isinstance(row, dict):
        raise RulesError(f"rules file {path}: [{section}.{name!r}] must be a table; it takes only {takes}")
    unknown = sorted(set(row) - set(allowed))
    if unknown:
        # Name the offending key: a typo such as `stauts` is otherwise hard to spot in a long file.
        raise RulesError(f"rules file {path}: [{section}.{name!r}] has unknown key(s) "
                         f"{', '.join(repr(k) for k in unknown)}; it takes only {takes}")
    return row


def load_rules(path: Path | None) -> dict[EventType, Rule]:
    """The defaults, with the rows of ``path`` (if any) laid over them."""
    rules = dict(DEFAULT_RULES)
    if path is None:
        return rules
    events = _section(path, "events")
    for name, raw in events.items():
        try:
            etype = EventType(name)
        except ValueError:
            known = ", ".join(e.value for e in EventType)
            raise RulesError(f"rules file {path}: unknown event type {name!r}; known: {known}") from None
        row = _row(path, "events", name, raw, ("status", "note"))
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
    section = _section(path, "autotask")
    for name, raw in section.items():
        if name not in rules:
            raise RulesError(f"rules file {path}: unknown Autotask rule [autotask.{name!r}]; "
                             f"known: {', '.join(rules)}")
        row = _row(path, "autotask", name, raw, ("enabled", "status"))
        rule = rules[name]
        if "enabled" in row:
            if not isinstance(row["enabled"], bool):
                raise RulesError(f"rules file {path}: [autotask.{name!r}] enabled must be true or false")
            rule = replace(rule, enabled=row["enabled"])
        if "status" in row:
            takes = rule.on == "status" or (rule.on == "guard" and rule.status is not None)
            if not takes or not isinstance(row["status"], str) or not row["status"].strip():
                raise RulesError(f"rules file {path}: [autotask.{name!r}] status must be a status label "
                                 "(and only status rules and status-triggered guards take one)")
            rule = replace(rule, status=row["status"].strip())
        rules[name] = rule
    return rules
