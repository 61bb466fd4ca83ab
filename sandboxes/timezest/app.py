"""A TimeZest API emulator: scheduling requests with cursor paging, TQL filters and Bearer auth.

Control endpoints (not TimeZest's): ``POST /_sandbox/scheduling_requests`` creates a request for a
ticket, ``POST /_sandbox/scheduling_requests/{id}/transition`` moves it ``new -> sent -> scheduled |
cancelled`` (a scheduled request can still be cancelled: status ``cancelled``, ``updated_at`` moves,
the booked time stays as it was), ``POST /_sandbox/scheduling_requests/{id}/reschedule``
``{"selected_start_time"?: unix, "shift_seconds"?: N}`` re-books a scheduled request (status stays
``scheduled``; ``selected_start_time`` and ``updated_at`` move; ``scheduled_at`` is kept, an
assumption), ``PUT /_sandbox/faults`` scripts failures, ``GET /_sandbox/calls`` counts calls.

Request ids are never reused by one process, not even after ``reset()``: a poller that remembers an
id must never meet it again on a different request. `atrelay sandbox timezest` saves the requests
and the next id under var/ (``dump``/``restore``), so a restarted sandbox continues the sequence; a
state built in-process (tests) starts at ``sreq_SBX000001``.

**PSA actions** (``PUT /_sandbox/psa_actions`` ``{"autotask_url", "statuses": {"sent"?, "scheduled"?,
"cancelled"?: label | null}, "notes"?: bool, "terse"?: bool}``, or ``null`` to switch them off): TimeZest's
own "update ticket status" and note actions, as its help centre describes them for Autotask. On each
transition of a request that names an Autotask ticket, the sandbox sets the configured status and
writes a note on that ticket *as TimeZest's API resource*, through the Autotask sandbox's control
endpoints (HTTP, as a separate system would); a reschedule gets a note and no status (TimeZest "will
... leave internal notes on the ticket", help centre, "Rescheduling and Cancellation"). Its notes
name the appointment's time in UTC; ``terse`` leaves the time out of the cancellation and reschedule
notes (how TimeZest words its notes is not documented). Off by default.

TQL (TimeZest's query language): ``attribute OPERATOR value`` with spaces or ``~``, attribute optionally
prefixed ``scheduling_request.``/``scheduling_requests.``; ``EQ NOT_EQ GT GTE LT LTE LIKE NOT_LIKE IN
NOT_IN``; predicates joined by ``AND`` (binding tighter) and ``OR``. The time attributes
(``created_at``, ``updated_at``, ``scheduled_at``, ``selected_start_time``) compare as unix seconds
and take unix seconds or an ISO date/datetime (``2023-07-01`` is midnight UTC, an assumption: the
docs do not say which zone). Whether real TimeZest filters on ``updated_at`` is unverified (a
community note says only ``created_at`` works), so ``PUT /_sandbox/faults`` takes ``"tql_ignore":
[attrs]`` (predicates on them silently match everything) and ``"tql_reject": [attrs]`` (400).
"""

from __future__ import annotations

import collections
import operator
import re
import time
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandboxes.common.state_file import IdSequence
from sandboxes.timezest.data import SANDBOX_TIMEZEST_API_KEY

__all__ = ["TimezestSandboxState", "create_app"]

PAGE = 20
_REQ_ID = re.compile(r"sreq_\w+")
_ALLOWED = {"new": {"sent", "cancelled", "scheduled"}, "sent": {"scheduled", "cancelled", "closed"},
            "scheduled": {"cancelled", "closed"}, "cancelled": {"closed"}, "closed": set()}
_OPS = {"EQ": operator.eq, "NOT_EQ": operator.ne, "GT": operator.gt, "GTE": operator.ge,
        "LT": operator.lt, "LTE": operator.le}
_PRED = re.compile(
    r"^(?:scheduling_requests?\.)?(\w+)(?:\s+|~)(EQ|NOT_EQ|GTE|GT|LTE|LT|NOT_LIKE|LIKE|NOT_IN|IN)(?:\s+|~)(.+)$", re.I)
_TIMES = {"created_at", "updated_at", "scheduled_at", "selected_start_time"}


class TimezestSandboxState:
    def __init__(self, api_key: str = SANDBOX_TIMEZEST_API_KEY) -> None:
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        # Kept across resets: a request id is never handed out twice by one process.
        self.ids: IdSequence = getattr(self, "ids", None) or IdSequence(1)
        self.clock = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.script: list[dict[str, Any]] = []
        self.tql_ignore: set[str] = set()
        self.tql_reject: set[str] = set()
        self.psa_actions: dict[str, Any] | None = None

    def dump(self) -> dict[str, Any]:
        """Requests, the next id and the clock (`atrelay sandbox timezest` saves this under var/)."""
        return {"requests": list(self.requests.values()), "next_id": self.ids.peek, "clock": self.clock}

    def restore(self, data: dict[str, Any]) -> None:
        """The inverse of ``dump``: a restarted sandbox continues the id sequence, never reuses an id."""
        requests = {str(r["id"]): dict(r) for r in data["requests"]}
        ids, clock = IdSequence(int(data["next_id"])), int(data["clock"])
        self.requests, self.ids, self.clock = requests, ids, clock

    def tick(self) -> int:
        """Seconds, strictly increasing, so newest-first order is never ambiguous."""
        self.clock = max(int(time.time()), self.clock + 1)
        return self.clock

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        now = self.tick()
        rid = f"sreq_SBX{next(self.ids):06d}"
        entities = body.get("associated_entities")
        if entities is None and body.get("ticket_id") is not None:
            entities = [{"type": "autotask/ticket", "id": int(body["ticket_id"])}]
        req = {
            "id": rid, "object": "scheduling_request",
            "appointment_type_id": body.get("appointment_type_id", "apty_SANDBOX01"),
            "associated_entities": entities or [],
            "duration_mins": 30, "end_user_email": body.get("end_user_email", "jane@example.com"),
            "end_user_name": body.get("end_user_name", "Jane Example"), "guests_list": [],
            "resources": [{"id": "team_SBX01", "name": "Remote Team", "object": "team"}],
            "scheduled_agents": [], "scheduled_at": None, "scheduling_url": f"https://sandbox.timezest.invalid/s/{rid}",
            "selected_start_time": None, "selected_time_zone": None, "status": "new",
            "created_at": now, "updated_at": now,
        }
        self.requests[rid] = req
        return req

    def transition(self, rid: str, status: str) -> dict[str, Any]:
        req = self.requests[rid]
        if status not in _ALLOWED.get(req["status"], set()):
            raise ValueError(f"cannot move {req['status']} -> {status}")
        now = self.tick()
        req["status"], req["updated_at"] = status, now
        if status == "scheduled":
            req["scheduled_at"] = now
            req["selected_start_time"] = now + 2 * 86400
            req["selected_time_zone"] = "Eastern Time (US & Canada)"
            req["scheduled_agents"] = [{"id": "agnt_SBX01", "name": "Tech One", "object": "agent"}]
        self._psa(req, status)
        return req

    def _psa(self, req: dict[str, Any], status: str) -> None:
        """TimeZest's PSA actions for this transition: a status and a note on the ticket, as TimeZest."""
        psa = self.psa_actions
        ticket = next((e.get("id") for e in req["associated_entities"] if e.get("type") == "autotask/ticket"), None)
        if not psa or ticket is None:
            return
        base = str(psa["autotask_url"]).rstrip("/")
        label = (psa.get("statuses") or {}).get(status)
        when = (datetime.fromtimestamp(req["selected_start_time"], tz=UTC).strftime("%a %Y-%m-%d %H:%M UTC")
                if req.get("selected_start_time") else None)
        agents = ", ".join(a["name"] for a in req["scheduled_agents"]) or "the team"
        later = None if psa.get("terse") else when  # the time said in a cancellation or reschedule note
        text = {"sent": f"TimeZest sent a scheduling link to {req['end_user_name']}.",
                "scheduled": f"{req['end_user_name']} booked {when} with {agents} (TimeZest).",
                "cancelled": f"The TimeZest appointment{f' of {later}' if later else ''} was cancelled.",
                "rescheduled": f"{req['end_user_name']} moved the TimeZest appointment"
                               f"{f' to {later} with {agents}' if later else ''}."}.get(status)
        with httpx.Client(timeout=10) as client:
            if label:
                client.post(f"{base}/_sandbox/tickets/{ticket}/status",
                            json={"status": label, "as": "timezest"}).raise_for_status()
            if text and psa.get("notes", True):
                client.post(f"{base}/_sandbox/tickets/{ticket}/notes",
                            json={"title": f"TimeZest: scheduling request {status}", "description": text,
                                  "as": "timezest"}).raise_for_status()

    def reschedule(self, rid: str, start: int | None = None, shift_seconds: int = 86400) -> dict[str, Any]:
        """The end user (or an agent) moves a booked appointment: same request, new time."""
        req = self.requests[rid]
        if req["status"] != "scheduled":
            raise ValueError(f"cannot reschedule a {req['status']} request")
        req["updated_at"] = self.tick()
        req["selected_start_time"] = start if start is not None else int(req["selected_start_time"]) + shift_seconds
        self._psa(req, "rescheduled")
        return req


def _time_value(attr: str, raw: str) -> int:
    text = raw.strip().strip("'\"")
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid date {raw!r} for {attr}") from None
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())


def _predicate(req: dict[str, Any], pred: str, ignore: AbstractSet[str], reject: AbstractSet[str]) -> bool:
    m = _PRED.match(pred.strip())
    if not m:
        raise ValueError(f"invalid TQL predicate {pred!r}")
    attr, op, raw = m.group(1).lower(), m.group(2).upper(), m.group(3).strip()
    if attr in reject:
        raise ValueError(f"filtering on {attr} is not supported")
    if attr in ignore:
        return True
    actual = req.get(attr)
    if op in ("IN", "NOT_IN"):
        inside = str(actual) in [v.strip().strip("'\"") for v in raw.strip("()").split(",")]
        return inside if op == "IN" else not inside
    if op in ("LIKE", "NOT_LIKE"):
        found = raw.strip("'\"").strip("%").lower() in str(actual or "").lower()
        return found if op == "LIKE" else not found
    value: Any = _time_value(attr, raw) if attr in _TIMES else (int(raw) if raw.lstrip("-").isdigit() else raw)
    if actual is None:
        return op == "NOT_EQ" and value is not None
    try:
        return bool(_OPS[op](actual, value))
    except TypeError:
        raise ValueError(f"cannot compare {attr} with {raw!r}") from None


def _tql_match(req: dict[str, Any], tql: str, ignore: AbstractSet[str] = frozenset(),
               reject: AbstractSet[str] = frozenset()) -> bool:
    """OR of AND-groups: ``a AND b OR c`` is ``(a AND b) OR c``."""
    groups = re.split(r"\s+OR\s+|~OR~", tql.strip(), flags=re.I)
    return any(
        all(_predicate(req, p, ignore, reject) for p in re.split(r"\s+AND\s+|~AND~", group.strip(), flags=re.I))
        for group in groups
    )


def create_app(state: TimezestSandboxState | None = None) -> FastAPI:
    st = state or TimezestSandboxState()
    app = FastAPI(title="TimeZest sandbox", docs_url=None, redoc_url=None)
    app.state.sandbox = st

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Response:
        if request.url.path.startswith("/_sandbox"):
            return await call_next(request)  # type: ignore[no-any-return]
        st.calls[f"{request.method} {_REQ_ID.sub('{id}', request.url.path)}"] += 1
        st.calls["total"] += 1
        if request.headers.get("authorization") != f"Bearer {st.api_key}":
            return JSONResponse({"error": "Unauthorized. No valid API key provided"}, status_code=401)
        if st.script:
            fault = st.script[0]
            fault["count"] = int(fault.get("count", 1)) - 1
            if fault["count"] <= 0:
                st.script.pop(0)
            headers = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") is not None else None
            return JSONResponse({"error": fault.get("error", "sandbox fault")},
                                status_code=int(fault.get("status", 503)), headers=headers)
        return await call_next(request)  # type: ignore[no-any-return]

    @app.get("/v1/scheduling_requests")
    async def list_requests(request: Request, filter: str | None = None,
                            starting_after: str | None = None) -> Response:
        items = sorted(st.requests.values(), key=lambda r: (r["created_at"], r["id"]), reverse=True)
        if filter:
            try:
                items = [r for r in items if _tql_match(r, filter, st.tql_ignore, st.tql_reject)]
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        if starting_after:
            ids = [r["id"] for r in items]
            items = items[ids.index(starting_after) + 1:] if starting_after in ids else []
        page, more = items[:PAGE], len(items) > PAGE
        nxt = None
        if more:
            params = {"starting_after": page[-1]["id"], **({"filter": filter} if filter else {})}
            nxt = str(request.url.replace_query_params(**params))
        return JSONResponse({"object": "list", "next_page": nxt, "previous_page": None, "data": page})

    @app.get("/v1/scheduling_requests/{rid}")
    async def get_request(rid: str) -> Response:
        if rid not in st.requests:
            return JSONResponse({"error": "Not found"}, status_code=404)
        return JSONResponse(st.requests[rid])

    @app.post("/v1/scheduling_requests")
    async def create_request(request: Request) -> Response:
        return JSONResponse(st.create(await request.json()), status_code=201)

    @app.post("/_sandbox/scheduling_requests")
    async def sandbox_create(request: Request) -> Response:
        return JSONResponse(st.create(await request.json()), status_code=201)

    @app.post("/_sandbox/scheduling_requests/{rid}/transition")
    async def sandbox_transition(rid: str, request: Request) -> Response:
        body = await request.json()
        if rid not in st.requests:
            return JSONResponse({"detail": "no such request"}, status_code=404)
        try:
            return JSONResponse(st.transition(rid, str(body.get("status"))))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.post("/_sandbox/scheduling_requests/{rid}/reschedule")
    async def sandbox_reschedule(rid: str, request: Request) -> Response:
        body = await request.json()
        if rid not in st.requests:
            return JSONResponse({"detail": "no such request"}, status_code=404)
        start = body.get("selected_start_time")
        try:
            return JSONResponse(st.reschedule(rid, int(start) if start is not None else None,
                                              int(body.get("shift_seconds", 86400))))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.put("/_sandbox/faults")
    async def faults(request: Request) -> dict[str, Any]:
        body = await request.json()
        st.script = list(body.get("script") or [])
        st.tql_ignore = {str(a).lower() for a in body.get("tql_ignore") or []}
        st.tql_reject = {str(a).lower() for a in body.get("tql_reject") or []}
        return {"script": st.script, "tql_ignore": sorted(st.tql_ignore), "tql_reject": sorted(st.tql_reject)}

    @app.put("/_sandbox/psa_actions")
    async def psa_actions(request: Request) -> dict[str, Any]:
        body = await request.json()
        st.psa_actions = dict(body) if body else None
        return {"psa_actions": st.psa_actions}

    @app.get("/_sandbox/calls")
    async def calls() -> dict[str, Any]:
        return {"total": st.calls.get("total", 0), "by_endpoint": {k: v for k, v in st.calls.items() if k != "total"}}

    @app.post("/_sandbox/reset")
    async def reset() -> dict[str, str]:
        st.reset()
        return {"status": "reset"}

    return app
