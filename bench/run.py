"""Run every benchmark scenario and write docs/benchmarks.md, the README's summary line and
bench/results/latest.json.

    make bench        # or: .venv/bin/python -m bench.run [--quick] [--report-only]

Needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) like the test suite. Load comes from
a separate process (bench/loadgen.py), every request signed as its sender would sign it. The
Autotask sandbox counts the calls it receives. About 20 minutes on 2 cores; --quick is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import intake, pipeline, recovery, refusal, report, system, wire
from bench.common import ROOT, log, own_redis
from sandboxes.autotask.app import create_app as autotask_app
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from sandboxes.timezest.app import TimezestSandboxState
from sandboxes.timezest.app import create_app as timezest_app
from tests.support import fresh_pg_database

__all__ = ["main"]

RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "commit": commit()}


def commit() -> str:
    """The commit the figures come from; "+changes" when the tree differs from it (or "?" outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" +changes" if dirty else "")


SECTIONS = ("intake", "end_to_end", "embedded_e2e", "calls", "calls_before_21", "thread_limit", "embedded_burst",
            "one_at_a_time", "callout_flood", "recovery", "kill_recovery", "quota", "refusal", "restart")


def only(section: str, quick: bool) -> None:
    runs = 1 if quick else 2
    state = SandboxState()
    server = ThreadedServer(autotask_app(state)).start()
    tz_state = TimezestSandboxState()
    tz_server = ThreadedServer(timezest_app(tz_state)).start()
    try:
        with fresh_pg_database("atrelay_bench") as pg, own_redis():
            result: Any = {
                "intake": lambda: intake.intake(server, state, pg, runs, 1000 if quick else 3000),
                "end_to_end": lambda: pipeline.end_to_end(server, state, pg, runs, 100, 200 if quick else 1000),
                "embedded_e2e": lambda: pipeline.embedded_latency(server, state, runs, 50 if quick else 75),
                "calls": lambda: pipeline.calls_mix(server, state, pg, (tz_server.url, tz_state), runs),
                "calls_before_21": lambda: pipeline.calls_mix(server, state, pg, (tz_server.url, tz_state), 1,
                                                              as_sent=False),
                "thread_limit": lambda: pipeline.thread_limit(server, state, pg, 60 if quick else 200, runs,
                                                              by_id_count=40 if quick else 120),
                # thread_limit's embedded burst alone (issue 24): for working on the embedded default
                "embedded_burst": lambda: pipeline.thread_limit(server, state, pg, 60 if quick else 200, runs,
                                                                modes=("embedded",)),
                "one_at_a_time": lambda: wire.one_at_a_time(server, state, pg, runs, 15 if quick else 40),
                "callout_flood": lambda: wire.callout_flood(server, state, pg, runs, 300 if quick else 1256),
                "recovery": lambda: recovery.recovery(server, state, pg, runs),
                "kill_recovery": lambda: recovery.kill_recovery(server, state, pg, runs),
                "quota": lambda: system.quota(server, state, pg, 500 if quick else 2000),
                "refusal": lambda: refusal.refusal(server, state, pg, 20 if quick else 40, 60 if quick else 120),
                "restart": lambda: system.restart(1 if quick else 3),
            }[section]()
    finally:
        server.stop()
        tz_server.stop()
    print(json.dumps(result, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs and events (a smoke run)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite docs/benchmarks.md and the README line from the last results")
    parser.add_argument("--only", choices=sorted(SECTIONS),
                        help="run one section and print its figures (docs are not rewritten): for development")
    parser.add_argument("--note", help="what else ran on the machine meanwhile, printed in the doc's header "
                                       "(with --report-only: added to the last results)")
    args = parser.parse_args()
    if args.only:
        only(args.only, args.quick)
        return
    if args.report_only:
        last = json.loads((RESULTS / "latest.json").read_text())
        last["targets"] = report.targets(last)  # the report's rules of today over the figures of that run
        if args.note:
            last["note"] = args.note
            (RESULTS / "latest.json").write_text(json.dumps(last, indent=2, default=str))
        report.write_doc(last)
        report.write_readme(last)
        return
    quick = args.quick
    runs = 2 if quick else 3
    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    state = SandboxState()
    server = ThreadedServer(autotask_app(state)).start()
    tz_state = TimezestSandboxState()
    tz_server = ThreadedServer(timezest_app(tz_state)).start()
    res: dict[str, Any] = {"machine": machine(), "quick": quick, **({"note": args.note} if args.note else {})}
    res["config"] = ("uvicorn with uvloop/httptools, one ingress process; Celery workers on their default pool (threads); Redis 7 broker "
                     "(a redis-server of the benchmark's own) and PostgreSQL 15 audit DB, or the embedded default "
                     "(SQLite, kombu SQLAlchemy broker); quota governor on; the load generator, PostgreSQL and Redis share the same cores; defaults otherwise")
    try:
        with fresh_pg_database("atrelay_bench") as pg, own_redis():
            log("intake floor")
            res["floor"] = intake.floor(pg, runs, 1000 if quick else 3000)
            log("intake")
            res["intake"] = intake.intake(server, state, pg, runs, 1000 if quick else 3000)
            log("end to end, Redis + PostgreSQL")
            res["end_to_end"] = pipeline.end_to_end(server, state, pg, runs, 100 if quick else 200,
                                                    200 if quick else 1000)
            log("end to end, embedded")
            res["embedded_e2e"] = pipeline.embedded_latency(server, state, runs, 50 if quick else 75)
            log("Autotask calls per transition")
            res["calls"] = pipeline.calls_mix(server, state, pg, (tz_server.url, tz_state), 1 if quick else 2)
            log("Autotask calls per transition, the mix as before issue 21 (by id, no callouts)")
            res["calls_before_21"] = pipeline.calls_mix(server, state, pg, (tz_server.url, tz_state), 1,
                                                        as_sent=False)
            log("thread limit")
            res["thread_limit"] = pipeline.thread_limit(server, state, pg, 60 if quick else 200, 1 if quick else 2,
                                                        by_id_count=40 if quick else 120)
            log("one event at a time")
            res["one_at_a_time"] = wire.one_at_a_time(server, state, pg, 1 if quick else 2, 15 if quick else 40)
            log("a flood of Autotask callouts")
            res["callout_flood"] = wire.callout_flood(server, state, pg, 1 if quick else 2, 300 if quick else 1256)
            log("recovery from a killed worker")
            res["recovery"] = recovery.recovery(server, state, pg, 1 if quick else 2)
            log("recovery from a worker killed holding slots or deliveries, both modes")
            res["kill_recovery"] = recovery.kill_recovery(server, state, pg, 1 if quick else 2)
            log("quota compliance")
            res["quota"] = system.quota(server, state, pg, 500 if quick else 2000)
            log("refusal under a bogus-signature flood")
            res["refusal"] = refusal.refusal(server, state, pg, 20 if quick else 40, 60 if quick else 120)
        log("memory")
        res["memory"] = system.memory(300 if quick else 1000)
        log("`atrelay run`: first start and restart after Ctrl-C")
        res["restart"] = system.restart(1 if quick else 3)
    finally:
        server.stop()
        tz_server.stop()
    res["seconds"] = time.monotonic() - started
    res["targets"] = report.targets(res)
    (RESULTS / "latest.json").write_text(json.dumps(res, indent=2, default=str))
    report.write_doc(res)
    report.write_readme(res)
    log(f"wrote {report.DOC.relative_to(ROOT)} and the README summary in {res['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
