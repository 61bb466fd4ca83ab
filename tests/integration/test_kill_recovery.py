"""Issue 24: a killed worker's events run again within 30 s, whatever it held at the moment of the kill
(event and ticket leases, Autotask governor slots, deliveries it had taken off the queue but not
started), in both deployments, with the default lease, sweep and slot settings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipelines.audit import QuotaSlot
from pipelines.db import session_scope
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.integration.helpers import new_tickets
from tests.integration.test_faults import RECOVERY_SECONDS, assert_all_applied_once, form, post_like_a_partner
from tests.stacks import Stack, start_stack
from tests.support import wait_for

LATENCY_MS = 150


def slots_held(stack: Stack) -> int:
    """Governor slots held right now (Redis keys in distributed mode, rows in the embedded default)."""
    if stack.broker_url.startswith("redis"):
        import redis

        r = redis.Redis.from_url(stack.broker_url)
        return sum(int(r.zcard(key)) for key in r.scan_iter("atrelay:quota:slots:*"))
    with session_scope(stack.db) as s:
        return len(list(s.exec(QuotaSlot.__table__.select()).all()))  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["redis+postgresql", "embedded"])
@pytest.mark.parametrize("held", ["governor-slots", "prefetched-deliveries"])
def test_a_killed_workers_events_run_again_within_30_s(mode: str, held: str, request: pytest.FixtureRequest,
                                                       tmp_path: Path,
                                                       autotask_server: tuple[ThreadedServer, SandboxState]) -> None:
    server, state = autotask_server
    distributed = mode != "embedded"
    # governor-slots: four runs at once, each inside a slow call. prefetched-deliveries: one run at a
    # time, so most of the ten are deliveries the worker has taken but not started.
    concurrency = 4 if held == "governor-slots" else 1
    stack = start_stack(tmp_path, mode=mode, sandbox_server=server, sandbox=state, workers=1, beat=True,
                        concurrency=concurrency,
                        pg_url=request.getfixturevalue("pg_url") if distributed else None,
                        redis_url=request.getfixturevalue("redis_url") if distributed else None)
    try:
        tickets = new_tickets(stack.sandbox, 10)
        stack.sandbox.latency_ms = LATENCY_MS
        ids = [post_like_a_partner(stack, form(t)) for t in tickets]
        worker = next(p for p in stack.procs if p.name.startswith("worker"))
        if held == "governor-slots":
            wait_for(lambda: slots_held(stack) >= 2, timeout=60, what="the worker holding governor slots")
        else:
            wait_for(lambda: stack.sandbox.calls.get("PATCH tickets", 0) >= 1, timeout=60, what="a run under way")
        stack.kill(worker)
        killed_at = time.monotonic()
        stack.start_worker(concurrency)
        assert_all_applied_once(stack, tickets, len([i for i in ids if i]), timeout=RECOVERY_SECONDS + 30)
        recovered_in = time.monotonic() - killed_at
        assert recovered_in <= RECOVERY_SECONDS, f"recovered in {recovered_in:.1f} s, not within {RECOVERY_SECONDS} s"
    finally:
        stack.stop()
        state.reset()
