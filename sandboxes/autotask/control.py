"""The Autotask sandbox's control endpoints (``/_sandbox/...``, not part of Autotask): faults, counts, and
changes made "as someone" other than atrelay, which behave like real ones (history, lastActivity*,
webhook callouts).

* ``POST /_sandbox/tickets/{id}/status`` ``{"status": label | id, "actor"?: label, "as"?: name,
  "resource_id"?: N}``; ``as`` is one of ``technician | mission-control | timezest | atrelay |
  help-desk``; without ``as``/``resource_id`` the technician acts (``actor`` only labels the history).
* ``PATCH /_sandbox/tickets/{id}`` ``{"status"?, "dueDateTime"?, "assignedResourceID"? (id, ``as``
  name or null), "as"?, "resource_id"?, "actor"?}``; the same checks as the API PATCH.
* ``POST /_sandbox/tickets/{id}/notes`` ``{"title", "description", "noteType"?: label | id,
  "publish"?: label | id, "as"?: technician | contact | mission-control | timezest | ...}``. A
  contact's note is an e-mailed reply: noteType defaults to "Note Emailed In", ``createdByContactID``
  is set and ``creatorResourceID`` is null.
* ``POST /_sandbox/tickets/{id}/checklist`` one item ``{"itemName", "isImportant"?, "isCompleted"?}``
  or ``{"items": [...]}``; no webhook fires (Autotask's webhooks fire only for the entity they watch, and a
  checklist item is not a ticket field).
* ``POST /_sandbox/tickets`` creates a ticket (fires Create callouts); ``GET /_sandbox/tickets/{id}``
  shows the ticket, its notes, ``history`` (every status write, with who), ``changes`` (TicketHistory
  rows) and checklist; ``GET /_sandbox/actors`` maps ``as`` names to resource ids.
* ``GET /_sandbox/calls``, ``POST /_sandbox/reset``, ``PUT /_sandbox/faults``, ``GET /_sandbox/statuses``
  as before; webhooks' own controls are in ``sandboxes.autotask.webhooks``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from sandboxes.autotask.data import ACT_AS, NOTE_TYPES, PUBLISH, STATUSES
from sandboxes.autotask.entities import add_checklist_item
from sandboxes.autotask.state import Actor, SandboxState

__all__ = ["add_control_routes"]


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _pick(values: list[tuple[int, str, bool]], raw: Any, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, int):
        if raw not in {v for v, _l, _d in values}:
            raise KeyError(raw)
        return raw
    return next(v for v, label, _d in values if label.casefold() == str(raw).casefold())


def _who(st: SandboxState, body: dict[str, Any], acts: dict[str, int]) -> Actor:
    """``as`` or ``resource_id`` name who acts; an ``actor`` label that is an ``as`` name does too."""
    rid = body.get("resource_id")
    label = body.get("actor")
    name = body.get("as")
    if name is None and rid is None and isinstance(label, str) and label.replace("_", "-") in acts:
        name = label
    return st.actor(name, int(rid) if rid is not None else None, label=str(label) if label is not None else None)


def add_control_routes(app: FastAPI, st: SandboxState) -> None:
    _fault_routes(app, st)
    _ticket_routes(app, st)
    _seed_routes(app, st)


def _fault_routes(app: FastAPI, st: SandboxState) -> None:
    @app.get("/_sandbox/calls")
    async def calls() -> dict[str, Any]:
        return {"total": st.calls.get("total", 0),
                "by_endpoint": {k: v for k, v in st.calls.items() if k != "total"},
                "errors_returned": dict(st.errors_returned),
                "max_in_flight_seen": dict(st.max_in_flight_seen)}

    @app.post("/_sandbox/reset")
    async def reset() -> dict[str, str]:
        st.reset()
        return {"status": "reset"}

    @app.put("/_sandbox/faults")
    async def faults(request: Request) -> dict[str, Any]:
        body = await request.json()
        st.latency_ms = float(body.get("latency_ms", 0))
        st.max_in_flight = body.get("max_in_flight")
        st.thread_buckets = "entity" if body.get("thread_buckets") == "entity" else "tenant"
        st.hourly_limit = body.get("hourly_limit")
        st.script = list(body.get("script") or [])
        if body.get("outage_seconds"):
            st.outage_until = time.monotonic() + float(body["outage_seconds"])
            st.outage_statuses = [int(x) for x in body.get("outage_statuses") or [502, 503, 500]]
        return {"latency_ms": st.latency_ms, "max_in_flight": st.max_in_flight,
                "thread_buckets": st.thread_buckets, "hourly_limit": st.hourly_limit, "script": st.script}

    @app.get("/_sandbox/statuses")
    async def statuses() -> dict[str, int]:
        return {lab: v for v, lab, act, _s in STATUSES if act}


def _ticket_routes(app: FastAPI, st: SandboxState) -> None:
    def status_value(raw: Any) -> int:
        return raw if isinstance(raw, int) else st.status_by_label(str(raw))

    @app.get("/_sandbox/actors")
    async def actors() -> dict[str, Any]:
        return {"as": dict(ACT_AS), "contact": next(iter(st.contacts))}

    @app.get("/_sandbox/tickets/{ticket_id}")
    async def show(ticket_id: int) -> Response:
        if ticket_id not in st.tickets:
            return _problem(404, "no such ticket")
        ticket = dict(st.tickets[ticket_id])
        ticket["statusLabel"] = st.status_label(ticket["status"])
        return JSONResponse({
            "ticket": ticket,
            "notes": [n for n in st.notes.values() if n["ticketID"] == ticket_id],
            "history": [h for h in st.history if h["ticket_id"] == ticket_id],
            "changes": [h for h in st.changes if h["ticketID"] == ticket_id],
            "checklist": [c for c in st.checklist.values() if c["ticketID"] == ticket_id],
        })

    @app.post("/_sandbox/tickets/{ticket_id}/status")
    async def human_change(ticket_id: int, request: Request) -> Response:
        body = await request.json()
        if ticket_id not in st.tickets:
            return _problem(404, "no such ticket")
        raw = body.get("status")
        try:
            value = status_value(raw)
        except KeyError:
            return _problem(422, f"unknown status {raw!r}")
        try:
            who = _who(st, {"actor": "human", **body}, ACT_AS)
        except KeyError as exc:
            return _problem(422, str(exc))
        st.change_ticket(ticket_id, {"status": value}, who)
        return JSONResponse({"ticket_id": ticket_id, "status": value, "resource_id": who.resource_id})

    @app.patch("/_sandbox/tickets/{ticket_id}")
    async def change(ticket_id: int, request: Request) -> Response:
        body = await request.json()
        if ticket_id not in st.tickets:
            return _problem(404, "no such ticket")
        wanted: dict[str, Any] = {}
        try:
            who = _who(st, body, ACT_AS)
            if "status" in body:
                wanted["status"] = status_value(body["status"])
            if "dueDateTime" in body:
                wanted["duedatetime"] = body["dueDateTime"]
            if "assignedResourceID" in body:
                target = body["assignedResourceID"]
                wanted["assignedresourceid"] = ACT_AS[target.replace("_", "-")] if isinstance(target, str) else target
            changes = st.validate_ticket_changes(wanted)
        except (KeyError, ValueError) as exc:
            return _problem(422, str(exc))
        changed = st.change_ticket(ticket_id, changes, who)
        return JSONResponse({"ticket": st.tickets[ticket_id], "changed": sorted(changed)})

    @app.post("/_sandbox/tickets/{ticket_id}/notes")
    async def note(ticket_id: int, request: Request) -> Response:
        body = await request.json()
        if ticket_id not in st.tickets:
            return _problem(404, "no such ticket")
        try:
            who = _who(st, body, ACT_AS)
            emailed = who.contact_id is not None
            note_type = _pick(NOTE_TYPES, body.get("noteType"), 13 if emailed else 2)
            publish = _pick(PUBLISH, body.get("publish"), 1)
        except (KeyError, StopIteration) as exc:
            return _problem(422, f"unknown actor, noteType or publish: {exc}")
        if not body.get("description"):
            return _problem(422, "description is required")
        created = st.add_note(ticket_id, {"title": body.get("title"), "description": body["description"],
                                          "noteType": note_type, "publish": publish}, who)
        return JSONResponse(created)


def _seed_routes(app: FastAPI, st: SandboxState) -> None:
    def status_value(raw: Any) -> int:
        return raw if isinstance(raw, int) else st.status_by_label(str(raw))

    @app.post("/_sandbox/tickets/{ticket_id}/checklist")
    async def checklist(ticket_id: int, request: Request) -> Response:
        body = await request.json()
        if ticket_id not in st.tickets:
            return _problem(404, "no such ticket")
        who = st.actor("technician")
        try:
            made = [add_checklist_item(st, ticket_id, {str(k).lower(): v for k, v in item.items()}, who)
                    for item in (body.get("items") if "items" in body else [body])]
        except ValueError as exc:
            return _problem(422, str(exc))
        return JSONResponse({"items": made})

    @app.post("/_sandbox/tickets")
    async def create_ticket(request: Request) -> Response:
        body = await request.json()
        try:
            who = _who(st, body, ACT_AS)
            fields = {**body, "status": status_value(body.get("status", "New"))}
        except KeyError as exc:
            return _problem(422, str(exc))
        return JSONResponse(st.create_ticket(fields, who))
