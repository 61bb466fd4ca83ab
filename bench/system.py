"""Quota compliance under Autotask's enforced limits, and the memory of `atrelay run`."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, add_tickets, cpu_seconds, loadgen, log, stack, summary
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer, free_port
from tests.support import WEBFORM_SECRET, Proc, ctrl_c

__all__ = ["memory", "quota", "restart"]


def quota(server: ThreadedServer, state: SandboxState, pg: str, count: int) -> dict[str, Any]:
    budget, limit = 18_000, 20_000
    s = stack("redis+postgresql", server, state, pg, workers=2, concurrency=2,
              env_extra={"ATRELAY_AUTOTASK_HOURLY_BUDGET": str(budget), "ATRELAY_AUTOTASK_MAX_IN_FLIGHT": "3"})
    try:
        first = add_tickets(state, count)
        state.max_in_flight, state.hourly_limit = 3, limit
        started = time.monotonic()
        loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, count, 32, first)
        rows = s.all_final(count, timeout=1200)
        elapsed = time.monotonic() - started
        applied = sum(1 for r in rows if r.state == "applied")
        calls = state.calls.get("total", 0)
        result = {"events": count, "applied": applied, "seconds": elapsed, "autotask_calls": calls,
                  "limit_errors": {k: v for k, v in state.errors_returned.items()
                                   if k in ("thread_threshold", "hourly_limit")},
                  "max_in_flight_seen": dict(state.max_in_flight_seen), "requests_per_hour": calls / elapsed * 3600,
                  "budget_per_hour": budget, "sandbox_limit_per_hour": limit}
        log(f"quota: {applied}/{count} applied, errors {result['limit_errors']}, "
            f"{result['requests_per_hour']:.0f} req/h against a budget of {budget}")
        return result
    finally:
        state.max_in_flight = state.hourly_limit = None
        s.stop()


def _tree(pid: int) -> list[int]:
    out = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            out += _tree(int(child))
    return out


def _mem(pids: list[int]) -> tuple[float, float, float]:
    """(RSS, PSS, USS) in MB summed over ``pids``; USS = private pages (Private_Clean + Private_Dirty)."""
    totals = {"Rss:": 0, "Pss:": 0, "Private_Clean:": 0, "Private_Dirty:": 0}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key = line.split(None, 1)[0]
                if key in totals:
                    totals[key] += int(line.split()[1])
        except OSError:
            pass
    return (totals["Rss:"] / 1024, totals["Pss:"] / 1024,
            (totals["Private_Clean:"] + totals["Private_Dirty:"]) / 1024)


def memory(count: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="atrelay-bench-run-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env.update({"ATRELAY_VAR_DIR": str(tmp / "var"), "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET})
    ports = [free_port(), free_port(), free_port()]
    run = Proc("atrelay-run", ["run", "--port", str(ports[0]), "--autotask-sandbox-port", str(ports[1]),
                               "--timezest-sandbox-port", str(ports[2])], env, tmp)
    try:
        run.wait_log("atrelay is running", timeout=120)
        time.sleep(5)
        # Idle CPU too: the embedded worker polls its broker table every 50 ms; this is what that costs.
        cpu_before, idle_started = cpu_seconds(run.proc.pid), time.monotonic()
        time.sleep(10)
        idle_cpu = (cpu_seconds(run.proc.pid) - cpu_before) / (time.monotonic() - idle_started)

        def split() -> dict[str, tuple[float, float, float]]:
            pids = _tree(run.proc.pid)
            sandboxes: list[int] = []
            ours: list[int] = []
            for pid in pids:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_text()
                except OSError:
                    continue
                # `atrelay sandbox ...` children; the supervisor's own "--autotask-sandbox-port" is ours.
                (sandboxes if "\0sandbox\0" in cmd else ours).append(pid)
            return {"atrelay": _mem(ours), "sandboxes": _mem(sandboxes)}

        idle = split()
        peak = (0.0, 0.0, 0.0)
        url = f"http://127.0.0.1:{ports[0]}/webhooks/webform"
        gen = subprocess.Popen([sys.executable, "-m", "bench.loadgen", "--url", url, "--secret", WEBFORM_SECRET,
                                "--count", str(count), "--concurrency", "16", "--rate", "50",
                                "--first-ticket", "50001"], cwd=ROOT, stdout=subprocess.DEVNULL)
        while gen.poll() is None:
            peak = max(peak, split()["atrelay"], key=lambda m: m[1])
            time.sleep(0.5)
        result = {"idle_rss_mb": idle["atrelay"][0], "idle_pss_mb": idle["atrelay"][1],
                  "idle_uss_mb": idle["atrelay"][2], "load_rss_mb": peak[0], "load_pss_mb": peak[1],
                  "load_uss_mb": peak[2], "sandboxes_rss_mb": idle["sandboxes"][0],
                  "idle_cpu_percent": 100 * idle_cpu}
        log(f"memory: idle {result['idle_pss_mb']:.0f} MB PSS / {result['idle_uss_mb']:.0f} MB USS, "
            f"{result['idle_cpu_percent']:.1f} % of a core (sandboxes included); "
            f"under load {result['load_pss_mb']:.0f} MB PSS")
        return result
    finally:
        run.stop()


def _banner_after(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 180) -> tuple[subprocess.Popen[bytes], float]:
    """Start `atrelay run` in its own process group; seconds until its banner says it is running."""
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    while "atrelay is running" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() - started > timeout:
            ctrl_c(proc)
            raise RuntimeError(f"atrelay run gave no banner: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return proc, time.monotonic() - started


def restart(runs: int) -> dict[str, Any]:
    """`atrelay run` with nothing configured in a new var folder (migrations, sandbox seed), Ctrl-C, and
    `atrelay run` again on the same ports: seconds from the command to the banner (which waits for /readyz),
    each time. The venv is installed already (as after `make run`'s first install)."""
    firsts: list[float] = []
    restarts: list[float] = []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="atrelay-bench-restart-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
        env["ATRELAY_VAR_DIR"] = str(tmp / "var")
        ports = [free_port(), free_port(), free_port()]
        cmd = [sys.executable, "-m", "workers.cli", "run", "--port", str(ports[0]), "--autotask-sandbox-port",
               str(ports[1]), "--timezest-sandbox-port", str(ports[2])]
        proc, first = _banner_after(cmd, env, tmp / "first.log")
        time.sleep(3)
        ctrl_c(proc)
        proc, again = _banner_after(cmd, env, tmp / "second.log")
        ctrl_c(proc)
        if "Not ready after" in (tmp / "second.log").read_text(errors="replace"):
            raise RuntimeError("the restart's banner says it was not ready")
        firsts.append(first)
        restarts.append(again)
    started, restarted = summary(firsts), summary(restarts)
    log(f"atrelay run: first start {started['median']:.1f} s, restart {restarted['median']:.1f} s")
    return {"runs": runs, "first_start_s": started, "restart_s": restarted}
