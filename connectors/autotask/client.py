"""The one typed Autotask REST client.

Methods are named after API nouns. Every HTTP attempt is reported to ``on_attempt`` (the pipeline
writes them to the audit log) and passes through ``gate`` (the quota governor's slot per endpoint).
Short in-call retries use tenacity; anything that needs a longer wait is raised to the caller, whose
task is rescheduled instead of holding a worker.
"""

from __future__ import annotations

import functools
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from connectors.autotask.errors import (
    AutotaskError,
    RetryableError,
    TicketNotFound,
    from_response,
    from_transport_error,
    may_have_been_applied,
)
from connectors.autotask.history import HistoryEntry
from connectors.autotask.models import ChecklistItem, FieldInfo, Resource, ThresholdInfo, Ticket, TicketNote

__all__ = ["TENANT_BUCKET", "Attempt", "AutotaskClient", "endpoint_of", "thread_bucket"]

_ZONE_TTL = 24 * 3600.0
# Keyed by (zone lookup endpoint, user name): one process may talk to several tenants (or sandboxes).
_zone_cache: dict[tuple[str, str], tuple[str, float]] = {}
_zone_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """One TLS context for every client of the process, as httpx would build it (the system's CA
    bundle, certificates and host names verified). Building one loads the CA bundle, about 25 ms of
    CPU; a worker builds a client per thread (its own connections), and did so on each thread's first
    event, in the middle of a burst. An SSLContext is safe to share between threads."""
    return httpx.create_ssl_context()


_web_url_cache: dict[tuple[str, str], str] = {}
_TICKET_FIELDS = ["id", "ticketNumber", "status", "title", "lastActivityDate", "lastActivityResourceID",
                  "dueDateTime", "assignedResourceID"]
PAGE = 500  # the most a query returns
NOTE_TITLE_MAX = 250
NOTE_DESCRIPTION_MAX = 32_000


@dataclass(frozen=True)
class Attempt:
    """One HTTP exchange, as the audit log keeps it (no headers, so no credentials)."""

    method: str
    path: str
    status_code: int | None
    duration_ms: float
    error: str | None


#: The thread-limit bucket every call shares by default. Autotask's thread-limiting documentation does not
#: say whether Tickets and Tickets/{id}/Notes share the 3-thread limit, so one bucket is the safe reading.
TENANT_BUCKET = "tenant"


def thread_bucket(path: str, groups: str = "tenant") -> str:
    """The governor slot a call takes: one for the tenant (default), or per entity with ``groups="entity"``."""
    return TENANT_BUCKET if groups == "tenant" else endpoint_of(path)


def endpoint_of(path: str) -> str:
    """A path's entity, lower-cased (child notes count as ticketnotes): the per-entity bucket."""
    path = re.split(r"/v1\.0/", path, flags=re.IGNORECASE)[-1]
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[0].lower() == "tickets" and parts[2].lower() == "notes":
        return "ticketnotes"
    return parts[0].lower() if parts else ""


class AutotaskClient:
    def __init__(
        self,
        *,
        username: str,
        secret: str,
        integration_code: str,
        base_url: str | None = None,
        zone_url: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 3,
        max_backoff: float = 8.0,
        on_attempt: Callable[[Attempt], None] | None = None,
        gate: Callable[[str], AbstractContextManager[Any]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        thread_groups: str = "tenant",
    ) -> None:
        self._username = username
        self._zone_url = zone_url
        self._base_url = self._normalise_base(base_url) if base_url else None
        self._headers = {
            "ApiIntegrationCode": integration_code,
            "UserName": username,
            "Secret": secret,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._http = httpx.Client(timeout=timeout, transport=transport,
                                  verify=_tls() if transport is None else True)
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff
        self._on_attempt = on_attempt
        self._gate = gate or (lambda _endpoint: nullcontext())
        self._sleep = sleep
        self._thread_groups = thread_groups

    # ---- plumbing -------------------------------------------------------------------------
    @staticmethod
    def _normalise_base(url: str) -> str:
        url = url.rstrip("/")
        if not url.lower().endswith("/v1.0"):
            url += "/V1.0"
        return url + "/"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AutotaskClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def set_attempt_hook(self, hook: Callable[[Attempt], None] | None) -> None:
        self._on_attempt = hook

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            self._base_url = self._zone_lookup()
        return self._base_url

    def _zone_lookup(self) -> str:
        """Find the tenant's zone; cached per user for a day, since zones do not move."""
        with _zone_lock:
            hit = _zone_cache.get((self._zone_url, self._username))
            if hit and hit[1] > time.monotonic():
                return hit[0]
        body = self._send("GET", self._zone_url, params={"user": self._username}, auth=False)
        url = body.get("url") if isinstance(body, dict) else None
        if not url:
            raise AutotaskError(f"zone lookup for {self._username!r} returned no url", path="zoneInformation")
        base = self._normalise_base(str(url))
        with _zone_lock:
            _zone_cache[(self._zone_url, self._username)] = (base, time.monotonic() + _ZONE_TTL)
        return base

    def web_url(self) -> str | None:
        """The tenant's web UI address (the zone lookup's ``webUrl``), for links to tickets in alerts."""
        with _zone_lock:
            hit = _web_url_cache.get((self._zone_url, self._username))
        if hit is not None:
            return hit
        body = self._send("GET", self._zone_url, params={"user": self._username}, auth=False)
        url = body.get("webUrl") if isinstance(body, dict) else None
        if not url:
            return None
        with _zone_lock:
            _web_url_cache[(self._zone_url, self._username)] = str(url)
        return str(url)

    def _report(self, attempt: Attempt) -> None:
        if self._on_attempt is not None:
            self._on_attempt(attempt)

    def _send_once(
        self, method: str, url: str, *, json: Any = None, params: dict[str, Any] | None = None, auth: bool
    ) -> Any:
        path = httpx.URL(url).path
        started = time.perf_counter()
        with self._gate(thread_bucket(path, self._thread_groups)):
            try:
                response = self._http.request(
                    method, url, json=json, params=params, headers=self._headers if auth else None
                )
            except httpx.HTTPError as exc:
                err = from_transport_error(exc, method, path)
                self._report(Attempt(method, path, None, (time.perf_counter() - started) * 1000, str(err)))
                raise err from exc
        duration = (time.perf_counter() - started) * 1000
        error = from_response(response)
        self._report(Attempt(method, path, response.status_code, duration, error.reason if error else None))
        if error is not None:
            raise error
        return response.json() if response.content else None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return exc.retry_after
        return float(wait_random_exponential(multiplier=0.5, max=self._max_backoff)(state))

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._max_attempts:
            return True
        exc = state.outcome.exception() if state.outcome else None
        # A long Retry-After is not waited out inside a call: the task is rescheduled instead.
        return bool(
            isinstance(exc, RetryableError)
            and exc.retry_after is not None
            and exc.retry_after > self._max_backoff * 2
        )

    def _send(
        self, method: str, url: str, *, json: Any = None, params: dict[str, Any] | None = None, auth: bool = True,
        idempotent: bool = True,
    ) -> Any:
        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, RetryableError):
                return False
            # Re-sending a note after an ambiguous failure could post it twice: leave that to the
            # pipeline, which looks for the note by its marker before posting again.
            return idempotent or not may_have_been_applied(exc)

        retrying = Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(retryable),
            reraise=True,
            sleep=self._sleep,
        )
        return retrying(self._send_once, method, url, json=json, params=params, auth=auth)

    def _call(self, method: str, path: str, *, json: Any = None, idempotent: bool = True) -> Any:
        return self._send(method, self.base_url + path, json=json, idempotent=idempotent)

    def call(self, method: str, path: str, *, json: Any = None, idempotent: bool = True) -> Any:
        """One API call by relative path, for the admin helpers (webhook registration) built on this client."""
        return self._call(method, path, json=json, idempotent=idempotent)

    def query_all(self, entity: str, filters: list[dict[str, Any]], *, include_fields: list[str] | None = None,
                  limit: int = 10_000) -> list[dict[str, Any]]:
        """Every match of ``filters``, paged by id (``id gt last``): stable while records change."""
        out: list[dict[str, Any]] = []
        last_id = 0
        while len(out) < limit:
            body: dict[str, Any] = {"MaxRecords": PAGE,
                                    "filter": [*filters, {"op": "gt", "field": "id", "value": last_id}]}
            if include_fields:
                body["IncludeFields"] = sorted({"id", *include_fields})
            items = (self._call("POST", f"{entity}/query", json=body) or {}).get("items") or []
            items = sorted(items, key=lambda item: int(item["id"]))
            out.extend(items)
            if len(items) < PAGE:
                break
            last_id = int(items[-1]["id"])
        return out[:limit]

    # ---- Tickets --------------------------------------------------------------------------
    def get_ticket(self, ticket_id: int) -> Ticket:
        body = self._call("GET", f"Tickets/{int(ticket_id)}")
        return Ticket.model_validate(body["item"])

    def get_tickets(self, ticket_ids: Sequence[int]) -> list[Ticket]:
        """Several tickets in one call (``in`` filter; up to PAGE ids); a missing id is simply absent."""
        ids = sorted({int(t) for t in ticket_ids})
        if not ids:
            return []
        if len(ids) > PAGE:
            raise ValueError(f"at most {PAGE} tickets per query, got {len(ids)}")
        query = {"MaxRecords": len(ids), "IncludeFields": _TICKET_FIELDS,
                 "filter": [{"op": "in", "field": "id", "value": ids}]}
        items = (self._call("POST", "Tickets/query", json=query) or {}).get("items") or []
        return [Ticket.model_validate(item) for item in items]

    def get_tickets_by_number(self, ticket_numbers: Sequence[str]) -> list[Ticket]:
        """Several tickets by number in one call (``in`` filter on ``ticketNumber``); unknown numbers are absent."""
        numbers = sorted(set(ticket_numbers))
        if not numbers:
            return []
        if len(numbers) > PAGE:
            raise ValueError(f"at most {PAGE} ticket numbers per query, got {len(numbers)}")
        query = {"MaxRecords": len(numbers), "IncludeFields": _TICKET_FIELDS,
                 "filter": [{"op": "in", "field": "ticketNumber", "value": numbers}]}
        items = (self._call("POST", "Tickets/query", json=query) or {}).get("items") or []
        return [Ticket.model_validate(item) for item in items]

    def find_ticket_by_number(self, ticket_number: str) -> Ticket:
        query = {
            "MaxRecords": 1,
            "IncludeFields": _TICKET_FIELDS,
            "filter": [{"op": "eq", "field": "ticketNumber", "value": ticket_number}],
        }
        body = self._call("POST", "Tickets/query", json=query)
        items = body.get("items") or []
        if not items:
            raise TicketNotFound(f"no ticket numbered {ticket_number!r}", path="Tickets/query")
        return Ticket.model_validate(items[0])

    def set_ticket_status(self, ticket_id: int, status: int) -> int:
        """PATCH, never PUT: PUT would null every field we leave out.

        Not re-sent after an ambiguous failure: even a same-value PATCH is an edit to Autotask (it
        touches lastActivityDate and can fire workflow rules); the pipeline re-reads the ticket instead.
        """
        body = self._call("PATCH", "Tickets", json={"id": int(ticket_id), "status": int(status)}, idempotent=False)
        return int(body["itemId"])

    def tickets_active_since(self, since: str) -> list[Ticket]:
        """Tickets whose ``lastActivityDate`` is after ``since`` (ISO 8601, UTC): reconciliation's read."""
        items = self.query_all("Tickets", [{"op": "gt", "field": "lastActivityDate", "value": since}],
                               include_fields=_TICKET_FIELDS)
        return [Ticket.model_validate(item) for item in items]

    def ticket_history(self, ticket_id: int) -> list[HistoryEntry]:
        """The ticket's history rows (one read; used only when a late event might overwrite a person)."""
        body = self._call("POST", "TicketHistory/query",
                          json={"filter": [{"op": "eq", "field": "ticketID", "value": int(ticket_id)}]})
        return [HistoryEntry.model_validate(item) for item in (body or {}).get("items") or []]

    # ---- Notes ----------------------------------------------------------------------------
    def get_ticket_note(self, note_id: int) -> TicketNote:
        body = self._call("GET", f"TicketNotes/{int(note_id)}")
        if not body or body.get("item") is None:
            raise TicketNotFound(f"no ticket note with id {note_id}", path="TicketNotes")
        return TicketNote.model_validate(body["item"])

    def notes_created_since(self, since: str) -> list[TicketNote]:
        items = self.query_all("TicketNotes", [{"op": "gt", "field": "createDateTime", "value": since}])
        return [TicketNote.model_validate(item) for item in items]
    def add_ticket_note(
        self, ticket_id: int, *, title: str, description: str, note_type: int, publish: int
    ) -> int:
        payload = {
            "ticketID": int(ticket_id),
            "title": title[:NOTE_TITLE_MAX],
            "description": description[:NOTE_DESCRIPTION_MAX],
            "noteType": int(note_type),
            "publish": int(publish),
        }
        body = self._call("POST", f"Tickets/{int(ticket_id)}/Notes", json=payload, idempotent=False)
        return int(body["itemId"])

    def find_ticket_notes(self, ticket_id: int, *, containing: str) -> list[TicketNote]:
        query = {
            "MaxRecords": 50,
            "filter": [
                {"op": "eq", "field": "ticketID", "value": int(ticket_id)},
                {"op": "contains", "field": "description", "value": containing},
            ],
        }
        body = self._call("POST", "TicketNotes/query", json=query)
        return [TicketNote.model_validate(item) for item in body.get("items") or []]

    def ticket_notes_by(self, ticket_id: int, *, resource_id: int, since: datetime) -> list[TicketNote]:
        """A ticket's notes written by one resource at or after ``since``: one ``TicketNotes/query``."""
        at = since.astimezone(UTC)
        query = {
            "MaxRecords": 50,
            "filter": [
                {"op": "eq", "field": "ticketID", "value": int(ticket_id)},
                {"op": "eq", "field": "creatorResourceID", "value": int(resource_id)},
                {"op": "gte", "field": "createDateTime",
                 "value": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"},
            ],
        }
        body = self._call("POST", "TicketNotes/query", json=query)
        return [TicketNote.model_validate(item) for item in body.get("items") or []]

    # ---- Checklists -----------------------------------------------------------------------
    def checklist_items(self, ticket_id: int) -> list[ChecklistItem]:
        """A ticket's checklist (``TicketChecklistItems/query``): checklist changes fire no webhook, so read it."""
        items = self.query_all("TicketChecklistItems", [{"op": "eq", "field": "ticketID", "value": int(ticket_id)}])
        return [ChecklistItem.model_validate(item) for item in items]

    # ---- Resources ------------------------------------------------------------------------
    def company_name(self, company_id: int) -> str | None:
        """A company's name (``GET Companies/{id}``), for alerts that say whose ticket it is."""
        item = (self._call("GET", f"Companies/{company_id}") or {}).get("item") or {}
        name = item.get("companyName")
        return str(name) if name else None

    def find_resource_by_username(self, user_name: str) -> Resource | None:
        """The resource behind an API user (atrelay's own, to recognise its own changes)."""
        query = {"MaxRecords": 1, "filter": [{"op": "eq", "field": "userName", "value": user_name}]}
        items = (self._call("POST", "Resources/query", json=query) or {}).get("items") or []
        return Resource.model_validate(items[0]) if items else None

    def resources(self) -> list[Resource]:
        """The tenant's active resources (people and API users): ``Resources/query``, paged."""
        items = self.query_all("Resources", [{"op": "eq", "field": "isActive", "value": True}])
        return [Resource.model_validate(item) for item in items]

    def resource_fields(self) -> list[FieldInfo]:
        """``Resources/entityInformation/fields``: the ``licenseType`` picklist tells API users by label."""
        body = self._call("GET", "Resources/entityInformation/fields")
        return [FieldInfo.model_validate(f) for f in body.get("fields") or []]

    @property
    def username(self) -> str:
        return self._username

    # ---- Metadata -------------------------------------------------------------------------
    def ticket_fields(self) -> list[FieldInfo]:
        body = self._call("GET", "Tickets/entityInformation/fields")
        return [FieldInfo.model_validate(f) for f in body.get("fields") or []]

    def ticket_note_fields(self) -> list[FieldInfo]:
        body = self._call("GET", "TicketNotes/entityInformation/fields")
        return [FieldInfo.model_validate(f) for f in body.get("fields") or []]

    def threshold_information(self) -> ThresholdInfo:
        return ThresholdInfo.model_validate(self._call("GET", "ThresholdInformation"))
