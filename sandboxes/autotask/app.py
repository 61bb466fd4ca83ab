"""An Autotask REST emulator, faithful to Autotask's REST documentation, for tests, benchmarks and `atrelay run`.

What it reproduces: zone lookup; the three auth headers (401 otherwise); ``GET Tickets/{id}`` with
``200 {"item": null}`` for a missing id; ``POST Tickets/query``, ``TicketNotes/query`` and
``Resources/query`` with the filter grammar; ``PATCH Tickets`` (PUT is refused, so a client that uses
it is caught); ``POST Tickets/{id}/Notes``, ``GET TicketNotes/{id}`` and ``GET Tickets/{id}/Notes/{id}``;
entityInformation/fields picklists with string values; 500 with ``errors[]`` for rejected writes;
``ThresholdInformation``; ticket and note webhooks with signed callouts (``sandboxes.autotask.webhooks``);
``TicketHistory`` and ``TicketChecklistItems`` (``sandboxes.autotask.entities``).

Attribution: every write made with the API credentials is made by atrelay's API resource
(``SANDBOX_RESOURCES["atrelay"]``), or by the resource named in an ``ImpersonationResourceId`` header
(then ``impersonatorCreatorResourceID`` on a note is atrelay's). Tickets carry ``lastActivityDate``,
``lastActivityResourceID`` and ``lastActivityPersonType`` (1 = resource, 2 = contact; for a contact
``lastActivityResourceID`` is null, an assumption), updated on every write. The control endpoints
(``sandboxes.autotask.control``) let a test act as the technician, Mission Control, TimeZest or a contact.

Thread limit: Autotask limits concurrent calls per integration code and "object endpoint"; whether
``Tickets`` and ``Tickets/{id}/Notes`` share a bucket is not said by Autotask's thread-limiting
documentation, so by default every
API call of the tenant counts against ONE bucket (the stricter reading). ``PUT /_sandbox/faults``
with ``"thread_buckets": "entity"`` splits the buckets per entity path (``tickets``,
``tickets/notes``, ``ticketnotes``, ...).

Switchable faults (``PUT /_sandbox/faults``): added latency, the concurrency limit that answers the
thread-threshold error, a rolling hourly request limit, and a script of canned failures (429 with or
without Retry-After, 5xx, errors[] texts). ``GET /_sandbox/calls`` counts what arrived.

Saved state: `atrelay sandbox autotask` keeps tickets, notes, histories, webhooks and every id
sequence in var/ (``dump``/``restore``), so a restart matches the audit DB and never reissues an id;
``POST /_sandbox/reset`` returns to the seed data (and that is what gets saved next).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sandboxes.autotask.control import add_control_routes
from sandboxes.autotask.data import NOTE_TYPES, PUBLISH
from sandboxes.autotask.entities import add_entity_routes
from sandboxes.autotask.query import errors as _errors
from sandboxes.autotask.query import lowered as _lower
from sandboxes.autotask.query import run_query as _query
from sandboxes.autotask.state import SandboxState
from sandboxes.autotask.webhook_routes import add_webhook_routes

__all__ = ["create_app"]

THREAD_ERROR = (
    "Thread Threshold Exceeded - The Autotask API thread threshold of {n} threads has been exceeded. "
    "(Itgenatr005)"
)
HOURLY_ERROR = "API request threshold exceeded: {n} requests per 60 minutes for this database."
_ID = re.compile(r"/\d+(?=/|$)")
# Path segments that name an operation, not an entity, when the thread buckets are split.
_OPERATIONS = {"query", "count", "entityinformation", "fields", "userdefinedfields"}


def _bucket(path: str, mode: str) -> str:
    if mode != "entity":
        return "tenant"
    parts = [p for p in path.split("/") if p and not p.isdigit() and p not in _OPERATIONS]
    return "/".join(parts)


def _picklist(values: list[tuple[int, str, bool]]) -> list[dict[str, Any]]:
    return [
        {"value": str(v), "label": lab, "isDefaultValue": d, "sortOrder": i, "parentValue": "",
         "isActive": True, "isSystem": True}
        for i, (v, lab, d) in enumerate(values)
    ]


def _field(name: str, data_type: str, picklist: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "dataType": data_type, "length": extra.get("length", 0),
        "isRequired": extra.get("required", False), "isReadOnly": extra.get("read_only", False),
        "isQueryable": True, "isReference": False, "referenceEntityType": "",
        "isPickList": picklist is not None, "picklistValues": picklist, "picklistParentValueField": "",
        "isSupportedWebhookField": True,
    }


class _LowercasePath:
    """Autotask paths are case-insensitive in practice; route on the lower-cased path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = dict(scope)
            scope["path"] = scope["path"].lower()
        await self.app(scope, receive, send)


def create_app(state: SandboxState | None = None) -> ASGIApp:
    st = state or SandboxState()
    app = FastAPI(title="Autotask sandbox", docs_url=None, redoc_url=None)
    app.state.sandbox = st
    api = "/atservicesrest/v1.0"
    # Runs only when the server has lifespan on; ThreadedServer and `atrelay sandbox` run without it,
    # and there the lanes are daemon threads (SandboxState.close() joins them).
    app.router.add_event_handler("shutdown", st.close)

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if path.startswith("/_sandbox"):
            return await call_next(request)  # type: ignore[no-any-return]
        relative = path.split(api, 1)[-1]
        key = f"{request.method} {_ID.sub('/{id}', relative).lstrip('/')}"
        st.calls[key] += 1
        st.calls["total"] += 1
        now = time.monotonic()
        st.window.append(now)
        while st.window and st.window[0] < now - 3600:
            st.window.popleft()
        if "zoneinformation" in path or "versioninformation" in path:
            return await call_next(request)  # type: ignore[no-any-return]
        h = request.headers
        if (
            h.get("apiintegrationcode") != st.credentials["integration_code"]
            or h.get("username") != st.credentials["username"]
            or h.get("secret") != st.credentials["secret"]
        ):
            st.errors_returned["auth"] += 1
            return JSONResponse({"errors": ["Unauthorized"]}, status_code=401)
        if st.hourly_limit is not None and len(st.window) > st.hourly_limit:
            st.errors_returned["hourly_limit"] += 1
            return _errors(429, HOURLY_ERROR.format(n=st.hourly_limit))
        bucket = _bucket(relative, st.thread_buckets)
        endpoint = _bucket(relative, "entity")  # what the scripted faults name
        st.in_flight[bucket] += 1
        try:
            st.max_in_flight_seen[bucket] = max(st.max_in_flight_seen[bucket], st.in_flight[bucket])
            if st.max_in_flight is not None and st.in_flight[bucket] > st.max_in_flight:
                st.errors_returned["thread_threshold"] += 1
                return _errors(500, THREAD_ERROR.format(n=st.max_in_flight))
            if time.monotonic() < st.outage_until and st.outage_statuses:
                status = st.outage_statuses[st.outage_count % len(st.outage_statuses)]
                st.outage_count += 1
                st.errors_returned[f"outage_{status}"] += 1
                return Response("Service Unavailable" if status != 500 else "Internal Server Error", status_code=status)
            for i, fault in enumerate(st.script):
                if fault.get("endpoint") in (None, endpoint, endpoint.replace("tickets/notes", "ticketnotes")) \
                        and fault.get("method") in (None, request.method):
                    fault["count"] = int(fault.get("count", 1)) - 1
                    if fault["count"] <= 0:
                        st.script.pop(i)
                    if fault.get("then") == "process":
                        # Slow, but done: the caller may have given up before this answer. The body
                        # is read first, as a real server has it before it starts the work.
                        await request.body()
                        await asyncio.sleep(float(fault.get("delay_ms", 0)) / 1000)
                        st.errors_returned["slow_processed"] += 1
                        return await call_next(request)  # type: ignore[no-any-return]
                    return await _scripted(fault, st)
            if st.latency_ms:
                await request.body()  # received in full before the (slow) work starts
                await asyncio.sleep(st.latency_ms / 1000)
            return await call_next(request)  # type: ignore[no-any-return]
        finally:
            st.in_flight[bucket] -= 1

    async def _scripted(fault: dict[str, Any], st: SandboxState) -> Response:
        if fault.get("delay_ms"):
            await asyncio.sleep(float(fault["delay_ms"]) / 1000)
        status = int(fault.get("status", 500))
        st.errors_returned[f"scripted_{status}"] += 1
        headers = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") is not None else None
        if fault.get("errors") is not None:
            return _errors(status, *fault["errors"], headers=headers)
        return Response(fault.get("text", "Service Unavailable"), status_code=status, headers=headers)

    # ---- zone / version -------------------------------------------------------------------
    @app.get(f"{api}/zoneinformation")
    async def zone(request: Request, user: str | None = None) -> Response:
        if not user:
            return _errors(400, "The user parameter is required.")
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"zoneName": "Sandbox", "url": f"{base}/atservicesrest/",
                             "webUrl": f"{base}/", "ci": 424242})

    @app.get("/atservicesrest/versioninformation")
    async def version() -> dict[str, Any]:
        return {"apiVersions": ["1.0"]}

    # ---- tickets --------------------------------------------------------------------------
    @app.get(f"{api}/tickets/entityinformation/fields")
    async def ticket_fields() -> dict[str, Any]:
        return {"fields": [
            _field("id", "long", read_only=True),
            _field("ticketNumber", "string", length=50, read_only=True),
            _field("title", "string", length=255, required=True),
            _field("status", "integer", st.status_values(), required=True),
            _field("dueDateTime", "datetime"),
            _field("assignedResourceID", "integer"),
            _field("lastActivityDate", "datetime", read_only=True),
            _field("lastActivityResourceID", "integer", read_only=True),
            _field("lastActivityPersonType", "integer", read_only=True),
        ]}

    @app.get(f"{api}/ticketnotes/entityinformation/fields")
    async def note_fields() -> dict[str, Any]:
        return {"fields": [
            _field("id", "long", read_only=True),
            _field("ticketID", "integer", required=True),
            _field("title", "string", length=250),
            _field("description", "string", length=32000, required=True),
            _field("noteType", "integer", _picklist(NOTE_TYPES), required=True),
            _field("publish", "integer", _picklist(PUBLISH), required=True),
            _field("creatorResourceID", "integer", read_only=True),
            _field("createdByContactID", "integer", read_only=True),
            _field("createDateTime", "datetime", read_only=True),
            _field("lastActivityDate", "datetime", read_only=True),
        ]}

    @app.get(f"{api}/tickets/{{ticket_id}}")
    async def get_ticket(ticket_id: int) -> dict[str, Any]:
        return {"item": st.tickets.get(ticket_id)}

    @app.post(f"{api}/tickets/query")
    async def query_tickets(request: Request) -> Response:
        try:
            return JSONResponse(_query(list(st.tickets.values()), await request.json()))
        except ValueError as exc:
            return _errors(500, str(exc))

    @app.patch(f"{api}/tickets")
    async def patch_ticket(request: Request) -> Response:
        lower = _lower(await request.json())
        tid = lower.get("id")
        if not isinstance(tid, int):
            return _errors(500, "The id field is required for PATCH.")
        if tid not in st.tickets:
            return _errors(500, f"Unable to find the Ticket with ID {tid}.")
        try:
            who = st.api_actor(request.headers.get("impersonationresourceid"))
            changes = st.validate_ticket_changes(lower)
        except ValueError as exc:
            return _errors(500, str(exc))
        st.change_ticket(tid, changes, who)
        return JSONResponse({"itemId": tid})

    @app.put(f"{api}/tickets")
    async def put_ticket() -> Response:
        # Real Autotask accepts PUT and nulls every field left out; atrelay must never send one.
        return _errors(405, "PUT replaces the whole ticket; this sandbox refuses it (use PATCH).")

    # ---- notes ----------------------------------------------------------------------------
    @app.post(f"{api}/tickets/{{ticket_id}}/notes")
    async def add_note(ticket_id: int, request: Request) -> Response:
        lower = _lower(await request.json())
        if ticket_id not in st.tickets:
            return _errors(500, f"Unable to find the parent Ticket with ID {ticket_id}.")
        if not lower.get("description"):
            return _errors(500, "description is required.")
        if len(str(lower.get("title") or "")) > 250:
            return _errors(500, "title exceeds the maximum length of 250.")
        if lower.get("notetype") not in {v for v, _l, _d in NOTE_TYPES}:
            return _errors(500, f"Value {lower.get('notetype')} is not a valid value for field noteType.")
        if lower.get("publish") not in {v for v, _l, _d in PUBLISH}:
            return _errors(500, f"Value {lower.get('publish')} is not a valid value for field publish.")
        try:
            who = st.api_actor(request.headers.get("impersonationresourceid"))
        except ValueError as exc:
            return _errors(500, str(exc))
        note = st.add_note(ticket_id, {"title": lower.get("title"), "description": lower["description"],
                                       "noteType": lower["notetype"], "publish": lower["publish"]}, who)
        return JSONResponse({"itemId": note["id"]})

    @app.get(f"{api}/ticketnotes/{{note_id}}")
    async def get_note(note_id: int) -> dict[str, Any]:
        return {"item": st.notes.get(note_id)}

    @app.get(f"{api}/tickets/{{ticket_id}}/notes/{{note_id}}")
    async def get_child_note(ticket_id: int, note_id: int) -> dict[str, Any]:
        note = st.notes.get(note_id)
        return {"item": note if note is not None and note["ticketID"] == ticket_id else None}

    @app.post(f"{api}/ticketnotes/query")
    async def query_notes(request: Request) -> Response:
        try:
            return JSONResponse(_query(list(st.notes.values()), await request.json()))
        except ValueError as exc:
            return _errors(500, str(exc))

    @app.get(f"{api}/thresholdinformation")
    async def threshold() -> dict[str, Any]:
        return {"externalRequestThreshold": st.hourly_limit or 10000, "requestThresholdTimeframe": 60,
                "currentTimeframeRequestCount": len(st.window)}

    add_entity_routes(app, st, api)
    add_webhook_routes(app, st.webhooks, api, _query)
    add_control_routes(app, st)
    return _LowercasePath(app)
