"""The ops dashboard (`/ops`): server-rendered, no JavaScript build, behind ATRELAY_ADMIN_TOKEN.

Sign-in sets an HttpOnly, SameSite=Strict cookie (``Secure`` over HTTPS) holding a random session
value; the session itself is a row in the audit database (pipelines/ops_sessions.py), so it expires
after ``ATRELAY_OPS_SESSION_MINUTES`` and ends at sign-out on every ingress process and across
restarts. ``Authorization: Bearer`` works too. Every state-changing form carries a CSRF token bound to
the session, and a cross-origin ``Origin`` is refused: SameSite alone lets a page on another port of
the same host post as the signed-in admin. No page may be framed (``X-Frame-Options``, CSP
``frame-ancestors``: workers/http/guard.py), so no other page can overlay the Replay button. Failed
sign-ins are logged and slow their client address down exponentially (workers/http/ops_throttle.py),
never locking the right token out.

A browser that signed in gets a long-lived signed *device cookie* (OWASP's "Slow Down Online Guessing
Attacks with Device Cookies"): its sign-ins are throttled in a line of their own, keyed by the device,
so guesses from other clients behind the same address cannot fill its line, and wrong tokens sent
with it are slowed in that line like any others (a stolen device cookie guesses no faster).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from connectors.common.events import Source
from pipelines import ops_sessions, store
from pipelines.audit import EventState, InboundEvent
from pipelines.clock import clamped_from, signature_form
from pipelines.db import session_scope
from workers.http.dead_letters import explain_event
from workers.http.ops_throttle import SignInThrottle, TooMany
from workers.http.verdict import autotask_failing, verdict
from workers.settings import Settings
from workers.status import health, liveness

__all__ = ["make_router"]

COOKIE = "atrelay_ops"
#: The device cookie: ``<issued unix time>.<nonce>.<HMAC>``, sent only to the sign-in form's target.
DEVICE_COOKIE = "atrelay_ops_device"
DEVICE_PATH = "/ops/login"
#: A device cookie is trusted this long after the sign-in that issued it (each sign-in issues a new one).
DEVICE_SECONDS = 180 * 24 * 3600
log = logging.getLogger("atrelay.ops")
SOURCES = frozenset(s.value for s in Source)
STATES = frozenset(s.value for s in EventState)
#: Ids fit the audit tables' integer columns (int4 on PostgreSQL); anything larger cannot exist.
MAX_ID = 2**31 - 1


def _as_id(value: str) -> int | None:
    """A ticket or event id typed by a person: ASCII digits within the column's range, else None."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or len(v) > 10 or int(v) > MAX_ID:
        return None
    return int(v)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def make_router(settings: Settings, enqueue: Callable[[int], None]) -> APIRouter:
    router = APIRouter(prefix="/ops", include_in_schema=False)
    db = settings.effective_database_url
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    key = hmac.new(token.encode(), b"atrelay-ops-session-key", hashlib.sha256).digest() if token else b""
    # Sessions are rows (pipelines/ops_sessions.py) tagged with the key they were made under: a new
    # admin token ends the sessions of the old one.
    key_id = hashlib.sha256(key).hexdigest()[:16]
    lifetime = settings.ops_session_minutes * 60
    throttle = SignInThrottle()

    def _sign(payload: str) -> str:
        return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()

    def new_device() -> str:
        payload = f"{int(time.time())}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{_sign(f'device.{payload}')}"

    def device_of(request: Request) -> str | None:
        """The throttle line of the request's device cookie if it is one this admin token signed and not
        too old, else None (the request waits in its address's line). The key (and so the signature)
        derives from the admin token: a new token distrusts every device."""
        raw = request.cookies.get(DEVICE_COOKIE, "")
        issued, _, rest = raw.partition(".")
        nonce, _, sig = rest.partition(".")
        if not key or len(raw) > 200 or not (issued.isascii() and issued.isdigit() and nonce and sig):
            return None
        if not hmac.compare_digest(sig.encode(), _sign(f"device.{issued}.{nonce}").encode()):
            return None
        if not 0 <= time.time() - int(issued) <= DEVICE_SECONDS:
            return None
        return f"device:{nonce}"  # never an address: a line of its own

    async def session_of(request: Request) -> str | None:
        """The digest of the request's live session (looked up once per request), else None."""
        if "ops_session" not in request.scope:
            cookie = request.cookies.get(COOKIE, "")
            request.scope["ops_session"] = (await run_in_threadpool(ops_sessions.session_alive, db, cookie,
                                                                    key_id=key_id)
                                            if token and cookie else None)
        found: str | None = request.scope["ops_session"]
        return found

    def csrf_for(request: Request) -> str:
        sid = request.scope.get("ops_session")
        return _sign(f"csrf.{sid}") if sid else ""

    def bearer(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    async def authorised(request: Request) -> bool:
        if not token:
            return False
        return await session_of(request) is not None or bearer(request)

    def same_origin(request: Request) -> bool:
        """A browser names the page's origin on a POST; it must be this dashboard's own."""
        origin = request.headers.get("origin")
        if origin is None:  # not sent by every client; the CSRF token still has to match
            return True
        return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"

    def form_of(raw: bytes) -> dict[str, str]:
        # Small urlencoded forms, parsed here rather than pulling in python-multipart. The body was
        # already bounded by the ingress's RequestGuard before this reads it.
        return {k: v[0] for k, v in parse_qs(raw[:4096].decode("utf-8", "replace")).items()}

    async def csrf_ok(request: Request, form: dict[str, str]) -> bool:
        """A bearer-token client is no browser (no ambient credential); a cookie session needs the token."""
        if bearer(request):
            return True
        await session_of(request)
        expected = csrf_for(request)
        return bool(expected) and same_origin(request) and hmac.compare_digest(
            form.get("csrf", "").encode(), expected.encode())

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("msg", request.query_params.get("msg"))
        context.setdefault("csrf", csrf_for(request))
        context.setdefault("mode", settings.mode)  # every page says when nothing is written to Autotask
        return templates.TemplateResponse(request, name, {"ts": _ts, **context}, status_code=status)

    def login_page(request: Request, failed: bool = False) -> HTMLResponse:
        return render(request, "login.html", 401, disabled=not token, failed=failed)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return login_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        form = form_of(await request.body())
        device = device_of(request)
        line = device or client  # a browser that signed in here before waits behind no one else's guesses
        where = {"remote": client, "device": device is not None}  # never the cookie itself
        if token:
            try:
                waited = await throttle.turn(line)  # failures in this line: wait, then be checked
            except TooMany as busy:
                log.warning("ops.login.rate_limited", extra=where)
                limited = render(request, "login.html", 429, disabled=False, failed=False,
                                 msg=f"Sign-ins from your {'browser' if device else 'address'} are waiting their "
                                     f"turn: try again in {busy.retry_after} s.")
                limited.headers["Retry-After"] = str(busy.retry_after)
                return limited
            if waited:
                log.info("ops.login.throttled", extra={**where, "waited_seconds": round(waited, 2)})
        given = form.get("token", "")
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            if token:
                throttle.failed(line)
                log.warning("ops.login.failed", extra=where)  # never the value given
            return login_page(request, failed=bool(token))
        # Only this line starts afresh: a device's success must not hand its address's guessers new tries.
        throttle.succeeded(line)
        log.info("ops.login.succeeded", extra=where)
        value = secrets.token_urlsafe(32)
        await run_in_threadpool(ops_sessions.open_session, db, value, key_id=key_id, lifetime_seconds=lifetime)
        response = RedirectResponse("/ops", status_code=303)
        https = request.url.scheme == "https"
        response.set_cookie(COOKIE, value, httponly=True, samesite="strict", max_age=lifetime, secure=https)
        # Sign-out leaves it: it says "this browser signed in before", not "signed in now".
        response.set_cookie(DEVICE_COOKIE, new_device(), httponly=True, samesite="strict", max_age=DEVICE_SECONDS,
                            secure=https, path=DEVICE_PATH)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        sid = await session_of(request)
        if sid is not None and await csrf_ok(request, form_of(await request.body())):
            await run_in_threadpool(ops_sessions.end_session, db, sid)
        response = RedirectResponse("/ops/login", status_code=303)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @router.get("", response_class=HTMLResponse)
    async def index(request: Request, source: str = "", state: str = "", ticket: str = "") -> Response:
        if not await authorised(request):
            return login_page(request)
        # Filters are the lists' own values: anything else is a 400 here, never a query the database refuses.
        filters = (("source", source, SOURCES), ("state", state, STATES))
        unknown = [f"{name} {value[:40]!r}" for name, value, known in filters if value and value not in known]
        if unknown:
            return render(request, "login.html", 400, disabled=False, failed=False,
                          msg=f"No such filter value: {', '.join(unknown)}.")

        def gather() -> dict[str, Any]:
            with session_scope(db) as s:
                q = select(InboundEvent).order_by(col(InboundEvent.id).desc()).limit(100)
                if source:
                    q = q.where(InboundEvent.source == source)
                if state:
                    q = q.where(InboundEvent.state == state)
                if ticket.strip():
                    t, tid = ticket.strip()[:64], _as_id(ticket)
                    on_ticket = (col(InboundEvent.ticket_number) == t) | (
                        col(InboundEvent.ticket_id) == tid if tid is not None else col(InboundEvent.id) < 0)
                    # Derived events (the follow-up of an MC No Contact) may carry only the ticket id the
                    # first event resolved to: include the children of the matching events.
                    parents = select(InboundEvent.id).where(on_ticket)
                    q = q.where(on_ticket | col(InboundEvent.caused_by_id).in_(parents))
                events = list(s.exec(q).all())
                # Invalid events (signed bodies that failed validation) wait for a fix and a replay too.
                dead = list(s.exec(select(InboundEvent)
                                   .where(col(InboundEvent.state).in_([EventState.DEAD, EventState.INVALID]))
                                   .order_by(col(InboundEvent.id).desc()).limit(50)).all())
                parked = list(s.exec(select(InboundEvent)
                                     .where(col(InboundEvent.state).in_([EventState.PARKED, EventState.RETRYING]))
                                     .order_by(col(InboundEvent.not_before)).limit(50)).all())
                explained = {e.id: explain_event(s, e) for e in dead}
            from pipelines.alert_sends import failed_deliveries
            from pipelines.alerts import open_escalations, recent_alerts
            from pipelines.autotask_status import autotask_intake
            from pipelines.heartbeats import ROLES, alive
            from pipelines.webhook_check import last_check

            now = health(settings)
            intake = autotask_intake(db)
            failing = autotask_failing(db)
            live = liveness(settings)
            webhooks = last_check(db)
            undelivered = failed_deliveries(db)
            processes = {role: alive(db, role, timeout_seconds=settings.heartbeat_timeout_seconds) for role in ROLES}
            return {"events": events, "dead": dead, "explained": explained, "parked": parked, "health": now,
                    "intake": intake, "alerts": recent_alerts(db, limit=20), "live": live, "processes": processes,
                    "escalations": open_escalations(db), "undelivered": undelivered, "webhooks": webhooks,
                    "autotask_failing": failing,
                    "verdict": verdict(settings, now, intake, failing, live=live, webhooks=webhooks,
                                       failed_alerts=len({a.id for a, _ in undelivered}))}

        data = await run_in_threadpool(gather)
        return render(request, "index.html", sources=[s.value for s in Source], states=[s.value for s in EventState],
                      filters={"source": source, "state": state, "ticket": ticket}, **data)

    @router.get("/shadow", response_class=HTMLResponse)
    async def shadow(request: Request) -> Response:
        """What shadow mode would have written, beside what people then set (`atrelay shadow report`)."""
        if not await authorised(request):
            return login_page(request)
        from pipelines.shadow_report import shadow_report

        found = await run_in_threadpool(shadow_report, db, agree_minutes=settings.shadow_agree_minutes)
        agreed, decided = found.agreement
        return render(request, "shadow.html", report=found, agreed=agreed, decided=decided)

    @router.get("/events/{event_id}", response_class=HTMLResponse)
    async def event(request: Request, event_id: int) -> Response:
        if not await authorised(request):
            return login_page(request)
        if event_id > MAX_ID:
            return render(request, "login.html", 404, disabled=False, failed=False, msg=f"no event #{event_id}")

        def gather() -> dict[str, Any] | None:
            story = store.event_story(db, event_id)
            if story is None:
                return None
            e = story.event
            try:
                body = json.dumps(json.loads(e.body), indent=2)
            except ValueError:
                body = e.body.decode("utf-8", "replace")
            explained = None
            if e.state in (EventState.DEAD, EventState.INVALID):
                with session_scope(db) as s:
                    explained = explain_event(s, e)
            effect = store.get_effect(db, event_id)
            return {"e": e, "runs": story.runs, "attempts": story.attempts, "children": story.children, "body": body,
                    "clamped": clamped_from(e.headers), "signature": signature_form(e.headers),
                    "headers": json.dumps(e.headers, indent=2), "explained": explained,
                    "replayable": e.state in store.REPLAYABLE and (explained is None or explained.replay_helps),
                    "note_id": effect.note_id if effect else None, "note_text": effect.note_text if effect else None}

        data = await run_in_threadpool(gather)
        if data is None:
            return render(request, "login.html", 404, disabled=False, failed=False, msg=f"no event #{event_id}")
        return render(request, "event.html", **data)

    @router.post("/events/{event_id}/replay")
    async def replay(request: Request, event_id: int) -> Response:
        if not await authorised(request):
            return login_page(request)
        if not await csrf_ok(request, form_of(await request.body())):
            log.warning("ops.csrf_refused", extra={"event_id": event_id})
            return render(request, "login.html", 403, disabled=False, failed=False,
                          msg="Refused: the form is stale or came from another page. Reload and try again.")
        if event_id > MAX_ID:
            return RedirectResponse(f"/ops?msg={quote(f'no event #{event_id}')}", status_code=303)
        queued, message = await run_in_threadpool(store.replay, db, event_id)
        if queued:
            try:
                await run_in_threadpool(enqueue, event_id)
            except Exception:  # recorded as accepted: the sweeper re-queues it
                message += " (broker unavailable: the sweeper will queue it)"
        return RedirectResponse(f"/ops/events/{event_id}?msg={quote(message)}", status_code=303)

    return router
