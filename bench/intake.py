"""Intake scenarios: the verify-and-commit floor, then atrelay's ingress, in the same run.

Every figure at 32 connections from the separate load generator, one server process; no workers run
(the queue only fills), so the numbers are the intake's alone.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, cpu_seconds, loadgen, log, stack, summary
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer, free_port
from tests.support import AUTOTASK_HOOK_SECRET, WEBFORM_SECRET, wait_for

__all__ = ["CONCURRENCY", "floor", "intake"]

CONCURRENCY = 32


def _measured(url: str, secret: str, count: int, pid: int, kind: str = "form") -> dict[str, Any]:
    """One load-generator run, with the server's CPU time per request."""
    before = cpu_seconds(pid)
    result = loadgen(url, secret, count, CONCURRENCY, 50001, kind=kind)
    result["cpu_ms"] = (cpu_seconds(pid) - before) * 1000 / count
    assert result["codes"] == {"202": count}, result["codes"]
    return result


def _row(results: list[dict[str, Any]], **what: Any) -> dict[str, Any]:
    return {**what, "concurrency": CONCURRENCY, "cpu_ms": summary([r["cpu_ms"] for r in results]),
            "rps": summary([r["rps"] for r in results]),
            "p50_ms": summary([r["p50_ms"] for r in results]), "p99_ms": summary([r["p99_ms"] for r in results])}


def _up(proc: subprocess.Popen[bytes], url: str, log_file: Path) -> bool:
    assert proc.poll() is None, log_file.read_text()
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def floor(pg: str, runs: int, count: int) -> list[dict[str, Any]]:
    """bench/floor.py on SQLite (the embedded default's database) and on PostgreSQL."""
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="atrelay-bench-floor-"))
    for backend, db in (("sqlite", f"sqlite:///{tmp / 'floor.db'}"), ("postgresql", pg)):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bench.floor", "--db", db, "--secret", WEBFORM_SECRET,
                                 "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=(tmp / f"floor-{backend}.log").open("wb"))
        try:
            wait_for(lambda p=proc, u=f"http://127.0.0.1:{port}/healthz", f=tmp / f"floor-{backend}.log":  # type: ignore[misc]
                     _up(p, u, f), timeout=30, what="the floor app")
            results = []
            for _ in range(runs):
                results.append(_measured(f"http://127.0.0.1:{port}/webhooks/webform", WEBFORM_SECRET, count,
                                         proc.pid))
            rows.append(_row(results, backend=backend))
            log(f"floor {backend}: {rows[-1]['rps']['median']:.0f}/s p99 {rows[-1]['p99_ms']['median']:.1f} ms, "
                f"{rows[-1]['cpu_ms']['median']:.2f} ms CPU per request")
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return rows


def intake(server: ThreadedServer, state: SandboxState, pg: str, runs: int, count: int) -> list[dict[str, Any]]:
    """Signed Standard Webhooks (web form) and signed Autotask callouts, on both modes."""
    rows = []
    kinds = (("standard-webhooks", "/webhooks/webform", WEBFORM_SECRET, "form"),
             ("autotask-callouts", "/webhooks/autotask/tickets", AUTOTASK_HOOK_SECRET, "autotask"))
    for mode in ("embedded", "redis+postgresql"):
        s = stack(mode, server, state, pg if mode != "embedded" else None, workers=0, ingress_processes=1)
        try:
            for name, path, secret, kind in kinds:
                results = []
                pid = next(p.proc.pid for p in s.procs if p.name.startswith("ingress"))
                for _ in range(runs):
                    s.clean()
                    results.append(_measured(s.ingress_url + path, secret, count, pid, kind))
                rows.append(_row(results, mode=mode, kind=name, ingress_processes=1))
                log(f"intake {mode} {name}: {rows[-1]['rps']['median']:.0f}/s "
                    f"p99 {rows[-1]['p99_ms']['median']:.1f} ms, {rows[-1]['cpu_ms']['median']:.2f} ms CPU per request")
        finally:
            s.stop()
    return rows
