"""The write gate: every Autotask status write is decided right before its PATCH, from the ticket as it is then.

Why: a check made at one moment and a write made at another is a wrong status waiting for a retry.
A PATCH that got a 429 and waited for its retry while a technician completed the ticket must not
move it anyway; a guard queued behind other work must not fire after the person put things right.
So the run that is about to write (first try or retry, partner event, follow-up or guard) asks this
module, under the ticket's lease, from the ticket as it is now and from what changed since the
event's time:

* **duplicate-escalation**: another report of the same escalation already took it on (asked first:
  the other report's note says it all, even when this one is stale by now);
* **stale**: an event newer than this one was already applied to the ticket;
* **superseded**: anyone but atrelay changed the status after the event's time: changes atrelay
  recorded (callouts, reconciliation) first; when the ticket was active after the event and none
  is recorded, its TicketHistory decides (a lost callout hides nothing);
* **status-changed**: a follow-up or guard acts only while the ticket still shows the status it saw;
  a follow-up not even then when someone moved the ticket off it in between (the status shown is a
  new cause's, with its own follow-up);
* **breach-gone**: a guard's rule is no longer broken (the due date was set, the item completed).

The effect ledger keeps the write itself exactly-once, but it is never a reason to skip this: a
PATCH whose outcome is unknown is first resolved from the ticket and its history (:func:`patch_landed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from connectors.autotask.history import HistoryEntry, status_changes_after
from connectors.autotask.models import Ticket, TicketNote
from connectors.autotask.picklists import Picklists, UnknownPicklistValue
from connectors.common.events import EventType, PartnerEvent
from pipelines import guards, store
from pipelines.audit import EffectLedger, TicketState
from pipelines.clock import as_utc, before_last
from pipelines.context import Context

__all__ = [
    "ESCALATIONS",
    "OVERWRITABLE",
    "TIMEZEST",
    "TIMEZEST_FACTS",
    "TIMEZEST_PSA",
    "History",
    "Verdict",
    "decide_write",
    "patch_landed",
    "saw_timezest",
    "set_to",
    "timezest_facts",
    "timezest_note",
    "timezest_noted",
    "timezest_psa_seen",
    "timezest_set_a_status",
    "timezest_wrote",
]

#: Event types that report one escalation, possibly twice (MC's webhook and the status MC set).
ESCALATIONS = frozenset({EventType.MC_ESCALATED, EventType.MC_OUT_OF_SCOPE, EventType.MC_NO_CONTACT})
#: TimeZest's events: its own PSA actions may already have written the status (and a note) for them. TimeZest
#: notes a reschedule on the ticket too (help.timezest.com, "Rescheduling and Cancellation": it "will ...
#: leave internal notes on the ticket"), though it sets no status for one.
TIMEZEST = frozenset({EventType.TIMEZEST_LINK_SENT, EventType.TIMEZEST_SCHEDULED, EventType.TIMEZEST_CANCELLED,
                      EventType.TIMEZEST_RESCHEDULED})
#: How TimeZest's note for a transition speaks of it (title or text): what tells its note for this
#: transition from its notes for the same request's earlier ones, written moments before.
_TZ_KIND: dict[EventType, re.Pattern[str]] = {
    EventType.TIMEZEST_LINK_SENT: re.compile(r"\bsent\b|\blink\b", re.I),
    EventType.TIMEZEST_SCHEDULED: re.compile(r"\bbooked\b|\bscheduled\b", re.I),
    EventType.TIMEZEST_CANCELLED: re.compile(r"cancel", re.I),
    EventType.TIMEZEST_RESCHEDULED: re.compile(r"resched|\bmoved\b|\bnew time\b", re.I),
}
#: The facts of a TimeZest event (its details' labels) that atrelay's note adds when TimeZest's own note
#: does not say them. Who cancelled is not among them: TimeZest's API does not say (a client's reason
#: for cancelling goes into TimeZest's own note, per its help centre).
TIMEZEST_FACTS: dict[EventType, tuple[str, ...]] = {
    EventType.TIMEZEST_CANCELLED: ("Cancelled appointment",),
    EventType.TIMEZEST_RESCHEDULED: ("New appointment", "With"),
}
#: Statuses an event may overwrite even when they were set after it: Autotask's own "e-mail arrived"
#: rule sets Note Emailed In for the very e-mail that carries the form (the knowledge base wants
#: Received Form Response then).
OVERWRITABLE: dict[EventType, tuple[str, ...]] = {EventType.FORM_SUBMITTED: ("Note Emailed In",)}
#: Mission Control's webhook and the status it sets for one escalation come at most this far apart.
_ECHO = timedelta(minutes=2)
#: The partner sighting (pipelines.store.saw_partner) of TimeZest's own PSA actions.
TIMEZEST_PSA = "timezest-psa"
#: A PATCH is looked for in TicketHistory from a little before its start (clocks differ).
_PATCH_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class Verdict:
    """The gate's answer: ``kind`` is ``write`` or why not (stale, superseded, status-changed, ...)."""

    kind: str
    why: str | None = None
    echo_of: int | None = None  # duplicate-escalation: the other channel's report it pairs with
    # write: nobody but atrelay changed the status after the event (none of it, not even to the event's
    # own status): once this write lands, later events may rely on it (:func:`_own_write_explains`).
    quiet: bool = False
    # a guard's write: the person set the status it guards again after the change it was derived from;
    # it acts for that latest change (the breach holds on the ticket as that change left it)
    acting_for: datetime | None = None

    @property
    def write(self) -> bool:
        return self.kind == "write"


class History:
    """The ticket's TicketHistory, read at most once per run and only when a check needs it."""

    def __init__(self, ctx: Context, ticket_id: int) -> None:
        self.ctx, self.ticket_id = ctx, ticket_id
        self._entries: list[HistoryEntry] | None = None

    def entries(self) -> list[HistoryEntry]:
        if self._entries is None:
            self._entries = self.ctx.client.ticket_history(self.ticket_id)
        return self._entries

    @property
    def read(self) -> bool:
        """Has a check of this run read it already (so asking costs no call)?"""
        return self._entries is not None


def set_to(entry: HistoryEntry, label: str) -> bool:
    """Does this status-change row set ``label``? (The text is "... changed from X to Y".)"""
    return label.lower() in (entry.detail or entry.action or "").lower().rsplit(" to ", 1)[-1]


def decide_write(ctx: Context, *, event_id: int, event: PartnerEvent, ticket: Ticket, target_id: int | None,
                 lists: Picklists, history: History, observation_id: int | None = None) -> Verdict:
    """May ``event`` set ``target_id`` on ``ticket`` now? Asked under the ticket's lease, right before writing.

    ``observation_id``: the callout or reconciliation run the event was derived from, if any.
    """
    if event.type in ESCALATIONS:
        # First: a second report of an escalation another report took on says nothing new, whether or
        # not it is stale or superseded by now (the other report's note already says it).
        echo = _duplicate(ctx, event_id, event, ticket, target_id=target_id, lists=lists, history=history,
                          observation_id=observation_id)
        if echo is not None:
            return Verdict("duplicate-escalation", f"duplicate-escalation: event #{echo} already handled it",
                           echo_of=echo)
    last = store.ticket_state(ctx.db, ticket.id)
    # Same second: receipt order decides (pipelines.clock.before_last), never the worker's luck.
    if last is not None and before_last(event.occurred_at, event_id, last.last_occurred_at, last.last_event_id):
        return Verdict("stale", "stale: a newer event was already applied")
    # Even when its status is already there (someone else set it since), an event older than a
    # person's change is old news: applied, its follow-up (MC No Contact -> Waiting Customer) would
    # act for it on a ticket the person moved on from.
    quiet = False
    if target_id is not None:
        superseded, quiet = _superseded(ctx, event, ticket, target_id=target_id, lists=lists, history=history,
                                        state=last)
        if superseded is not None:
            return Verdict("superseded", superseded)
    if event.expect_status_id is not None and ticket.status != event.expect_status_id:
        return Verdict("status-changed", "status-changed")
    if event.expect_status_id is not None and not event.type.value.startswith("guard."):
        left = _left_and_back(ctx, event, ticket, lists=lists, history=history, state=last)
        if left is not None:
            return Verdict("status-changed", left)
    gone = guards.breach_gone(ctx, event.type, ticket)
    if gone is not None:
        return Verdict("breach-gone", gone)
    if event.type.value.startswith("guard.") and target_id is not None:
        return Verdict("write", acting_for=_set_again(ctx, event, ticket, history))
    return Verdict("write", quiet=quiet)


def _set_again(ctx: Context, event: PartnerEvent, ticket: Ticket, history: History) -> datetime | None:
    """When a person changed the status after the change a guard was derived from, and it shows the
    guarded status again (Deferred, Waiting Customer, Deferred): the time of that latest change.

    The write stands (the breach holds on the ticket as the person left it), but it acts for the person's
    latest change, not for the older one: the event is dated by it, so no write of atrelay's is ever for a
    change older than a person's. One TicketHistory read, only when the ticket shows activity since.
    """
    last_activity = as_utc(ticket.last_activity_date)
    if last_activity is None or last_activity <= event.occurred_at:
        return None
    foreign = status_changes_after(history.entries(), event.occurred_at, ignore_resource=ctx.own_resource_id())
    return foreign[-1].when if foreign else None


def timezest_wrote(ctx: Context, ticket: Ticket, *, around: datetime, target_id: int, lists: Picklists,
                   history: History) -> list[int]:
    """The statuses TimeZest's own resource set on the ticket for a transition at ``around`` (within two
    minutes of it), oldest first, whether or not they are still there.

    TimeZest's PSA actions set a status and write a note when a request is sent, scheduled or
    cancelled, as TimeZest's API resource. A status TimeZest sets again unchanged leaves no history
    row, so TimeZest's note at that moment on a ticket showing the status counts as its writing it.
    What happened to the ticket since is someone else's doing: a person's later change stands, and an
    edit form undoing TimeZest's change is the clobber guard's. Recorded changes settle it when they
    show ``target_id`` (TimeZest's callouts); otherwise TicketHistory does (a callout run after
    TimeZest had moved on again records only the status it saw then).
    """
    tz = ctx.timezest_resource_id
    if tz is None:
        return []
    recorded = [c.to_status_id for c in store.status_changes_between(ctx.db, ticket.id, around - _ECHO, around + _ECHO)
                if c.by_resource_id == tz]
    if target_id in recorded:
        saw_timezest(ctx, ticket.id, around)
        return recorded
    last_activity = as_utc(ticket.last_activity_date)
    if last_activity is not None and last_activity < around - _ECHO:
        return recorded  # nothing happened on the ticket near the transition: TimeZest did not act on it
    if ticket.status != target_id and _own_write_explains(ctx, ticket, store.ticket_state(ctx.db, ticket.id)):
        # The ticket shows atrelay's own write, made after anything TimeZest set (the activity since is
        # atrelay's alone): what TimeZest may have set before is not on the ticket, so it is not left alone.
        return recorded
    out: list[int] = []
    noted = False
    for e in history.entries():
        if e.resource_id != tz or e.when is None or abs(e.when - around) > _ECHO:
            continue
        if not e.is_status_change:
            noted = noted or "note" in (e.action or "").lower()
            continue
        text = (e.detail or e.action or "").rsplit(" to ", 1)[-1].strip()
        try:
            out.append(lists.status.resolve(text))
        except UnknownPicklistValue:
            continue  # a history text atrelay cannot read: no claim about it
    # Its note alone counts as its setting the status only when the ticket shows this transition's status,
    # and not when atrelay's own write put it there (an earlier event's: a second cancellation of the ticket).
    if out or noted:
        saw_timezest(ctx, ticket.id, around)
    if out or not noted or ticket.status != target_id:
        return out
    label = lists.status.label(target_id)
    setting = [e for e in history.entries() if e.is_status_change and label and set_to(e, label)]
    own = ctx.own_resource_id()
    return [] if setting and own is not None and setting[-1].resource_id == own else [ticket.status]


def timezest_note(ctx: Context, ticket: Ticket, event: PartnerEvent) -> TicketNote | None:
    """TimeZest's own note for this transition: of the notes by TimeZest's resource within two minutes of
    it that speak of this kind of transition, the one that says most of the transition's facts, then the
    one written nearest to it (the newest on a tie); None when it wrote none. Not simply the newest: two
    requests of one ticket moving within the two minutes (an appointment cancelled, the other request
    cancelled unbooked, in either order, within one second of TimeZest's clock) each have their own
    note, and the other's would lend its words to this one (the model test found both orders).

    One ``TicketNotes/query``, none when the ticket shows no activity near the transition (TimeZest's
    note would have been activity).
    """
    tz = ctx.timezest_resource_id
    if tz is None:
        return None
    around = event.occurred_at
    last_activity = as_utc(ticket.last_activity_date)
    if last_activity is not None and last_activity < around - _ECHO:
        return None
    kind = _TZ_KIND[event.type]
    found = [n for n in ctx.client.ticket_notes_by(ticket.id, resource_id=tz, since=around - _ECHO)
             if (at := as_utc(n.create_date_time)) is not None and abs(at - around) <= _ECHO
             and kind.search(n.text)]

    def fit(note: TicketNote) -> tuple[int, timedelta, int]:
        at = as_utc(note.create_date_time)
        return (len(timezest_facts(event, note.text)), abs(at - around) if at is not None else _ECHO, -note.id)

    if not found:
        return None
    saw_timezest(ctx, ticket.id, around)
    return min(found, key=fit)


def saw_timezest(ctx: Context, ticket_id: int, at: datetime) -> None:
    """TimeZest's resource was seen writing to a ticket: its PSA actions are on in this tenant."""
    store.saw_partner(ctx.db, TIMEZEST_PSA, at=at, ticket_id=ticket_id)


def timezest_psa_seen(ctx: Context) -> bool:
    """Has atrelay ever seen TimeZest's resource write to a ticket of this tenant (``saw_timezest``)?
    Until it has, a link or booking atrelay sets itself reads no TimeZest note: there is none to repeat."""
    return ctx.timezest_resource_id is not None and store.partner_seen(ctx.db, TIMEZEST_PSA) is not None


def timezest_noted(ctx: Context, event: PartnerEvent, history: History) -> bool:
    """Does the ticket's history show a note by TimeZest's resource within two minutes of this transition?"""
    tz = ctx.timezest_resource_id
    noted = tz is not None and any(
        e.resource_id == tz and not e.is_status_change and e.when is not None
        and abs(e.when - event.occurred_at) <= _ECHO and "note" in (e.action or "").lower()
        for e in history.entries())
    if noted:
        saw_timezest(ctx, history.ticket_id, event.occurred_at)
    return noted


def timezest_set_a_status(ctx: Context, event: PartnerEvent, history: History, *, besides: tuple[str, ...] = ()
                          ) -> bool:
    """Did TimeZest's resource change the ticket's status within two minutes of this transition (whatever
    the ticket shows now), to a status other than ``besides`` (for a cancellation: the statuses it sets
    when a link is sent or a time booked, its updates for another transition)? One TicketHistory read,
    shared with the run's other checks."""
    tz = ctx.timezest_resource_id
    moved = tz is not None and any(
        e.resource_id == tz and e.is_status_change and e.when is not None and abs(e.when - event.occurred_at) <= _ECHO
        and not any(set_to(e, label) for label in besides if label)
        for e in history.entries())
    if moved:
        saw_timezest(ctx, history.ticket_id, event.occurred_at)
    return moved


def timezest_facts(event: PartnerEvent, said: str) -> list[tuple[str, str]]:
    """The facts of ``event`` (TIMEZEST_FACTS) that TimeZest's note text ``said`` does not say.

    A time counts as said when the note gives its date (ISO, or day and month name) and its clock time
    (24-hour, or with am/pm) in UTC; a name when the note names it. A time said another way (another
    zone) is not recognised: atrelay then adds it, rather than risk leaving it unsaid.
    """
    wanted = TIMEZEST_FACTS.get(event.type, ())
    out = []
    for label, value in event.details:
        if label not in wanted or value.strip() in ("", "-"):
            continue
        when = _utc_time(value)
        if when is not None:
            if not _says_time(said, when):
                out.append((label, value))
        elif not all(name.strip().casefold() in said.casefold() for name in value.split(",") if name.strip()):
            out.append((label, value))
    return out


def _utc_time(value: str) -> datetime | None:
    """The time in a TimeZest detail ("2030-01-09 10:00 UTC (client's zone: ...)"), or None."""
    m = re.search(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC", value)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC) if m else None


def _says_time(text: str, when: datetime) -> bool:
    day, hour12 = when.day, when.hour % 12 or 12
    months = f"(?:{when:%B}|{when:%b})\\.?"
    date = re.compile(rf"{when:%Y-%m-%d}|\b{months} 0?{day}\b|\b0?{day}(?:st|nd|rd|th)? {months}", re.I)
    clock = re.compile(rf"(?<!\d){when:%H:%M}(?!\d)|\b{hour12}:{when:%M}\s*{'pm' if when.hour >= 12 else 'am'}\b",
                       re.I)
    return bool(date.search(text) and clock.search(text))


def _superseded(ctx: Context, event: PartnerEvent, ticket: Ticket, *, target_id: int, lists: Picklists,
                history: History, state: TicketState | None) -> tuple[str | None, bool]:
    """Why this event must not be applied (a status change by anyone but atrelay after it), or None; and
    whether the ticket was *quiet* after it: no status change at all by anyone but atrelay.

    A change *to* the event's own status contradicts nothing (Mission Control setting the status it
    also reported by webhook), nor does one the event may overwrite (``OVERWRITABLE``); neither is quiet.
    """
    if event.expect_status_id is not None:
        return None, False  # follow-ups and guards: "status-changed" guards them
    labels = lists.status
    allowed = (*OVERWRITABLE.get(event.type, ()), labels.label(target_id) or "")
    recorded = store.status_changes_after(ctx.db, ticket.id, event.occurred_at)
    for change in recorded:
        if change.to_status_id == target_id or labels.label(change.to_status_id) in allowed:
            continue
        who = f"resource #{change.by_resource_id}" if change.by_resource_id is not None else "someone"
        return (f"superseded: {who} set {labels.label(change.to_status_id)} at "
                f"{change.changed_at:%Y-%m-%d %H:%M:%S} UTC, after this event "
                f"({event.occurred_at:%Y-%m-%d %H:%M:%S} UTC)"), False
    last_activity = as_utc(ticket.last_activity_date)
    if last_activity is not None and last_activity <= event.occurred_at:
        return None, not recorded  # nothing at all happened on the ticket after the event
    if not recorded and _own_write_explains(ctx, ticket, state, since=event.occurred_at):
        return None, True
    # Active after the event and no change recorded: a callout may have been lost, or reconciliation
    # may have met the ticket for the first time. Only the ticket's own history can tell.
    foreign = status_changes_after(history.entries(), event.occurred_at, ignore_resource=ctx.own_resource_id())
    later = [e for e in foreign if not any(label and set_to(e, label) for label in allowed)]
    if not later:
        return None, not recorded and not foreign
    first = later[0]
    who = f"resource #{first.resource_id}" if first.resource_id is not None else "a contact"
    return (f"superseded: {who} changed the status at {first.when:%Y-%m-%d %H:%M:%S} UTC "
            f"({(first.detail or first.action or '')[:120]}), after this event "
            f"({event.occurred_at:%Y-%m-%d %H:%M:%S} UTC)"), False


def _left_and_back(ctx: Context, event: PartnerEvent, ticket: Ticket, *, lists: Picklists, history: History,
                   state: TicketState | None) -> str | None:
    """A follow-up whose ticket shows the status it expects again, after someone moved it on in between
    (MC No Contact; a technician's Complete; MC No Contact again): why it must not act, or None.

    Its cause is over: the person's change ended it, and the status set again is a new cause with its
    own follow-up. Acting would be a write for the older cause after a person's newer change. Recorded
    changes first; the ticket's history only when the ticket was active after the cause and neither a
    recorded change nor atrelay's own last verified write accounts for that (a lost callout hides nothing).
    """
    expected = event.expect_status_id
    labels = lists.status
    label = labels.label(expected) if expected is not None else None
    recorded = store.status_changes_after(ctx.db, ticket.id, event.occurred_at)
    for change in recorded:
        if change.to_status_id != expected:
            who = f"resource #{change.by_resource_id}" if change.by_resource_id is not None else "someone"
            return (f"status-changed: {who} set {labels.label(change.to_status_id)} at "
                    f"{change.changed_at:%Y-%m-%d %H:%M:%S} UTC, after its cause; {label} since is a new cause")
    last_activity = as_utc(ticket.last_activity_date)
    if last_activity is None or last_activity <= event.occurred_at:
        return None
    if _own_write_explains(ctx, ticket, state, since=event.occurred_at):
        return None
    foreign = status_changes_after(history.entries(), event.occurred_at, ignore_resource=ctx.own_resource_id())
    away = [e for e in foreign if not (label and set_to(e, label))]
    if not away:
        return None
    first = away[0]
    who = f"resource #{first.resource_id}" if first.resource_id is not None else "a contact"
    return (f"status-changed: {who} changed the status at {first.when:%Y-%m-%d %H:%M:%S} UTC "
            f"({(first.detail or first.action or '')[:120]}), after its cause; {label} since is a new cause")


def _own_write_explains(ctx: Context, ticket: Ticket, state: TicketState | None, *,
                        since: datetime | None = None) -> bool:
    """Is all activity on the ticket since atrelay's last verified write atrelay's own?

    True when (i) atrelay's last status write was decided by a gate that found nobody else had
    changed the status after that write's event, no later than ``since`` (``quiet_since``; any other
    write of atrelay's to the ticket clears it first), (ii) the ticket still shows that write's status,
    and (iii) its last activity is atrelay's own (``lastActivityResourceID``). Then no status change by
    anyone else can lie after ``since``: before the write, its gate would have seen it; after the write,
    the last activity would be someone else's, or the status another, unless atrelay's own later
    activity hid it: any other write of atrelay's clears the mark before it starts, and the write's own
    note keeps it only when it landed at once after the PATCH (pipelines.store.QUIET_NOTE) and is not in
    doubt. What is left is the moment between that gate's read and its PATCH (and the note), which no
    check made before a PATCH can close (Autotask has no conditional PATCH); and the age of a shared
    ticket read (pipelines.ticket_reads), the window any run without activity after its event has too.
    Used to spare a TicketHistory read, never to allow what a read would refuse
    on other grounds: a recorded change (callout, reconciliation) is always looked at first.
    """
    own = ctx.own_resource_id()
    if not (own is not None and state is not None and state.quiet_since is not None
            and state.quiet_event_id is not None and (since is None or state.quiet_since <= since)
            and state.quiet_status_id is not None and state.quiet_status_id == ticket.status
            and ticket.last_activity_resource_id == own):
        return False
    # The write's own note, started and not known to have landed (its run died, or lost its lease): it may
    # land, or have landed, after a person's change and hide it. Its mark holds only once the note is settled.
    effect = store.get_effect(ctx.db, state.quiet_event_id)
    return effect is None or effect.note_started_at is None or effect.note_id is not None


def _duplicate(ctx: Context, event_id: int, event: PartnerEvent, ticket: Ticket, *, target_id: int | None,
               lists: Picklists, history: History, observation_id: int | None) -> int | None:
    """The other channel's report of this escalation, which took it on; None when this report is new.

    Mission Control's webhook and the status MC set in Autotask are one escalation when (i) they are
    of the same kind on the same ticket and at most two minutes apart, (ii) nobody but atrelay changed
    the ticket's status between them (recorded changes, then its TicketHistory: a lost callout hides
    nothing), and (iii) the status change is not MC setting the status again after the ticket had
    moved on (atrelay's own follow-up included): judged by recording order for a change atrelay saw
    come after the webhook was taken on, by time otherwise. Each report pairs with one of the other
    channel at most (``escalation_claims``).
    """
    label = lists.status.label(target_id) if target_id is not None else None
    mine = store.observed_change(ctx.db, ticket.id, observation_id) if observation_id is not None else None
    own = ctx.own_resource_id()
    for other in store.escalation_claims(ctx.db, ticket_id=ticket.id, event_type=event.type.value,
                                         exclude_event_id=event_id, other_than_source=event.source.value):
        if abs(other.occurred_at - event.occurred_at) > _ECHO:
            continue  # (i)
        if (mine is not None and mine.id is not None and other.seen_change_id is not None
                and store.left_between_changes(ctx.db, ticket.id, target_id, after_id=other.seen_change_id,
                                               before_id=mine.id)):
            continue  # (iii): MC set it again after the ticket had left it
        webhook_at, change_at = ((event.occurred_at, other.occurred_at) if mine is None
                                 else (other.occurred_at, event.occurred_at))
        if change_at > webhook_at and _moved(ctx, ticket.id, target_id=target_id, label=label,
                                             between=(webhook_at, change_at), history=history, own=None):
            continue  # (iii), by time: the ticket left the status between the webhook and MC's change
        if _moved(ctx, ticket.id, target_id=target_id, label=label, between=(min(webhook_at, change_at),
                  max(webhook_at, change_at)), history=history, own=own):
            continue  # (ii)
        return other.event_id
    return None


def _moved(ctx: Context, ticket_id: int, *, target_id: int | None, label: str | None,
           between: tuple[datetime, datetime], history: History, own: int | None) -> bool:
    """Did the ticket's status move off ``target_id`` strictly between two moments?

    With ``own`` (atrelay's resource), atrelay's own moves do not count. Recorded changes first; when
    they show none, the ticket's history.
    """
    low, high = between
    if low >= high:
        return False
    for c in store.status_changes_between(ctx.db, ticket_id, low, high):
        if c.changed_at < high and c.to_status_id != target_id and not (own is not None and c.by_atrelay):
            return True
    if label is None:
        return False
    return any(e.is_status_change and e.when is not None and low < e.when < high and not set_to(e, label)
               and (own is None or e.resource_id != own) for e in history.entries())


def patch_landed(ctx: Context, *, effect: EffectLedger, ticket: Ticket, target_id: int, lists: Picklists,
                 history: History) -> bool:
    """Did a PATCH whose outcome was never confirmed (a timeout, a worker that died mid-call) land?

    The ticket showing the status settles it; otherwise TicketHistory shows whether atrelay's own
    resource set it after the PATCH started (and someone changed it since). Not landed: the gate
    decides the write again, from scratch.
    """
    if ticket.status == target_id:
        return True
    own = ctx.own_resource_id()
    started = effect.patch_started_at
    if own is None or started is None:
        return False
    label = lists.status.label(target_id)
    return any(e.is_status_change and e.resource_id == own and e.when is not None and e.when >= started - _PATCH_SKEW
               and label is not None and set_to(e, label) for e in history.entries())
