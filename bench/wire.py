"""What Autotask itself sends, and events one at a time (issue 21's benchmarks).

Mission Control works inside the MSP's Autotask: its status changes reach atrelay as Autotask's own
ticket callouts, and the e-mailed new-user form as a note callout. The benchmark makes the change in the
sandbox first (as Mission Control, a person or the e-mailing contact, so the ticket, its history and the
note say what a real tenant would), then posts the callout Autotask would send for it, signed with the
webhook's secretKey: the shape of ``sandboxes/autotask/webhooks.py`` (the changed subscribed
field and the display-always ones of atrelay's own webhooks, ``PersonID`` the acting resource).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from bench.common import add_tickets, latencies, loadgen, log, stack, summary
from bench.loadgen import percentile, ticket_number
from sandboxes.autotask.data import ACT_AS
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.support import AUTOTASK_HOOK_SECRET
from workers.settings import Settings

__all__ = ["callout_flood", "emailed_forms", "one_at_a_time", "status_callouts"]

#: The webhooks' GUIDs (one per webhook, as Autotask sends) and their sequence numbers.
TICKET_HOOK, NOTE_HOOK = "5d3f4b1e-7a0c-4d55-9a7e-0b6c2f1e9a01", "5d3f4b1e-7a0c-4d55-9a7e-0b6c2f1e9a02"
_sequence = itertools.count(1)

#: ATRELAY_AUTOTASK_MAX_IN_FLIGHT's default, enforced by the sandbox in these runs.
IN_FLIGHT_LIMIT = 3


def _event_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_callouts(state: SandboxState, tickets: list[int], status: str, actor: str) -> list[dict[str, Any]]:
    """Set each ticket's status in the sandbox as ``actor`` (``mission-control``, ``technician``, ...) and
    return the ticket callout Autotask sends for each change."""
    value, person = state.status_by_label(status), ACT_AS[actor]
    out = []
    for tid in tickets:
        state.set_status(tid, value, actor)
        ticket = state.tickets[tid]
        out.append({"Action": "Update", "Guid": TICKET_HOOK, "EntityType": "Ticket", "Id": tid,
                    "Fields": {"Status": value, "TicketNumber": ticket["ticketNumber"],
                               "AssignedResourceID": ticket.get("assignedResourceID")},
                    "EventTime": _event_time(), "SequenceNumber": next(_sequence), "PersonID": person})
    return out


def emailed_forms(state: SandboxState, tickets: list[int]) -> list[dict[str, Any]]:
    """The new-user form e-mailed into each ticket (a note by the contact, titled like the form) and the
    note callout Autotask sends for it."""
    contact = state.actor("contact")
    out = []
    for tid in tickets:
        note = state.add_note(tid, {"title": "New User Form - bench starter", "noteType": 13, "publish": 1,
                                    "description": "First name: Sam\nLast name: Bench\nStart date: 2026-12-01"},
                              contact)
        out.append({"Action": "Create", "Guid": NOTE_HOOK, "EntityType": "TicketNote", "Id": note["id"],
                    "Fields": {"TicketID": tid, "Title": note["title"], "Description": note["description"],
                               "NoteType": note["noteType"], "CreatorResourceID": None,
                               "CreatedByContactID": contact.contact_id},
                    "EventTime": _event_time(), "SequenceNumber": next(_sequence), "PersonID": None})
    return out


def _calls(state: SandboxState) -> int:
    return sum(v for k, v in state.calls.items() if k != "total")


def _reads(state: SandboxState) -> int:
    """Ticket reads: a GET by id or a ``Tickets/query`` (shared reads and number lookups are queries)."""
    return state.calls.get("GET tickets/{id}", 0) + state.calls.get("POST tickets/query", 0)


def callout_flood(server: ThreadedServer, state: SandboxState, pg: str, runs: int, count: int = 1256,
                  latency_ms: int = 150) -> dict[str, Any]:
    """Issue 21: a bulk edit in Autotask (a technician moves ``count`` tickets to In Progress at once), so
    ``count`` valid ticket callouts arrive together. Nothing is to be written; what is measured is what
    observing them costs: ticket reads per callout, and the share of the hourly budget spent.

    Redis + PostgreSQL, one worker as shipped; the sandbox answers in ``latency_ms`` and enforces the
    in-flight limit.
    """
    budget = Settings.model_fields["autotask_hourly_budget"].default
    reserve = Settings.model_fields["autotask_write_reserve_percent"].default
    per_callout, all_per_callout, shares, seconds = [], [], [], []
    detail: dict[str, Any] = {}
    s = stack("redis+postgresql", server, state, pg, workers=1,
              concurrency=Settings.model_fields["worker_concurrency"].default)
    try:
        for _ in range(runs):
            s.clean()
            first = add_tickets(state, count)
            bodies = status_callouts(state, list(range(first, first + count)), "In Progress", "technician")
            state.latency_ms, state.max_in_flight = latency_ms, IN_FLIGHT_LIMIT
            started = time.monotonic()
            gen = loadgen(s.ingress_url + "/webhooks/autotask/tickets", AUTOTASK_HOOK_SECRET, count, 8, first,
                          kind="autotask", bodies=bodies)
            assert gen["codes"] == {"202": count}, gen["codes"]
            rows = s.all_final(count, timeout=900)
            seconds.append(time.monotonic() - started)
            calls = _calls(state)
            per_callout.append(_reads(state) / count)
            all_per_callout.append(calls / count)
            shares.append(calls / budget)
            detail = {"by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total")),
                      "states": {st: sum(1 for r in rows if r.state == st) for st in {r.state for r in rows}},
                      "limit_errors": sum(v for k, v in state.errors_returned.items()
                                          if k in ("thread_threshold", "hourly_limit"))}
            log(f"callout flood of {count}: {per_callout[-1]:.3f} reads per callout, {calls} calls "
                f"({100 * shares[-1]:.1f} % of the hourly budget) in {seconds[-1]:.0f} s, "
                f"load {os.getloadavg()[0]:.1f}")
            state.latency_ms, state.max_in_flight = 0, None
    finally:
        state.latency_ms, state.max_in_flight = 0, None
        s.stop()
    return {"callouts": count, "latency_ms": latency_ms, "reads_per_callout": summary(per_callout),
            "calls_per_callout": summary(all_per_callout), "budget_share": summary(shares), "seconds": summary(seconds),
            "budget_per_hour": budget, "observe_share": (100 - reserve) / 100, "loadavg": os.getloadavg()[0],
            **detail}


def one_at_a_time(server: ThreadedServer, state: SandboxState, pg: str, runs: int, count: int,
                  latency_ms: int = 150, modes: tuple[str, ...] = ("redis+postgresql", "embedded")
                  ) -> list[dict[str, Any]]:
    """Issue 21: forms by ticket number, each posted once the one before is final: nothing waits behind a
    run, so no read is shared and every number is new (one query resolves and reads it, a PATCH, a note)."""
    rows = []
    for mode in modes:
        s = stack(mode, server, state, pg if mode != "embedded" else None, workers=1,
                  concurrency=Settings.model_fields["worker_concurrency"].default)
        try:
            ratios, p50s, p99s = [], [], []
            detail: dict[str, Any] = {}
            for _ in range(runs):
                s.clean()
                first = add_tickets(state, count)
                state.latency_ms, state.max_in_flight = latency_ms, IN_FLIGHT_LIMIT
                for i, tid in enumerate(range(first, first + count)):
                    body = json.dumps({"type": "form.submitted", "timestamp": datetime.now(UTC).isoformat(),
                                       "data": {"form": "bench", "ticket_number": ticket_number(tid),
                                                "answers": {"q1": "a"}}}).encode()
                    assert s.post("/webhooks/webform", body).status_code == 202
                    s.all_final(i + 1, timeout=60)
                lat, _ = latencies(s.db)
                assert len(lat) == count, f"{len(lat)} of {count} applied"
                calls = _calls(state)
                ratios.append(calls / len(lat))
                p50s.append(percentile(lat, 50))
                p99s.append(percentile(lat, 99))
                detail = {"calls": calls, "applied": len(lat),
                          "by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total"))}
                log(f"one at a time, {mode}: {ratios[-1]:.2f} calls per transition ({calls} / {len(lat)}), "
                    f"accepted -> applied p50 {p50s[-1]:.0f} ms, load {os.getloadavg()[0]:.1f}")
                state.latency_ms, state.max_in_flight = 0, None
            rows.append({"mode": mode, "events": count, "latency_ms": latency_ms,
                         "calls_per_transition": summary(ratios), "p50_ms": summary(p50s), "p99_ms": summary(p99s),
                         "loadavg": os.getloadavg()[0], **detail})
        finally:
            state.latency_ms, state.max_in_flight = 0, None
            s.stop()
    return rows
