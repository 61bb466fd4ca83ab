"""Issue 24: a killed worker's events run again within 30 s, whatever it held at the moment of the kill
(event and ticket leases, Autotask governor slots, deliveries it had taken off the queue but not
started), in both deployments, with the default lease, sweep and slot settings.

A worker takes one delivery per thread (prefetch multiplier 1), so the deliveries it holds without
running are the short retries it waits on: Celery takes a countdown message off the queue at once and
keeps it until its time (after a failed call, routine in real operation). The prefetched case holds
two of those at the kill, checked on the broker: the events are `retrying` and their messages are no
longer on the queue."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
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
from workers.celery.app import QUEUE

LATENCY_MS = 150
HELD = 2  # short retries the worker holds, not started, at the kill


def slots_held(stack: Stack) -> int:
    """Governor slots held right now (Redis keys in distributed mode, rows in the embedded default)."""
    if stack.broker_url.startswith("redis"):
        import redis

        r = redis.Redis.from_url(stack.broker_url)
        return sum(int(r.zcard(key)) for key in r.scan_iter("atrelay:quota:slots:*"))
    with session_scope(stack.db) as s:
        return len(list(s.exec(QuotaSlot.__table__.select()).all()))  # type: ignore[attr-defined]


def queued_event_ids(stack: Stack) -> set[int]:
    """Events whose run is waiting on the broker's queue, taken by no worker yet (beat's own tasks share
    the queue and are left out)."""
    if stack.broker_url.startswith("redis"):
        import redis

        raw = [m.decode() for m in redis.Redis.from_url(stack.broker_url).lrange(QUEUE, 0, -1)]
    else:  # embedded: kombu's message table, a delivery deletes its row (workers/celery/broker_sqla.py)
        path = stack.broker_url.split("sqlite:///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as conn:
            raw = [row[0] for row in conn.execute("SELECT payload FROM kombu_message")]
    ids: set[int] = set()
    for text in raw:
        message = json.loads(text)
        if message["headers"].get("task") == "atrelay.process_event":
            args = json.loads(base64.b64decode(message["body"]))[0]
            ids.add(int(args[0]))
    return ids


def retries_held(stack: Stack) -> int:
    """Short retries the worker has taken off the queue and not started (Celery keeps a countdown's message
    until its time): events `retrying` whose message is no longer on the queue."""
    retrying = {r.id for r in stack.all_rows() if r.state == "retrying"}
    return len(retrying - queued_event_ids(stack)) if retrying else 0


@pytest.mark.parametrize("mode", ["redis+postgresql", "embedded"])
@pytest.mark.parametrize("held", ["governor-slots", "prefetched-deliveries"])
def test_a_killed_workers_events_run_again_within_30_s(mode: str, held: str, request: pytest.FixtureRequest,
                                                       tmp_path: Path,
                                                       autotask_server: tuple[ThreadedServer, SandboxState]) -> None:
    server, state = autotask_server
    distributed = mode != "embedded"
    # governor-slots: four runs at once, each inside a slow call. prefetched-deliveries: one run at a
    # time; the first PATCHes get 503s, so the worker holds short retries waiting their countdown.
    concurrency = 4 if held == "governor-slots" else 1
    stack = start_stack(tmp_path, mode=mode, sandbox_server=server, sandbox=state, workers=1, beat=True,
                        concurrency=concurrency,
                        pg_url=request.getfixturevalue("pg_url") if distributed else None,
                        redis_url=request.getfixturevalue("redis_url") if distributed else None)
    try:
        tickets = new_tickets(stack.sandbox, 10)
        stack.sandbox.latency_ms = LATENCY_MS
        if held == "prefetched-deliveries":
            # Three failed tries each (the client's own retries), then a short retry on the broker.
            stack.sandbox.script = [{"endpoint": "tickets", "method": "PATCH", "status": 503, "count": 3 * HELD}]
        ids = [post_like_a_partner(stack, form(t)) for t in tickets]
        worker = next(p for p in stack.procs if p.name.startswith("worker"))
        if held == "governor-slots":
            wait_for(lambda: slots_held(stack) >= 2, timeout=60, what="the worker holding governor slots")
        else:
            wait_for(lambda: retries_held(stack) >= HELD, timeout=60,
                     what=f"the worker holding {HELD} retries taken off the queue")
        stack.kill(worker)
        killed_at = time.monotonic()
        stack.start_worker(concurrency)
        assert_all_applied_once(stack, tickets, len([i for i in ids if i]), timeout=RECOVERY_SECONDS + 30)
        recovered_in = time.monotonic() - killed_at
        assert recovered_in <= RECOVERY_SECONDS, f"recovered in {recovered_in:.1f} s, not within {RECOVERY_SECONDS} s"
    finally:
        stack.stop()
        state.reset()
