"""Build a real pipeline Context against the sandbox and a real audit database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from connectors.autotask.client import AutotaskClient
from connectors.autotask.picklists import PicklistCache
from pipelines import store
from pipelines.context import Context
from pipelines.rules import DEFAULT_RULES
from sandboxes.autotask.state import SandboxState
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS


class Queue(list[tuple[int, float]]):
    """Where a Context 'enqueues' in in-process tests: the ids and countdowns, kept to look at."""

    def __call__(self, event_id: int, countdown: float) -> None:
        self.append((event_id, countdown))


def make_context(db: str, sandbox_url: str, **overrides: Any) -> Context:
    c = SANDBOX_AUTOTASK_CREDENTIALS
    client = AutotaskClient(username=c["username"], secret=c["secret"], integration_code=c["integration_code"],
                            zone_url=f"{sandbox_url}/atservicesrest/v1.0/zoneInformation",
                            max_attempts=1, sleep=lambda _s: None)
    values: dict[str, Any] = {
        "db": db, "client": client, "picklists": PicklistCache(3600), "rules": dict(DEFAULT_RULES),
        "note_type": None, "note_publish": None, "follow_up_delay_seconds": 0, "retry_horizon_hours": 72,
        "enqueue": Queue(),
    }
    values.update(overrides)
    return Context(**values)


def webform_body(ticket: str | int = "T20261126.0001", when: str = "2026-11-26T09:30:00Z", **data: Any) -> bytes:
    ref = {"ticket_id": ticket} if isinstance(ticket, int) else {"ticket_number": ticket}
    payload = {"type": "form.submitted", "timestamp": when,
               "data": {"form": "new-user", **ref, "submitted_by": {"name": "Jane Example",
                                                                  "email": "jane@example.com"},
                        "answers": {"First name": "Sam", "Start date": "2026-12-01"}, **data}}
    return json.dumps(payload).encode()


def mc_body(kind: str, ticket: str | int = "T20261126.0002", when: str = "2026-11-26T10:15:00Z") -> bytes:
    ref = {"ticket_id": ticket} if isinstance(ticket, int) else {"ticket_number": ticket}
    return json.dumps({"type": kind, "timestamp": when, "data": {
        **ref, "summary": "User did not answer", "technician": "Alex", "contact_attempts": 3}}).encode()


def new_tickets(sandbox: SandboxState, n: int, title: str = "test") -> list[int]:
    """``n`` new tickets in status New (1) in the Autotask sandbox, with ids and numbers of their own."""
    ids = []
    for i in range(n):
        tid = next(sandbox.ticket_ids)
        sandbox.tickets[tid] = {"id": tid, "ticketNumber": f"T20261127.{tid % 10000:04d}", "title": f"{title} {i}",
                                "status": 1, "lastActivityDate": "2026-11-26T08:00:00.000Z"}
        ids.append(tid)
    return ids


def add_event(db: str, source: str, event_type: str, body: bytes, occurred_at: datetime | None = None,
              ticket_id: int | None = None) -> int:
    """An accepted event; ``ticket_id`` as the ingress records it when the body names the ticket by id."""
    event_id, created = store.insert_event(db, store.NewEvent(
        source=source, external_id=f"msg_{uuid.uuid4().hex}", event_type=event_type, body=body, headers={},
        occurred_at=occurred_at or datetime(2026, 11, 26, 9, 30, tzinfo=UTC), ticket_id=ticket_id))
    assert created
    return event_id
