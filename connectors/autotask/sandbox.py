"""An Autotask REST emulator, faithful to the reference facts, for tests, benchmarks and `atrelay run`.

What it reproduces: zone lookup; the three auth headers (401 otherwise); ``GET Tickets/{id}`` with
``200 {"item": null}`` for a missing id; ``POST Tickets/query`` and ``TicketNotes/query`` with the
filter grammar; ``PATCH Tickets`` (PUT is refused, so a client that uses it is caught);
``POST Tickets/{id}/Notes``; entityInformation/fields picklists with string values; 500 with
``errors[]`` for rejected writes; ``ThresholdInformation``.

Switchable faults (``PUT /_sandbox/faults``): added latency, a per-endpoint concurrency limit that
answers the thread-threshold error, a rolling hourly request limit, and a script of canned failures
(429 with or without Retry-After, 5xx, errors[] texts). ``GET /_sandbox/calls`` counts what arrived.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.autotask.client import endpoint_of
from connectors.autotask.sandbox_data import (
    NOTE_TYPES,
    PUBLISH,
    SANDBOX_AUTOTASK_CREDENTIALS,
    STATUSES,
    seed_tickets,
)

__all__ = ["SandboxState", "create_app"]

THREAD_ERROR = (
    "Thread Threshold Exceeded - The Autotask API thread threshold of {n} threads has been exceeded. "
    "(Itgenatr005)"
)
HOURLY_ERROR = "API request threshold exceeded: {n} requests per 60 minutes for this database."
_ID = re.compile(r"/\d+(?=/|$)")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{datetime.now(UTC).microsecond // 1000:03d}Z"


class SandboxState:
    def __init__(self, credentials: dict[str, str] | None = None) -> None:
        self.credentials = credentials or dict(SANDBOX_AUTOTASK_CREDENTIALS)
        self.reset()

    def reset(self) -> None:
        self.tickets: dict[int, dict[str, Any]] = {t["id"]: t for t in seed_tickets()}
        self.notes: dict[int, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.errors_returned: collections.Counter[str] = collections.Counter()
        self.window: collections.deque[float] = collections.deque()
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.max_in_flight_seen: collections.Counter[str] = collections.Counter()
        self.note_ids = itertools.count(900001)
        self.ticket_ids = itertools.count(50001 + len(self.tickets))
        self.latency_ms = 0.0
        self.max_in_flight: int | None = None
        self.hourly_limit: int | None = None
        self.script: list[dict[str, Any]] = []
        self.outage_until = 0.0
        self.outage_statuses: list[int] = []
        self.outage_count = 0

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

    def set_status(self, ticket_id: int, status: int, actor: str) -> None:
        ticket = self.tickets[ticket_id]
        self.history.append(
            {"ticket_id": ticket_id, "from": ticket["status"], "to": status, "actor": actor, "at": _now()}
        )
        ticket["status"] = status
        ticket["lastActivityDate"] = _now()


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


def _errors(status: int, *messages: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status, headers=headers)


def _matches(record: dict[str, Any], cond: dict[str, Any]) -> bool:
    op = str(cond.get("op", "")).lower()
    if op in ("and", "or"):
        results = [_matches(record, c) for c in cond.get("items") or []]
        return all(results) if op == "and" else any(results)
    key = str(cond.get("field", "")).lower()
    actual = next((v for k, v in record.items() if k.lower() == key), None)
    want = cond.get("value")
    text, wtext = str(actual or "").lower(), str(want or "").lower()
    checks: dict[str, Callable[[], bool]] = {
        "eq": lambda: actual == want or text == wtext,
        "noteq": lambda: not (actual == want or text == wtext),
        "contains": lambda: wtext in text,
        "beginswith": lambda: text.startswith(wtext),
        "endswith": lambda: text.endswith(wtext),
        "exist": lambda: actual not in (None, ""),
        "notexist": lambda: actual in (None, ""),
        "in": lambda: actual in (want or []),
        "notin": lambda: actual not in (want or []),
        "gt": lambda: actual is not None and actual > want,
        "gte": lambda: actual is not None and actual >= want,
        "lt": lambda: actual is not None and actual < want,
        "lte": lambda: actual is not None and actual <= want,
    }
    if op not in checks:
        raise ValueError(f"Unsupported operator {cond.get('op')!r}")
    return bool(checks[op]())


def _query(records: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    lower = {k.lower(): v for k, v in body.items()}
    max_records = int(lower.get("maxrecords") or 500)
    if not 1 <= max_records <= 500:
        raise ValueError("MaxRecords must be between 1 and 500")
    conditions = lower.get("filter") or []
    if not conditions:
        raise ValueError("A query requires at least one filter condition")
    hits = [r for r in records if all(_matches(r, c) for c in conditions)][:max_records]
    include = [f.lower() for f in lower.get("includefields") or []]
    if include:
        hits = [{k: v for k, v in r.items() if k.lower() in include} for r in hits]
    return {"items": hits, "pageDetails": {"count": len(hits), "requestCount": max_records,
                                           "prevPageUrl": None, "nextPageUrl": None}}


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

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if path.startswith("/_sandbox"):
            return await call_next(request)  # type: ignore[no-any-return]
        key = f"{request.method} {_ID.sub('/{id}', path.split(api, 1)[-1]).lstrip('/')}"
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
        endpoint = endpoint_of(path)
        st.in_flight[endpoint] += 1
        try:
            st.max_in_flight_seen[endpoint] = max(st.max_in_flight_seen[endpoint], st.in_flight[endpoint])
            if st.max_in_flight is not None and st.in_flight[endpoint] > st.max_in_flight:
                st.errors_returned["thread_threshold"] += 1
                return _errors(500, THREAD_ERROR.format(n=st.max_in_flight))
            if time.monotonic() < st.outage_until and st.outage_statuses:
                status = st.outage_statuses[st.outage_count % len(st.outage_statuses)]
                st.outage_count += 1
                st.errors_returned[f"outage_{status}"] += 1
                return Response("Service Unavailable" if status != 500 else "Internal Server Error", status_code=status)
            for i, fault in enumerate(st.script):
                if fault.get("endpoint") in (None, endpoint) and fault.get("method") in (None, request.method):
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
            st.in_flight[endpoint] -= 1

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
            _field("lastActivityDate", "datetime", read_only=True),
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
        body = await request.json()
        lower = {k.lower(): v for k, v in body.items()} if isinstance(body, dict) else {}
        tid = lower.get("id")
        if not isinstance(tid, int):
            return _errors(500, "The id field is required for PATCH.")
        if tid not in st.tickets:
            return _errors(500, f"Unable to find the Ticket with ID {tid}.")
        if "status" in lower:
            if lower["status"] not in st.active_status_ids():
                return _errors(500, f"Value {lower['status']} is not a valid value for field status.")
            st.set_status(tid, int(lower["status"]), actor="api")
        return JSONResponse({"itemId": tid})

    @app.put(f"{api}/tickets")
    async def put_ticket() -> Response:
        # Real Autotask accepts PUT and nulls every field left out; atrelay must never send one.
        return _errors(405, "PUT replaces the whole ticket; this sandbox refuses it (use PATCH).")

    # ---- notes ----------------------------------------------------------------------------
    @app.post(f"{api}/tickets/{{ticket_id}}/notes")
    async def add_note(ticket_id: int, request: Request) -> Response:
        body = await request.json()
        lower = {k.lower(): v for k, v in body.items()} if isinstance(body, dict) else {}
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
        note_id = next(st.note_ids)
        st.notes[note_id] = {
            "id": note_id, "ticketID": ticket_id, "title": lower.get("title"),
            "description": lower["description"], "noteType": lower["notetype"],
            "publish": lower["publish"], "createDateTime": _now(),
        }
        st.tickets[ticket_id]["lastActivityDate"] = _now()
        return JSONResponse({"itemId": note_id})

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

    # ---- sandbox control (not part of Autotask) --------------------------------------------
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
        st.hourly_limit = body.get("hourly_limit")
        st.script = list(body.get("script") or [])
        if body.get("outage_seconds"):
            st.outage_until = time.monotonic() + float(body["outage_seconds"])
            st.outage_statuses = [int(x) for x in body.get("outage_statuses") or [502, 503, 500]]
        return {"latency_ms": st.latency_ms, "max_in_flight": st.max_in_flight,
                "hourly_limit": st.hourly_limit, "script": st.script}

    @app.get("/_sandbox/statuses")
    async def statuses() -> dict[str, int]:
        return {lab: v for v, lab, act, _s in STATUSES if act}

    @app.get("/_sandbox/tickets/{ticket_id}")
    async def show(ticket_id: int) -> Response:
        if ticket_id not in st.tickets:
            return JSONResponse({"detail": "no such ticket"}, status_code=404)
        ticket = dict(st.tickets[ticket_id])
        ticket["statusLabel"] = st.status_label(ticket["status"])
        return JSONResponse({
            "ticket": ticket,
            "notes": [n for n in st.notes.values() if n["ticketID"] == ticket_id],
            "history": [h for h in st.history if h["ticket_id"] == ticket_id],
        })

    @app.post("/_sandbox/tickets/{ticket_id}/status")
    async def human_change(ticket_id: int, request: Request) -> Response:
        body = await request.json()
        if ticket_id not in st.tickets:
            return JSONResponse({"detail": "no such ticket"}, status_code=404)
        raw = body.get("status")
        try:
            value = raw if isinstance(raw, int) else st.status_by_label(str(raw))
        except KeyError:
            return JSONResponse({"detail": f"unknown status {raw!r}"}, status_code=422)
        st.set_status(ticket_id, value, actor=str(body.get("actor", "human")))
        return JSONResponse({"ticket_id": ticket_id, "status": value})

    @app.post("/_sandbox/tickets")
    async def create_ticket(request: Request) -> Response:
        body = await request.json()
        tid = next(st.ticket_ids)
        st.tickets[tid] = {"id": tid, "ticketNumber": body.get("ticketNumber") or f"T20261126.{tid % 10000:04d}",
                           "title": body.get("title", "Sandbox ticket"),
                           "status": st.status_by_label(body.get("status", "New")),
                           "lastActivityDate": _now()}
        return JSONResponse(st.tickets[tid])

    return _LowercasePath(app)
