"""The Autotask sandbox's state: tickets, notes, resources, histories, faults, and who acts (``Actor``).

The route modules (``app``, ``control``, ``entities``, ``webhook_routes``) import these types from here,
and this module imports none of them, so the sandbox has no import circle.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandboxes.autotask.data import (
    ACT_AS,
    API_ONLY_RESOURCES,
    SANDBOX_AUTOTASK_CREDENTIALS,
    SANDBOX_RESOURCES,
    STATUSES,
    seed_contacts,
    seed_resources,
    seed_tickets,
)
from sandboxes.autotask.query import now as _now
from sandboxes.autotask.webhooks import WebhookHub
from sandboxes.common.state_file import IdSequence

__all__ = ["ACT_AS", "Actor", "SandboxState"]

# What an API PATCH /Tickets may change here (lower-case wire name -> field).
_WRITABLE = {"status": "status", "duedatetime": "dueDateTime", "assignedresourceid": "assignedResourceID",
             "title": "title", "priority": "priority", "queueid": "queueID", "description": "description"}
_LABELS = {"status": "Status", "dueDateTime": "Due Date", "assignedResourceID": "Primary Resource",
           "title": "Title", "priority": "Priority", "queueID": "Queue", "description": "Description"}


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a resource, or a contact (an e-mailed note); ``label`` is for the history."""

    resource_id: int | None
    contact_id: int | None = None
    label: str = ""
    impersonator_id: int | None = None

    @property
    def person_type(self) -> int:
        return 2 if self.resource_id is None and self.contact_id is not None else 1


class SandboxState:
    def __init__(self, credentials: dict[str, str] | None = None) -> None:
        self.credentials = credentials or dict(SANDBOX_AUTOTASK_CREDENTIALS)
        self.webhooks = WebhookHub(resource_exists=lambda rid: rid in self.resources,
                                   owner_resource_id=SANDBOX_RESOURCES["atrelay"])
        self.reset()

    def reset(self) -> None:
        self.tickets: dict[int, dict[str, Any]] = {t["id"]: t for t in seed_tickets()}
        self.notes: dict[int, dict[str, Any]] = {}
        # Every status write (even one that sets the value it already has): a test's count of writes.
        self.history: list[dict[str, Any]] = []
        # Real changes and note additions, as TicketHistory rows.
        self.changes: list[dict[str, Any]] = []
        self.resources: dict[int, dict[str, Any]] = {r["id"]: r for r in seed_resources()}
        self.contacts: dict[int, dict[str, Any]] = {c["id"]: c for c in seed_contacts()}
        self.checklist: dict[int, dict[str, Any]] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.errors_returned: collections.Counter[str] = collections.Counter()
        self.window: collections.deque[float] = collections.deque()
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.max_in_flight_seen: collections.Counter[str] = collections.Counter()
        self.note_ids = IdSequence(900001)
        self.ticket_ids = IdSequence(50001 + len(self.tickets))
        self.checklist_ids = IdSequence(770001)
        self.history_ids = IdSequence(3300001)
        self.latency_ms = 0.0
        self.max_in_flight: int | None = None
        self.thread_buckets = "tenant"
        self.hourly_limit: int | None = None
        self.script: list[dict[str, Any]] = []
        self.outage_until = 0.0
        self.outage_statuses: list[int] = []
        self.outage_count = 0
        self.webhooks.reset()

    # ---- saved state (`atrelay sandbox autotask` keeps it in var/; see sandboxes/common/state_file) ----
    _RECORDS = ("tickets", "notes", "resources", "contacts", "checklist")
    _SEQUENCES = ("note_ids", "ticket_ids", "checklist_ids", "history_ids")

    def dump(self) -> dict[str, Any]:
        """What a restart must keep: records, histories, webhooks and the next id of every sequence.

        Faults, call counters and in-flight callouts are left out: they describe one run, not the tenant.
        """
        return {
            **{name: list(getattr(self, name).values()) for name in self._RECORDS},
            "history": list(self.history), "changes": list(self.changes),
            "next_ids": {name: getattr(self, name).peek for name in self._SEQUENCES},
            "webhooks": self.webhooks.dump(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """The inverse of ``dump``; raises KeyError/TypeError/ValueError on a malformed document."""
        records = {name: {int(r["id"]): dict(r) for r in data[name]} for name in self._RECORDS}
        sequences = {name: IdSequence(int(data["next_ids"][name])) for name in self._SEQUENCES}
        history, changes = [dict(h) for h in data["history"]], [dict(c) for c in data["changes"]]
        self.webhooks.restore(data["webhooks"])
        for name, table in records.items():
            setattr(self, name, table)
        for name, seq in sequences.items():
            setattr(self, name, seq)
        self.history, self.changes = history, changes

    def close(self) -> None:
        """Stop the webhook delivery threads (they are daemons, so this is only for a clean exit)."""
        self.webhooks.stop()

    # ---- picklists ------------------------------------------------------------------------
    @staticmethod
    def status_values() -> list[dict[str, Any]]:
        return [
            {"value": str(v), "label": lab, "isDefaultValue": v == 1, "sortOrder": i, "parentValue": "",
             "isActive": act, "isSystem": sysv}
            for i, (v, lab, act, sysv) in enumerate(STATUSES)
        ]

    @staticmethod
    def active_status_ids() -> set[int]:
        return {v for v, _lab, act, _s in STATUSES if act}

    def status_label(self, value: int) -> str:
        return next((lab for v, lab, act, _s in STATUSES if v == value and act), f"#{value}")

    def status_by_label(self, label: str) -> int:
        for v, lab, act, _s in STATUSES:
            if act and lab.casefold() == label.casefold():
                return v
        raise KeyError(label)

    # ---- who acts ---------------------------------------------------------------------------
    def resource_name(self, rid: int | None) -> str:
        res = self.resources.get(rid) if rid is not None else None
        return f"{res['firstName']} {res['lastName']}" if res else f"#{rid}"

    def actor(self, name: str | None = None, resource_id: int | None = None, label: str | None = None) -> Actor:
        """``"contact"``, an ``ACT_AS`` name, or a resource id; the technician when neither is given."""
        if resource_id is not None:
            if resource_id not in self.resources:
                raise KeyError(f"no resource {resource_id}")
            return Actor(resource_id, label=label or self.resource_name(resource_id))
        key = (name or "technician").strip().lower().replace("_", "-")
        if key == "contact":
            contact = next(iter(self.contacts))
            return Actor(None, contact_id=contact, label=label or "contact")
        if key == "api":
            key = "atrelay"
        if key not in ACT_AS:
            raise KeyError(f"unknown actor {name!r}; use one of {sorted(ACT_AS)} or contact")
        return Actor(ACT_AS[key], label=label or key)

    def api_actor(self, impersonate: str | None) -> Actor:
        """The API credentials act as atrelay's resource, or as the impersonated one."""
        own = SANDBOX_RESOURCES["atrelay"]
        if impersonate:
            rid = int(impersonate) if impersonate.strip().isdigit() else None
            if rid is None or rid not in self.resources:
                raise ValueError(f"ImpersonationResourceId {impersonate} is not a valid resource.")
            return Actor(rid, label="api", impersonator_id=own)
        return Actor(own, label="api")

    # ---- changes ----------------------------------------------------------------------------
    def _log(self, ticket_id: int, action: str, detail: str, actor: Actor, at: str) -> None:
        self.changes.append({"id": next(self.history_ids), "ticketID": ticket_id, "action": action,
                             "detail": detail, "date": at, "resourceID": actor.resource_id})

    def _describe(self, field: str, old: Any, new: Any) -> str:
        if field == "status":
            old, new = self.status_label(old) if old is not None else "", self.status_label(new)
        elif field == "assignedResourceID":
            old = self.resource_name(old) if old is not None else "(none)"
            new = self.resource_name(new) if new is not None else "(none)"
        return f"{_LABELS.get(field, field)} changed from {old} to {new}"

    def change_ticket(self, ticket_id: int, changes: dict[str, Any], actor: Actor) -> set[str]:
        """Apply one write: history, lastActivity*, callouts. Returns the fields whose value changed."""
        ticket = self.tickets[ticket_id]
        at = _now()
        changed: set[str] = set()
        for field, value in changes.items():
            old = ticket.get(field)
            if field == "status":
                self.history.append({"ticket_id": ticket_id, "from": old, "to": value, "actor": actor.label,
                                     "resource_id": actor.resource_id, "person_type": actor.person_type,
                                     "at": at})
            if old != value:
                changed.add(field)
                ticket[field] = value
                self._log(ticket_id, "Edit", self._describe(field, old, value), actor, at)
        activity = {"lastActivityDate": at, "lastActivityResourceID": actor.resource_id,
                    "lastActivityPersonType": actor.person_type}
        changed |= {k for k, v in activity.items() if ticket.get(k) != v}
        ticket.update(activity)
        self.webhooks.record_changed("ticketwebhooks", ticket, "Update", changed, actor.resource_id)
        return changed

    def set_status(self, ticket_id: int, status: int, actor: str, resource_id: int | None = None) -> None:
        """A status write; ``actor`` is the history label, and names the resource when it is an ACT_AS name."""
        try:
            who = self.actor(actor if resource_id is None else None, resource_id, label=actor)
        except KeyError:
            who = self.actor("technician", label=actor)  # a free-text label: a person at the UI
        self.change_ticket(ticket_id, {"status": status}, who)

    def validate_ticket_changes(self, body: dict[str, Any]) -> dict[str, Any]:
        """The writable fields of a (lower-cased) PATCH body, checked; ValueError with Autotask's wording."""
        out: dict[str, Any] = {}
        for key, field in _WRITABLE.items():
            if key not in body:
                continue
            value = body[key]
            if field == "status" and value not in self.active_status_ids():
                raise ValueError(f"Value {value} is not a valid value for field status.")
            if field == "assignedResourceID" and value is not None:
                if not isinstance(value, int) or value not in self.resources:
                    raise ValueError(f"Value {value} is not a valid value for field assignedResourceID.")
                if value in API_ONLY_RESOURCES:
                    raise ValueError(f"Resource {value} is an API-only user and cannot be assigned to a ticket.")
            if field == "dueDateTime" and value is not None:
                try:
                    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError(f"Value {value} is not a valid value for field dueDateTime.") from None
                at = parsed.astimezone(UTC) if parsed.tzinfo else parsed  # UTC on the way in, as Autotask keeps it
                value = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
            if field in ("priority", "queueID") and not isinstance(value, int):
                raise ValueError(f"Value {value} is not a valid value for field {field}.")
            limit = {"title": 255, "description": 8000}.get(field)
            if limit and (not isinstance(value, str) or len(value) > limit or (field == "title" and not value)):
                raise ValueError(f"{field} must be a string of at most {limit} characters.")
            out[field] = value
        return out

    def add_note(self, ticket_id: int, fields: dict[str, Any], actor: Actor) -> dict[str, Any]:
        at = _now()
        note_id = next(self.note_ids)
        note = {
            "id": note_id, "ticketID": ticket_id, "title": fields.get("title"),
            "description": fields["description"], "noteType": fields["noteType"], "publish": fields["publish"],
            "creatorResourceID": actor.resource_id, "createdByContactID": actor.contact_id,
            "impersonatorCreatorResourceID": actor.impersonator_id, "impersonatorUpdaterResourceID": None,
            "createDateTime": at, "lastActivityDate": at,
        }
        self.notes[note_id] = note
        self._log(ticket_id, "Note Added", f"Note added: {note['title'] or ''}".rstrip(), actor, at)
        self.webhooks.record_changed("ticketnotewebhooks", note, "Create", set(note), actor.resource_id)
        self.change_ticket(ticket_id, {}, actor)  # the ticket's lastActivity* move too
        return note

    def create_ticket(self, fields: dict[str, Any], actor: Actor) -> dict[str, Any]:
        tid = next(self.ticket_ids)
        at = _now()
        ticket = {"id": tid, "ticketNumber": fields.get("ticketNumber") or f"T20261126.{tid % 10000:04d}",
                  "title": fields.get("title", "Sandbox ticket"), "status": fields.get("status", 1),
                  "companyID": 29683500, "queueID": 8, "priority": 2, "createDate": at,
                  "creatorResourceID": actor.resource_id, "dueDateTime": fields.get("dueDateTime"),
                  "assignedResourceID": fields.get("assignedResourceID"), "lastActivityDate": at,
                  "lastActivityResourceID": actor.resource_id, "lastActivityPersonType": actor.person_type}
        self.tickets[tid] = ticket
        self.webhooks.record_changed("ticketwebhooks", ticket, "Create", set(ticket), actor.resource_id)
        return ticket
