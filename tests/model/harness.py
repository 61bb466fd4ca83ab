"""The model test's world: the Autotask sandbox, a real audit database, atrelay's real pipeline functions,
and a network that can fail. Invariants are judged from what the *sandbox* saw (its status history, its
notes, the ticket as it was at each write), never from atrelay's audit log of outcomes.

Pieces:

* :class:`Wire`: the HTTP transport under atrelay's Autotask client. It can make a worker die just
  before or just after a call (the call landed, the answer never came back to anyone), lose the
  answer of a call that landed (a timeout after the write), or let another worker take the event over
  mid-run (a paused worker whose lease ran out). Autotask's own refusals (429, the thread threshold,
  a 503) are the sandbox's scripted faults: the sandbox answers them, as Autotask would.
* :class:`Witness`: wraps the sandbox's ticket writes to keep, for every status write atrelay's API
  user makes, the ticket and its checklist exactly as they were at that moment.
* :func:`check_writes` and :func:`check_notes`: the invariants of issue 18.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.autotask.client import AutotaskClient
from connectors.autotask.picklists import PicklistCache
from pipelines.context import Context
from pipelines.rules import DEFAULT_RULES
from sandboxes.autotask.data import SANDBOX_AUTOTASK_CREDENTIALS, SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState

__all__ = [
    "COMPLETE",
    "DEFERRED",
    "FOLLOW_UP_ADMIN",
    "FOLLOW_UP_RESOURCE",
    "IN_PROGRESS",
    "MC_NO_CONTACT",
    "OUT_OF_SCOPE",
    "RECEIVED_FORM",
    "REOPENED",
    "SCHEDULED",
    "SCHEDULING_LINK_SENT",
    "SENT_FROM_MC",
    "WAITING_CUSTOMER",
    "Violation",
    "Wire",
    "Witness",
    "WorkerDied",
    "Write",
    "check_no_repeat",
    "check_notes",
    "check_writes",
    "escalation_groups",
    "parse_time",
]

COMPLETE, IN_PROGRESS, WAITING_CUSTOMER, NEW = 5, 8, 7, 1
DEFERRED, FOLLOW_UP_RESOURCE, REOPENED, FOLLOW_UP_ADMIN = 29682836, 29682834, 29682842, 29682833
SENT_FROM_MC, OUT_OF_SCOPE, MC_NO_CONTACT, RECEIVED_FORM = 29682845, 29682846, 29682847, 29682844
SCHEDULING_LINK_SENT, SCHEDULED = 29682835, 29682839
ATRELAY, TECH = SANDBOX_RESOURCES["atrelay"], SANDBOX_RESOURCES["technician"]
_MARKER = re.compile(r"\[atrelay:event:(\d+):[0-9a-f]+\]")
_CAUSE = re.compile(r"Caused by: atrelay event #(\d+)")


class WorkerDied(BaseException):
    """The worker process died (kill -9): not an Exception, so nothing in atrelay catches it."""


class Violation(AssertionError):
    """An invariant of issue 18 does not hold for this example."""


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class Wire(httpx.BaseTransport):
    """The network between atrelay and the sandbox, with the faults a test plans for the next run.

    ``plan`` maps (method, path fragment) to a fault for the first matching call: ``die-before``,
    ``die-after``, ``lost`` (landed, answer lost: a read timeout) or ``pause`` (landed; then
    ``on_pause`` runs, as another worker would while this one sleeps past its lease).
    """

    inner: httpx.BaseTransport = field(default_factory=httpx.HTTPTransport)
    plan: list[tuple[str, str, str]] = field(default_factory=list)
    on_pause: Callable[[], None] | None = None
    fired: list[str] = field(default_factory=list)

    def _take(self, request: httpx.Request) -> str | None:
        path = request.url.path.lower()
        for i, (method, fragment, fault) in enumerate(self.plan):
            if request.method == method and fragment in path:
                del self.plan[i]
                self.fired.append(f"{fault} at {request.method} {path}")
                return fault
        return None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault = self._take(request)
        if fault == "die-before":
            raise WorkerDied(f"died before {request.method} {request.url.path}")
        response = self.inner.handle_request(request)
        response.read()
        if fault == "die-after":
            raise WorkerDied(f"died after {request.method} {request.url.path} landed")
        if fault == "lost":
            raise httpx.ReadTimeout("the answer never came (the request had landed)", request=request)
        if fault == "pause" and self.on_pause is not None:
            pause, self.on_pause = self.on_pause, None
            pause()
        return response


@dataclass(frozen=True)
class Write:
    """A status write by atrelay's API user, as the sandbox saw it, with the ticket at that moment."""

    ticket: int
    before: int
    after: int
    at: datetime
    due: datetime | None
    open_important: int
    acting: int | None  # the event whose run the model was in (None: outside any run)


class Witness:
    """Keeps what the sandbox looked like at each of atrelay's status writes (the ticket, its checklist)."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.writes: list[Write] = []
        self.acting: int | None = None
        original = state.change_ticket

        def change_ticket(ticket_id: int, changes: dict[str, Any], actor: Any) -> set[str]:
            ticket = state.tickets[ticket_id]
            before, due = ticket["status"], ticket.get("dueDateTime")
            open_important = sum(1 for c in state.checklist.values()
                                 if c["ticketID"] == ticket_id and c["isImportant"] and not c["isCompleted"])
            changed = original(ticket_id, changes, actor)
            if actor.resource_id == ATRELAY and "status" in changes:
                self.writes.append(Write(ticket_id, before, changes["status"], parse_time(ticket["lastActivityDate"]),
                                         parse_time(due) if due else None, open_important, self.acting))
            return changed

        state.change_ticket = change_ticket  # type: ignore[method-assign]

    def reset(self) -> None:
        self.writes.clear()
        self.acting = None

    @contextmanager
    def acting_for(self, event_id: int) -> Iterator[None]:
        self.acting = event_id
        try:
            yield
        finally:
            self.acting = None


def make_context(db: str, sandbox_url: str, wire: Wire, **overrides: Any) -> Context:
    """A pipeline context as a worker builds one, its Autotask client on ``wire``; no in-call retries
    (the model's runs are the retries) and every run reading its own ticket (no shared reads)."""
    c = SANDBOX_AUTOTASK_CREDENTIALS
    # The base URL given, so no zone lookup: the zone cache is per user name and process-wide, and the
    # other tests' sandbox answers to the same user name.
    client = AutotaskClient(username=c["username"], secret=c["secret"], integration_code=c["integration_code"],
                            base_url=f"{sandbox_url}/atservicesrest", zone_url=f"{sandbox_url}/atservicesrest/v1.0/zoneInformation",
                            max_attempts=1, sleep=lambda _s: None, transport=wire, timeout=10)
    values: dict[str, Any] = {
        "db": db, "client": client, "picklists": PicklistCache(3600), "rules": dict(DEFAULT_RULES),
        "note_type": None, "note_publish": None, "follow_up_delay_seconds": 0, "retry_horizon_hours": 72,
        "enqueue": lambda _i, _c: None, "lease_seconds": 20.0, "read_max_age_seconds": 0.0,
        "timezest_resource_id": SANDBOX_RESOURCES["timezest"],
    }
    values.update(overrides)
    return Context(**values)


# ---- invariants ---------------------------------------------------------------------------------
def person_changes(state: SandboxState, ticket_id: int) -> list[tuple[datetime, int]]:
    """The technician's status changes on a ticket (time, status), from the sandbox's history."""
    return [(parse_time(h["at"]), h["to"]) for h in state.history
            if h["ticket_id"] == ticket_id and h["resource_id"] == TECH and h["from"] != h["to"]]


def check_writes(state: SandboxState, writes: list[Write], evidence: Callable[[int, int], datetime | None],
                 follow_up_of: Callable[[int], bool]) -> None:
    """(a) no write after a person's newer change, (c) no write of the status already there and none twice
    for one event, (e) a guard writes only while its breach holds (the follow-up only from MC No Contact).

    ``evidence(event, status)``: the time of the event a write was made for (a follow-up's is its
    cause's), or None when the model cannot name it (then (a) is judged by (c) and (e) alone).
    """
    seen: set[tuple[int | None, int, int]] = set()
    for w in writes:
        if w.before == w.after:
            raise Violation(f"(c) PATCH to the status the ticket already had: {w}")
        key = (w.acting, w.ticket, w.after)
        if w.acting is not None and key in seen and not follow_up_of(w.after):
            raise Violation(f"(c) status {w.after} written twice on ticket {w.ticket} for event #{w.acting}")
        seen.add(key)
        if w.after == REOPENED and not (w.before == COMPLETE and w.open_important > 0):
            raise Violation(f"(e) checklist guard wrote without its breach (from {w.before}, "
                            f"{w.open_important} open important items): {w}")
        if w.after == FOLLOW_UP_RESOURCE and not (w.before == DEFERRED and (w.due is None or w.due <= w.at)):
            raise Violation(f"(e) Deferred guard wrote without its breach (from {w.before}, due {w.due}): {w}")
        if follow_up_of(w.after) and w.before != MC_NO_CONTACT:
            raise Violation(f"(e) the MC No Contact follow-up wrote from status {w.before}: {w}")
        when = evidence(w.acting, w.after) if w.acting is not None else None
        if when is None:
            continue
        newer = [(t, s) for t, s in person_changes(state, w.ticket) if when < t < w.at]
        if newer:
            raise Violation(f"(a) atrelay set {w.after} on ticket {w.ticket} at {w.at:%H:%M:%S.%f} for an event of "
                            f"{when:%H:%M:%S.%f}, after a person set {newer[-1][1]} at {newer[-1][0]:%H:%M:%S.%f}")


@dataclass(frozen=True)
class AtrelayNote:
    id: int
    ticket: int
    marker: int  # the event whose run wrote it
    covers: frozenset[int]  # that event, and the cause whose note a follow-up carried
    quoted: frozenset[str] = frozenset()  # the labels of the partner's details it quotes


_QUOTED = re.compile(r"^> ([^:\n]+):", re.M)


def atrelay_notes(state: SandboxState) -> list[AtrelayNote]:
    out = []
    for note in state.notes.values():
        if note.get("creatorResourceID") != ATRELAY:
            continue
        text = f"{note.get('title') or ''}\n{note.get('description') or ''}"
        marker = _MARKER.search(text)
        if marker is None:
            raise Violation(f"(b) an atrelay note without its marker: {note['id']}")
        covers = {int(marker.group(1)), *(int(m) for m in _CAUSE.findall(text))}
        out.append(AtrelayNote(note["id"], note["ticketID"], int(marker.group(1)), frozenset(covers),
                               frozenset(_QUOTED.findall(note.get("description") or ""))))
    return out


def check_no_repeat(notes: list[AtrelayNote], noted: dict[int, frozenset[str]]) -> None:
    """(b) no atrelay note repeats a partner's note for the same transition: on a TimeZest transition
    TimeZest noted itself, atrelay's note (if any) quotes none of the partner's details but those
    TimeZest's note left out. ``noted``: event id -> the facts TimeZest's note left out."""
    for note in notes:
        for event_id in note.covers & set(noted):
            repeated = note.quoted - {"Event id"} - noted[event_id]
            if repeated:
                raise Violation(f"(b) atrelay note {note.id} repeats what TimeZest's own note for event "
                                f"#{event_id} says: {sorted(repeated)}")


def check_notes(notes: list[AtrelayNote], groups: dict[str, tuple[set[int], int | frozenset[int]]]) -> None:
    """(b) every partner report leaves exactly one atrelay note, and no note is written twice.

    ``groups``: each partner report -> (the ids of the events atrelay recorded for it, the notes they
    owe between them: a number, or the numbers allowed where the interleaving decides). A form owes one;
    a TimeZest transition one, none when TimeZest's own note says it all; an escalation is grouped with
    the other channel's report of it (see :func:`escalation_groups`).
    """
    markers = [n.marker for n in notes]
    dupes = {m for m in markers if markers.count(m) > 1}
    if dupes:
        raise Violation(f"(b) two notes with the marker of event(s) {sorted(dupes)}")
    for name, (ids, owed) in groups.items():
        if not ids:
            continue  # atrelay never heard of it (its only callout was lost, nothing reconciled it)
        covering = [n.id for n in notes if n.covers & ids]
        if len(covering) not in (owed if isinstance(owed, frozenset) else {owed}):
            raise Violation(f"(b) partner report {name} (events {sorted(ids)}) has {len(covering)} atrelay notes "
                            f"{covering}, not {owed}")


#: Mission Control's webhook and its status change for one escalation are at most this far apart.
ECHO_SECONDS = 120


def _echo(state: SandboxState, ticket: int, status: int, webhook_at: datetime, change_at: datetime) -> bool:
    """Are this webhook and this status change MC set one escalation? The product's rule (pipelines/gate.py),
    judged here from the sandbox's own history: (i) at most two minutes apart, (ii) nobody but atrelay
    moved the ticket off the status between them, (iii) the ticket did not leave it (atrelay included)
    between the webhook and a later status change (MC setting it again after the ticket moved on)."""
    if abs((webhook_at - change_at).total_seconds()) > ECHO_SECONDS:
        return False
    low, high = min(webhook_at, change_at), max(webhook_at, change_at)
    for h in state.history:
        if h["ticket_id"] != ticket or h["from"] == h["to"] or h["to"] == status:
            continue
        at = parse_time(h["at"])
        if low < at < high and h["resource_id"] != ATRELAY:
            return False
        if webhook_at < at < change_at:
            return False
    return True


def escalation_groups(state: SandboxState, reports: list[tuple[int, int, int, datetime, bool]]) -> dict[
        str, tuple[set[int], int]]:
    """Group Mission Control's reports by escalation and say how many notes each group owes.

    ``reports``: (event id, ticket, status it reports, when, by webhook?). A webhook and a status
    change MC set (as atrelay derived it) are one escalation by :func:`_echo`; each pairs with one of
    the other channel at most; two webhooks are two escalations. A group (reports linked by possible
    pairs) owes its reports less the most pairs it can form.
    """
    hooks = [r for r in reports if r[4]]
    seen = [r for r in reports if not r[4]]
    edges = {h[0]: [d[0] for d in seen if d[1] == h[1] and d[2] == h[2] and _echo(state, h[1], h[2], h[3], d[3])]
             for h in hooks}
    matched: dict[int, int] = {}  # derived -> webhook

    def augment(hook: int, visited: set[int]) -> bool:
        for d in edges[hook]:
            if d in visited:
                continue
            visited.add(d)
            if d not in matched or augment(matched[d], visited):
                matched[d] = hook
                return True
        return False

    for h in hooks:
        augment(h[0], set())
    parent = {r[0]: r[0] for r in reports}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for hook, ds in edges.items():
        for d in ds:
            parent[find(hook)] = find(d)
    groups: dict[int, set[int]] = {}
    for r in reports:
        groups.setdefault(find(r[0]), set()).add(r[0])
    return {f"escalation events {sorted(ids)}": (ids, len(ids) - sum(1 for d in matched if d in ids))
            for ids in groups.values()}


def dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode()
