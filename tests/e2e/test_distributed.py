"""Distributed mode: two ingresses, two workers with different node names, one Redis, one PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlmodel import col, func, select

from pipelines.audit import PipelineRun
from pipelines.db import session_scope
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.stacks import Proc, start_stack
from tests.support import ROOT, WEBFORM_SECRET, signed, wait_for

BURST = 500


async def _post(urls: list[str], bodies: list[bytes]) -> list[int]:
    sem = asyncio.Semaphore(20)
    async with httpx.AsyncClient(timeout=60) as client:
        async def one(i: int, body: bytes) -> int:
            async with sem:
                url = urls[i % len(urls)] + "/webhooks/webform"  # alternate: a load balancer's round robin
                return (await client.post(url, content=body, headers=signed(body, WEBFORM_SECRET))).status_code

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


@pytest.mark.timeout(600)
def test_two_ingresses_two_workers_one_redis_one_postgres(
    tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState], pg_url: str, redis_url: str
) -> None:
    server, state = autotask_server
    stack = start_stack(tmp_path, mode="redis+postgresql", sandbox_server=server, sandbox=state, pg_url=pg_url,
                        redis_url=redis_url, workers=2, concurrency=2, beat=True)
    try:
        first_ingress = stack.ingress_url
        stack.start_ingress()
        urls = [first_ingress, stack.ingress_url]
        assert urls[0] != urls[1]
        tickets = []
        for i in range(BURST):
            tid = next(state.ticket_ids)
            state.tickets[tid] = {"id": tid, "ticketNumber": f"T20261129.{i + 1:04d}", "title": "dist", "status": 1}
            tickets.append(tid)
        bodies = [json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                              "data": {"form": "dist", "ticket_id": t}}).encode() for t in tickets]
        codes = asyncio.run(_post(urls, bodies))
        assert codes.count(202) == BURST
        rows = stack.all_final(BURST, timeout=420)
        assert [r.state for r in rows].count("applied") == BURST
        assert len(state.notes) == BURST and len(state.history) == BURST  # each applied once
        with session_scope(stack.db) as s:
            by_worker = dict(s.exec(select(PipelineRun.worker, func.count()).group_by(col(PipelineRun.worker))).all())
        assert len(by_worker) == 2 and all(n > 0 for n in by_worker.values()), by_worker

        # Both workers answer the broker's control channel (what `celery inspect` and Flower read).
        def ping() -> str | None:
            out = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.celery.app:app", "inspect", "ping",
                                  "--timeout", "5"], env=stack.env, cwd=ROOT, capture_output=True, text=True,
                                 timeout=60)
            names = [name for name in by_worker if name and name in out.stdout]
            return out.stdout if len(names) == 2 else None

        wait_for(ping, timeout=60, what="both workers to answer celery inspect ping")

        # Structured logs in distributed mode: one JSON object per line, ids bound.
        worker_log = next(p for p in stack.procs if isinstance(p, Proc) and p.name.startswith("worker")).log()
        records = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
        finished = [r for r in records if r.get("event") == "pipeline.run.finished"]
        assert finished and all("event_id" in r and "task_id" in r for r in finished)
    finally:
        stack.stop()
        state.reset()


@pytest.mark.timeout(300)
def test_a_second_beat_waits_as_standby(tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState],
                                         pg_url: str, redis_url: str) -> None:
    server, state = autotask_server
    stack = start_stack(tmp_path, mode="redis+postgresql", sandbox_server=server, sandbox=state, pg_url=pg_url,
                        redis_url=redis_url, beat=True, env_extra={"ATRELAY_BEAT_LOCK_SECONDS": "3"})
    try:
        leader = next(p for p in stack.procs if p.name.startswith("beat"))
        standby = Proc("beat-standby", ["beat"], stack.env, tmp_path)
        stack.procs.append(standby)
        standby.wait_log("beat.standby", timeout=60)
        assert "beat: Starting" not in standby.log()
        stack.kill(leader)
        standby.wait_log("beat: Starting", timeout=60)  # took over after the lock expired
        assert "beat.leader" in standby.log()
    finally:
        stack.stop()
        state.reset()
