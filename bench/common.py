"""What every benchmark scenario shares: logging, summaries, the load generator, stacks, tickets."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlmodel import col, select

from bench.loadgen import ticket_number
from pipelines.audit import InboundEvent, PipelineRun
from pipelines.db import session_scope
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer, free_port
from tests.stacks import Stack, start_stack
from tests.support import ROOT, wait_for

__all__ = [
    "REDIS", "ROOT", "add_tickets", "cpu_seconds", "latencies", "loadgen", "log", "own_redis", "stack", "summary",
]

#: The Redis the stacks use; :func:`own_redis` points it at a server of the benchmark's own.
REDIS = "redis://127.0.0.1:6379/9"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def loadgen(url: str, secret: str, count: int, concurrency: int, first_ticket: int, rate: float = 0.0,
            kind: str = "form", by: str = "number", bodies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run bench/loadgen.py in its own process (its CPU is not the server's) and return its report.

    Forms and Mission Control webhooks name their ticket by number unless ``by="id"``; ``bodies`` are
    documents to send as they are (Autotask callouts built from the sandbox's tickets and notes).
    """
    args = [sys.executable, "-m", "bench.loadgen", "--url", url, "--secret", secret, "--count", str(count),
            "--concurrency", str(concurrency), "--first-ticket", str(first_ticket), "--rate", str(rate),
            "--kind", kind, "--by", by]
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="atrelay-bench-bodies-") as file:
        if bodies is not None:
            json.dump(bodies, file)
            file.flush()
            args += ["--bodies", file.name]
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def add_tickets(state: SandboxState, count: int, status: int = 1) -> int:
    """``count`` new sandbox tickets in the given status; returns the first id (they are consecutive)."""
    created = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    first = None
    for _ in range(count):
        tid = next(state.ticket_ids)
        first = first or tid
        # Created (and last touched) an hour ago, as a ticket a partner reports on already exists.
        state.tickets[tid] = {"id": tid, "ticketNumber": ticket_number(tid), "title": "bench",
                              "status": status, "createDate": created, "lastActivityDate": created}
    assert first is not None
    return first


def stack(mode: str, server: ThreadedServer, state: SandboxState, pg: str | None, **kw: Any) -> Stack:
    tmp = Path(tempfile.mkdtemp(prefix=f"atrelay-bench-{mode.replace('+', '-')}-"))
    return start_stack(tmp, mode=mode, sandbox_server=server, sandbox=state, pg_url=pg,
                       redis_url=_redis[0] if mode != "embedded" else None, **kw)


_redis = [REDIS]


@contextlib.contextmanager
def own_redis() -> Iterator[str]:
    """A redis-server of the benchmark's own (no persistence), when one is installed.

    The machine's shared Redis also serves test runs, whose workers take messages from the same
    numbered databases the stacks use: a benchmark's events would then run elsewhere, or never.
    """
    if shutil.which("redis-server") is None:
        yield _redis[0]
        return
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="atrelay-bench-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _ping(url), timeout=20, what="the benchmark's redis-server")
        _redis[0] = url
        yield url
    finally:
        _redis[0] = REDIS
        proc.terminate()
        proc.wait(timeout=20)


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def latencies(db: str) -> tuple[list[float], float]:
    """Accepted -> applied, in ms, for every applied run; and the span from first accept to last apply."""
    with session_scope(db) as s:
        rows = s.exec(select(InboundEvent.received_at, PipelineRun.finished_at)
                      .join(PipelineRun, col(PipelineRun.event_id) == col(InboundEvent.id))
                      .where(PipelineRun.outcome == "applied")).all()
    lat = [(f - r).total_seconds() * 1000 for r, f in rows if f is not None]
    span = (max(f for _, f in rows if f) - min(r for r, _ in rows)).total_seconds() if rows else 0.0
    return lat, span


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children, from /proc.

    CPU per request is the figure least skewed by other work on a shared machine: throughput and
    latency fall when the cores are busy, CPU time per request hardly moves.
    """
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += cpu_seconds(int(child))
    except OSError:
        pass
    return total
