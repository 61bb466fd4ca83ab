"""Recovery from a killed worker: goal 5 (a survivor finishes the dead worker's runs) and issue 24 (a
worker killed while it holds governor slots or deliveries it has not started, in both deployments)."""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import redis

from bench.common import add_tickets, log, stack, summary
from bench.loadgen import ticket_number
from pipelines.audit import EventState, QuotaSlot
from pipelines.db import session_scope
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.stacks import Stack
from tests.support import wait_for

__all__ = ["HOLDS", "kill_recovery", "recovery"]

#: What the killed worker holds (tests/integration/test_kill_recovery.py): "governor-slots" runs four
#: at once, each inside a slow call; "prefetched-deliveries" runs one at a time, so most of the ten
#: are deliveries it has taken off the queue and not started.
HOLDS = {"governor-slots": 4, "prefetched-deliveries": 1}


def _all_final(s: Stack) -> bool:
    return all(EventState(r.state).final for r in s.all_rows())


def _until_final(s: Stack, killed: float, timeout: float) -> float | None:
    """Seconds from the kill until every event is final, or None when that took over ``timeout``."""
    try:
        wait_for(functools.partial(_all_final, s), timeout=timeout, what="the killed worker's events")
    except AssertionError:
        return None
    return time.monotonic() - killed


def recovery(server: ThreadedServer, state: SandboxState, pg: str, runs: int, timeout: float = 60.0
             ) -> dict[str, Any]:
    """Goal 5: SIGKILL a worker mid-run; how long until every event it held is applied (beat running).

    Two workers (the killed one is not restarted): the survivor and the sweeper must finish its work.
    A run that does not finish within ``timeout`` counts as ``timeout`` and is flagged.
    """
    times: list[float] = []
    timed_out = 0
    for _ in range(runs):
        s = stack("redis+postgresql", server, state, pg, workers=2, concurrency=1, beat=True)
        try:
            s.clean()
            first = add_tickets(state, 6)
            state.latency_ms = 700  # every run is mid-call when the kill comes
            for t in range(first, first + 6):
                body = (b'{"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z", "data": {"form": "bench", '
                        b'"ticket_id": %d, "answers": {"q1": "a"}}}' % t)
                assert s.post("/webhooks/webform", body).status_code == 202
            wait_for(lambda: sum(state.in_flight.values()) >= 2, timeout=30, what="both workers mid-call")
            workers = [p for p in s.procs if p.name.startswith("worker")]
            s.kill(workers[0])
            killed = time.monotonic()
            state.latency_ms = 0

            took = _until_final(s, killed, timeout)
            times.append(timeout if took is None else took)
            timed_out += int(took is None)
            log(f"recovery after SIGKILL: {times[-1]:.1f} s")
        finally:
            state.latency_ms = 0
            s.stop()
    return {"seconds": summary(times), "timed_out": timed_out, "timeout": timeout}


def _slots_held(s: Stack) -> int:
    """Governor slots held right now (Redis keys in distributed mode, rows in the embedded default)."""
    if s.broker_url.startswith("redis"):
        r = redis.Redis.from_url(s.broker_url)
        return sum(int(r.zcard(key)) for key in r.scan_iter("atrelay:quota:slots:*"))
    with session_scope(s.db) as sess:
        return len(list(sess.exec(QuotaSlot.__table__.select()).all()))  # type: ignore[attr-defined]


def _applied_once(s: Stack, state: SandboxState, tickets: list[int]) -> bool:
    """Every event applied, every ticket changed once with one note (what the fault tests assert)."""
    rows = s.all_rows()
    return (all(r.state == "applied" for r in rows)
            and all(len([n for n in state.notes.values() if n["ticketID"] == t]) == 1 for t in tickets)
            and all(len([h for h in state.history if h["ticket_id"] == t]) == 1 for t in tickets))


def kill_recovery(server: ThreadedServer, state: SandboxState, pg: str, runs: int, events: int = 10,
                  latency_ms: int = 150, timeout: float = 60.0,
                  modes: tuple[str, ...] = ("redis+postgresql", "embedded")) -> list[dict[str, Any]]:
    """Issue 24: ``events`` forms by number at ``latency_ms`` per call, one worker and beat with the
    default lease, sweep and slot settings; the worker is SIGKILLed (with its pool) while it holds what
    :data:`HOLDS` says, and a new worker is started at once. Seconds from the kill until every event is
    final (the new worker's start-up included); a run not done within ``timeout`` counts as ``timeout``.
    """
    rows = []
    for mode in modes:
        for held, concurrency in HOLDS.items():
            times: list[float] = []
            timed_out, exactly_once = 0, True
            for _ in range(runs):
                s = stack(mode, server, state, pg if mode != "embedded" else None, workers=1,
                          concurrency=concurrency, beat=True)
                try:
                    s.clean()
                    first = add_tickets(state, events)
                    tickets = list(range(first, first + events))
                    state.latency_ms = latency_ms
                    for t in tickets:
                        body = json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                                           "data": {"form": "bench", "ticket_number": ticket_number(t),
                                                    "answers": {"q1": "a"}}}).encode()
                        assert s.post("/webhooks/webform", body).status_code == 202
                    if held == "governor-slots":
                        wait_for(lambda s=s: _slots_held(s) >= 2, timeout=60,  # type: ignore[misc]
                                 what="the worker holding governor slots")
                    else:
                        wait_for(lambda: state.calls.get("PATCH tickets", 0) >= 1, timeout=60, what="a run under way")
                    worker = next(p for p in s.procs if p.name.startswith("worker"))
                    s.kill(worker)
                    killed = time.monotonic()
                    s.start_worker(concurrency)
                    took = _until_final(s, killed, timeout)
                    times.append(timeout if took is None else took)
                    timed_out += int(took is None)
                    if took is not None:
                        exactly_once = exactly_once and _applied_once(s, state, tickets)
                    log(f"kill recovery, {mode}, {held}: {times[-1]:.1f} s, load {os.getloadavg()[0]:.1f}")
                finally:
                    state.latency_ms = 0
                    s.stop()
            rows.append({"mode": mode, "held": held, "concurrency": concurrency, "events": events,
                         "latency_ms": latency_ms, "seconds": summary(times), "timed_out": timed_out,
                         "timeout": timeout, "exactly_once": exactly_once, "loadavg": os.getloadavg()[0]})
    return rows
