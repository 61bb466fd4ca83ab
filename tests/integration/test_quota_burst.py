"""A burst of 2,000 events against a sandbox that enforces Autotask's limits: no limit error, all applied."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.stacks import start_stack
from tests.support import WEBFORM_SECRET, signed

BURST = 2000


async def _post_all(url: str, bodies: list[bytes], concurrency: int = 24) -> list[tuple[int, bool]]:
    """Post like a Standard Webhooks sender: a delivery that got no answer is sent again, same
    webhook-id (a keep-alive connection the server was closing can drop a request under load).
    Returns (final status, whether it was sent again) per body."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60) as client:
        async def one(body: bytes) -> tuple[int, bool]:
            headers = signed(body, WEBFORM_SECRET)
            async with sem:
                for attempt in range(4):
                    try:
                        response = await client.post(url, content=body, headers=headers)
                        return response.status_code, attempt > 0
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
                return 0, True

        return await asyncio.gather(*(one(b) for b in bodies))


@pytest.mark.timeout(600)  # 2,000 real events; a guard against hangs, not a speed check
def test_burst_stays_inside_autotask_limits(tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState],
                                            pg_url: str, redis_url: str) -> None:
    server, state = autotask_server
    stack = start_stack(tmp_path, mode="redis+postgresql", sandbox_server=server, sandbox=state, pg_url=pg_url,
                        redis_url=redis_url, workers=2, concurrency=4, beat=True,
                        env_extra={"ATRELAY_AUTOTASK_MAX_IN_FLIGHT": "3", "ATRELAY_AUTOTASK_HOURLY_BUDGET": "9000"})
    try:
        tickets = []
        for i in range(BURST):
            tid = next(state.ticket_ids)
            state.tickets[tid] = {"id": tid, "ticketNumber": f"T20261128.{i + 1:04d}", "title": "burst", "status": 1}
            tickets.append(tid)
        state.max_in_flight, state.hourly_limit, state.latency_ms = 3, 10_000, 5
        bodies = [json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                              "data": {"form": "burst", "ticket_id": t}}).encode() for t in tickets]
        answers = asyncio.run(_post_all(stack.ingress_url + "/webhooks/webform", bodies))
        assert all(code == 202 for code, again in answers if not again)  # every first answer: accepted
        assert all(code in (200, 202) for code, again in answers if again)  # a re-send: accepted or duplicate
        rows = stack.all_final(BURST, timeout=420)
        assert len(rows) == BURST  # a re-sent delivery is never a second event
        reasons = {r.reason for r in rows if r.state != "applied"}
        assert [r.state for r in rows].count("applied") == BURST, reasons
        limit_errors = {k: v for k, v in state.errors_returned.items()
                        if k in ("thread_threshold", "hourly_limit")}
        assert limit_errors == {}, limit_errors
        assert all(n <= 3 for n in state.max_in_flight_seen.values()), state.max_in_flight_seen
        assert max(state.max_in_flight_seen.values()) == 3  # the limit was reached, and held
        assert len(state.notes) == BURST
        assert sum(1 for t in tickets if state.tickets[t]["status"] == 29682844) == BURST
    finally:
        stack.stop()
        state.reset()
