"""A TimeZest API emulator: scheduling requests with cursor paging, TQL filters and Bearer auth.

Control endpoints (not TimeZest's): ``POST /_sandbox/scheduling_requests`` creates a request for a
ticket, ``POST /_sandbox/scheduling_requests/{id}/transition`` moves it ``new -> sent -> scheduled |
cancelled``, ``PUT /_sandbox/faults`` scripts failures, ``GET /_sandbox/calls`` counts calls.
"""

from __future__ import annotations

import collections
import itertools
import operator
import re
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from connectors.timezest.sandbox_data import SANDBOX_TIMEZEST_API_KEY

__all__ = ["TimezestSandboxState", "create_app"]

PAGE = 20
_REQ_ID = re.compile(r"sreq_\w+")
_ALLOWED = {"new": {"sent", "cancelled", "scheduled"}, "sent": {"scheduled", "cancelled", "closed"},
            "scheduled": {"cancelled", "closed"}, "cancelled": {"closed"}, "closed": set()}
_OPS = {"EQ": operator.eq, "NOT_EQ": operator.ne, "GT": operator.gt, "GTE": operator.ge,
        "LT": operator.lt, "LTE": operator.le}
_PRED = re.compile(r"^(?:scheduling_requests?\.)?(\w+)(?:\s+|~)(EQ|NOT_EQ|GT|GTE|LT|LTE|IN)(?:\s+|~)(.+)$", re.I)


class TimezestSandboxState:
    def __init__(self, api_key: str = SANDBOX_TIMEZEST_API_KEY) -> None:
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.clock = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self.script: list[dict[str, Any]] = []

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
        return req


def _tql_match(req: dict[str, Any], tql: str) -> bool:
    for pred in re.split(r"\s+AND\s+|~AND~", tql.strip(), flags=re.I):
        m = _PRED.match(pred.strip())
        if not m:
            raise ValueError(f"invalid TQL predicate {pred!r}")
        attr, op, raw = m.group(1), m.group(2).upper(), m.group(3).strip()
        actual = req.get(attr)
        if op == "IN":
            ok = str(actual) in [v.strip() for v in raw.strip("()").split(",")]
        else:
            value: Any = int(raw) if raw.lstrip("-").isdigit() else raw
            ok = actual is not None and bool(_OPS[op](actual, value))
        if not ok:
            return False
    return True


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
                items = [r for r in items if _tql_match(r, filter)]
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

    @app.put("/_sandbox/faults")
    async def faults(request: Request) -> dict[str, Any]:
        st.script = list((await request.json()).get("script") or [])
        return {"script": st.script}

    @app.get("/_sandbox/calls")
    async def calls() -> dict[str, Any]:
        return {"total": st.calls.get("total", 0), "by_endpoint": {k: v for k, v in st.calls.items() if k != "total"}}

    @app.post("/_sandbox/reset")
    async def reset() -> dict[str, str]:
        st.reset()
        return {"status": "reset"}

    return app
