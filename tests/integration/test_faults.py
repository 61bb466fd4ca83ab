"""Fault suite: real worker processes, the Autotask sandbox injecting faults, infrastructure failing.

In every case every accepted event ends applied, skipped or dead with a reason; the sandbox tickets
end in the right status; exactly one note exists per applied transition.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from pipelines.audit import EventState
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer, free_port
from tests.integration.helpers import new_tickets
from tests.stacks import Stack, start_stack
from tests.support import PG_ADMIN_URL, wait_for

RECEIVED = 29682844
FAST = {"ATRELAY_LEASE_SECONDS": "4", "ATRELAY_SWEEP_SECONDS": "1", "ATRELAY_AUTOTASK_TIMEOUT_SECONDS": "1"}


def form(ticket_id: int) -> bytes:
    return json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                       "data": {"form": "new-user", "ticket_id": ticket_id, "answers": {"q": "a"}}}).encode()


def post_like_a_partner(stack: Stack, body: bytes, tries: int = 10) -> int | None:
    """POST as a Standard Webhooks sender does: retry on 5xx or no answer. Return the accepted id."""
    for _ in range(tries):
        try:
            response = stack.post("/webhooks/webform", body)
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        if response.status_code in (200, 202):
            return int(response.json()["id"])
        assert response.status_code >= 500, response.text
        time.sleep(0.5)
    return None


def assert_all_applied_once(stack: Stack, tickets: list[int], accepted: int, timeout: float = 120) -> None:
    rows = stack.all_final(accepted, timeout=timeout)
    assert len(rows) == accepted
    assert all(EventState(r.state).final for r in rows)
    assert {r.state for r in rows} == {"applied"}, [(r.id, r.state, r.reason) for r in rows if r.state != "applied"]
    for tid in tickets:
        notes = [n for n in stack.sandbox.notes.values() if n["ticketID"] == tid]
        changes = [h for h in stack.sandbox.history if h["ticket_id"] == tid]
        assert stack.sandbox.tickets[tid]["status"] == RECEIVED
        assert len(notes) == 1, f"ticket {tid} has {len(notes)} notes"
        assert len(changes) == 1, f"ticket {tid} changed {len(changes)} times"


@pytest.fixture
def faults_stack(request: pytest.FixtureRequest, tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState]
                 ) -> Iterator[Stack]:
    server, state = autotask_server
    mode = getattr(request, "param", "redis+postgresql")
    distributed = mode != "embedded"
    stack = start_stack(tmp_path, mode=mode, sandbox_server=server, sandbox=state,
                        pg_url=request.getfixturevalue("pg_url") if distributed else None,
                        redis_url=request.getfixturevalue("redis_url") if distributed else None,
                        env_extra=FAST, beat=True)
    yield stack
    stack.stop()
    state.reset()


RECOVERY_SECONDS = 30  # a killed worker's events run again within this (issue: lease + one sweep)


@pytest.mark.parametrize(("mode", "pool"), [("redis+postgresql", "threads"), ("redis+postgresql", "prefork"),
                                            ("embedded", "threads")])
def test_worker_killed_mid_run(mode: str, pool: str, request: pytest.FixtureRequest, tmp_path: Path,
                               autotask_server: tuple[ThreadedServer, SandboxState]) -> None:
    """kill -9 a worker inside a run (its pool with it: threads, or prefork processes); with the
    default lease and sweep (no test-only speed-ups) its events are applied by the surviving worker
    within 30 s, each exactly once."""
    server, state = autotask_server
    distributed = mode != "embedded"
    stack = start_stack(tmp_path, mode=mode, sandbox_server=server, sandbox=state, workers=2, beat=True,
                        pg_url=request.getfixturevalue("pg_url") if distributed else None,
                        redis_url=request.getfixturevalue("redis_url") if distributed else None,
                        env_extra={"ATRELAY_AUTOTASK_TIMEOUT_SECONDS": "1", "ATRELAY_WORKER_POOL": pool})
    try:
        tickets = new_tickets(stack.sandbox, 4)
        stack.sandbox.latency_ms = 700  # every call slow, so the kill lands inside a run
        ids = [post_like_a_partner(stack, form(t)) for t in tickets]
        worker = next(p for p in stack.procs if p.name.startswith("worker"))
        wait_for(lambda: stack.sandbox.calls.get("PATCH tickets", 0) >= 1, timeout=60, what="a PATCH in flight")
        stack.kill(worker)
        killed_at = time.monotonic()
        stack.sandbox.latency_ms = 0
        assert_all_applied_once(stack, tickets, len([i for i in ids if i]), timeout=RECOVERY_SECONDS + 15)
        recovered_in = time.monotonic() - killed_at
        assert recovered_in <= RECOVERY_SECONDS, f"recovered in {recovered_in:.1f}s"
    finally:
        stack.stop()
        state.reset()


def test_outage_answers_for_30_seconds(faults_stack: Stack) -> None:
    stack = faults_stack
    tickets = new_tickets(stack.sandbox, 6)
    stack.sandbox.outage_until = time.monotonic() + 30
    stack.sandbox.outage_statuses = [502, 503, 500]  # the 500s carry no errors[]: an outage, not a rejection
    ids = [post_like_a_partner(stack, form(t)) for t in tickets]
    assert_all_applied_once(stack, tickets, len(ids), timeout=150)
    assert stack.sandbox.errors_returned["outage_502"] > 0 and stack.sandbox.errors_returned["outage_500"] > 0


def test_429s_thread_threshold_and_timeouts(faults_stack: Stack) -> None:
    stack = faults_stack
    tickets = new_tickets(stack.sandbox, 10)
    stack.sandbox.script = [
        {"status": 429, "retry_after": 1, "errors": ["Rate limit"], "count": 4},
        {"status": 429, "errors": ["API request threshold exceeded"], "count": 4},
        {"status": 500, "errors": ["Thread Threshold Exceeded (Itgenatr005)"], "count": 6},
        {"endpoint": "ticketnotes", "method": "POST", "delay_ms": 1500, "then": "process", "count": 3},
        {"endpoint": "tickets", "method": "PATCH", "delay_ms": 1500, "then": "process", "count": 2},
    ]
    ids = [post_like_a_partner(stack, form(t)) for t in tickets]
    assert_all_applied_once(stack, tickets, len(ids), timeout=150)
    assert stack.sandbox.script == []  # every fault was served


def test_postgres_connections_dropped(faults_stack: Stack) -> None:
    stack = faults_stack
    tickets = new_tickets(stack.sandbox, 20)
    dbname = stack.db.rsplit("/", 1)[-1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    stop = threading.Event()

    def drop_connections() -> None:
        while not stop.is_set():
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": dbname})
            stop.wait(0.7)

    dropper = threading.Thread(target=drop_connections, daemon=True)
    dropper.start()
    try:
        ids = [post_like_a_partner(stack, form(t)) for t in tickets]
        time.sleep(2)
    finally:
        stop.set()
        dropper.join()
        admin.dispose()
    accepted = [i for i in ids if i is not None]
    assert len(accepted) == len(tickets)
    assert_all_applied_once(stack, tickets, len(accepted), timeout=120)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, object]]:
    """A Redis of this test's own, without persistence, that the test may restart."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _ping(port), timeout=20, what="redis to start")
        return proc

    holder = {"proc": start()}

    def restart() -> None:
        holder["proc"].kill()
        holder["proc"].wait()
        time.sleep(1.0)
        holder["proc"] = start()

    yield port, restart
    holder["proc"].kill()
    holder["proc"].wait()


def _ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_redis_restarted_during_a_burst(tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState],
                                        pg_url: str, own_redis: tuple[int, object]) -> None:
    port, restart = own_redis
    server, state = autotask_server
    stack = start_stack(tmp_path, mode="redis+postgresql", sandbox_server=server, sandbox=state, pg_url=pg_url,
                        redis_url=f"redis://127.0.0.1:{port}/0", env_extra=FAST, beat=True)
    try:
        tickets = new_tickets(state, 30)
        state.latency_ms = 200
        ids = [post_like_a_partner(stack, form(t)) for t in tickets[:15]]
        backlog = [r for r in stack.all_rows() if not EventState(r.state).final]
        assert backlog, "the restart must hit queued work for this test to mean anything"
        restart()  # the queue, unacked messages and quota state are gone
        ids += [post_like_a_partner(stack, form(t)) for t in tickets[15:]]
        state.latency_ms = 0
        assert all(ids)
        assert_all_applied_once(stack, tickets, len(ids), timeout=150)
    finally:
        stack.stop()
        state.reset()
