"""Run every benchmark scenario and write docs/benchmarks.md (and bench/results/latest.json).

    make bench        # or: .venv/bin/python -m bench.run [--quick]

Needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) like the test suite. Load comes from
a separate process (bench/loadgen.py), every request signed as the partner would sign it. The
Autotask sandbox counts the calls it receives. Numbers are medians of several runs, with min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import col, select

from connectors.autotask.sandbox import SandboxState
from connectors.autotask.sandbox import create_app as autotask_app
from connectors.common.sandbox_server import ThreadedServer, free_port
from connectors.timezest.client import TimezestClient
from connectors.timezest.sandbox import TimezestSandboxState
from connectors.timezest.sandbox import create_app as timezest_app
from pipelines.audit import InboundEvent, PipelineRun
from pipelines.db import session_scope
from pipelines.timezest_poll import poll_once
from tests.stacks import Stack, start_stack
from tests.support import MC_SECRET, ROOT, WEBFORM_SECRET, Proc, fresh_pg_database, wait_for
from workers.settings import SANDBOX_TIMEZEST_API_KEY

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
REDIS = "redis://127.0.0.1:6379/9"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict[str, Any]:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def loadgen(url: str, secret: str, count: int, concurrency: int, first_ticket: int, rate: float = 0.0,
            kind: str = "form") -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", url, "--secret", secret, "--count", str(count),
         "--concurrency", str(concurrency), "--first-ticket", str(first_ticket), "--rate", str(rate),
         "--kind", kind],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def pg_database() -> Any:
    return fresh_pg_database("atrelay_bench")


def add_tickets(state: SandboxState, count: int, status: int = 1) -> int:
    first = None
    for _ in range(count):
        tid = next(state.ticket_ids)
        first = first or tid
        state.tickets[tid] = {"id": tid, "ticketNumber": f"T20261130.{tid % 100000:05d}", "title": "bench",
                              "status": status}
    assert first is not None
    return first


def stack(mode: str, server: ThreadedServer, state: SandboxState, pg: str | None, **kw: Any) -> Stack:
    tmp = Path(tempfile.mkdtemp(prefix=f"atrelay-bench-{mode.replace('+', '-')}-"))
    return start_stack(tmp, mode=mode, sandbox_server=server, sandbox=state, pg_url=pg,
                       redis_url=REDIS if mode != "embedded" else None, **kw)


# ---- scenarios ----------------------------------------------------------------------------------
def intake(server: ThreadedServer, state: SandboxState, pg: str, runs: int, count: int) -> list[dict[str, Any]]:
    rows = []
    for mode, processes in (("embedded", 1), ("redis+postgresql", 1), ("redis+postgresql", 2)):
        s = stack(mode, server, state, pg if mode != "embedded" else None, workers=0, ingress_processes=processes)
        try:
            for concurrency in (8, 32, 64):
                results = []
                for _ in range(runs):
                    s.clean()
                    results.append(loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, count, concurrency,
                                           50001))
                    assert results[-1]["codes"] == {"202": count}, results[-1]["codes"]
                rows.append({"mode": mode, "ingress_processes": processes, "concurrency": concurrency,
                             "rps": summary([r["rps"] for r in results]),
                             "p50_ms": summary([r["p50_ms"] for r in results]),
                             "p99_ms": summary([r["p99_ms"] for r in results])})
                log(f"intake {mode} x{processes} c={concurrency}: {rows[-1]['rps']['median']:.0f}/s "
                    f"p99 {rows[-1]['p99_ms']['median']:.1f} ms")
        finally:
            s.stop()
    return rows


def _latencies(db: str) -> tuple[list[float], float]:
    with session_scope(db) as s:
        rows = s.exec(select(InboundEvent.received_at, PipelineRun.finished_at)
                      .join(PipelineRun, col(PipelineRun.event_id) == col(InboundEvent.id))
                      .where(PipelineRun.outcome == "applied")).all()
    lat = [(f - r).total_seconds() * 1000 for r, f in rows if f is not None]
    span = (max(f for _, f in rows if f) - min(r for r, _ in rows)).total_seconds() if rows else 0.0
    return lat, span


def end_to_end(server: ThreadedServer, state: SandboxState, pg: str, runs: int, count: int) -> list[dict[str, Any]]:
    from bench.loadgen import percentile

    rows = []
    for processes in (1, 2):
        s = stack("redis+postgresql", server, state, pg, workers=1, concurrency=processes)
        try:
            for latency in (0, 150):
                # With 150 ms per Autotask call an event takes about half a second of worker time, so a
                # process sustains about 2 events/s: offer what the configuration can carry, otherwise
                # the numbers describe a growing queue rather than latency.
                rate = 20.0 if latency == 0 else 1.5 * processes
                n = count if latency == 0 else int(rate * 20)
                p50s, p99s, rates = [], [], []
                for _ in range(runs):
                    s.clean()
                    state.latency_ms = latency
                    first = add_tickets(state, n)
                    gen = loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, n, 4, first, rate=rate)
                    assert gen["codes"].get("202", 0) + gen["codes"].get("200", 0) == n, gen["codes"]
                    s.all_final(n, timeout=600)
                    lat, span = _latencies(s.db)
                    p50s.append(percentile(lat, 50))
                    p99s.append(percentile(lat, 99))
                    rates.append(len(lat) / span if span else 0.0)
                rows.append({"processes": processes, "sandbox_latency_ms": latency, "offered_rate": rate,
                             "p50_ms": summary(p50s), "p99_ms": summary(p99s), "events_per_s": summary(rates)})
                log(f"e2e {processes} proc, {latency} ms: p50 {rows[-1]['p50_ms']['median']:.0f} ms "
                    f"p99 {rows[-1]['p99_ms']['median']:.0f} ms")
            state.latency_ms = 0
            # Capacity: a burst, as fast as the workers drain it.
            caps = []
            for _ in range(runs):
                s.clean()
                first = add_tickets(state, count * 2)
                started = time.monotonic()
                loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, count * 2, 32, first)
                s.all_final(count * 2, timeout=600)
                caps.append(count * 2 / (time.monotonic() - started))
            rows.append({"processes": processes, "sandbox_latency_ms": 0, "offered_rate": "burst",
                         "events_per_s": summary(caps)})
            log(f"e2e {processes} proc burst: {rows[-1]['events_per_s']['median']:.1f} events/s")
        finally:
            state.latency_ms = 0
            s.stop()
    return rows


def calls_per_transition(server: ThreadedServer, state: SandboxState, pg: str,
                         tz: tuple[str, TimezestSandboxState], runs: int) -> dict[str, Any]:
    tz_url, tz_state = tz
    ratios, detail = [], {}
    s = stack("redis+postgresql", server, state, pg, workers=1, concurrency=2)
    try:
        for _ in range(runs):
            s.clean()
            tz_state.reset()
            forms = add_tickets(state, 100)
            mc = add_tickets(state, 50)
            preset = add_tickets(state, 20, status=29682844)  # already Received Form Response
            tz_tickets = add_tickets(state, 30)
            url = s.ingress_url + "/webhooks/"
            loadgen(url + "webform", WEBFORM_SECRET, 100, 8, forms)
            loadgen(url + "mission-control", MC_SECRET, 50, 8, mc, kind="mc")
            loadgen(url + "webform", WEBFORM_SECRET, 20, 8, preset)
            # 30 duplicates: the same webhook-ids again (a partner retrying after a lost 202)
            with session_scope(s.db) as sess:
                dupes = list(sess.exec(select(InboundEvent).limit(30)).all())
            for row in dupes:
                headers = {k: v for k, v in row.headers.items() if k.startswith("webhook-") or k == "content-type"}
                path = "mission-control" if row.source == "mission-control" else "webform"
                assert httpx.post(url + path, content=row.body, headers=headers).status_code in (200, 401)
            requests = [tz_state.create({"ticket_id": t}) for t in range(tz_tickets, tz_tickets + 30)]
            client = TimezestClient(api_key=SANDBOX_TIMEZEST_API_KEY, base_url=f"{tz_url}/v1")
            poll_once(s.db, client, s.enqueue)
            for r in requests:
                tz_state.transition(r["id"], "sent")
            poll_once(s.db, client, s.enqueue)
            s.all_final(170 + 30, timeout=300)
            for r in requests:
                tz_state.transition(r["id"], "scheduled")
            poll_once(s.db, client, s.enqueue)
            client.close()
            s.all_final(170 + 60, timeout=300)
            wait_for(lambda: all(r.state in ("applied", "skipped", "dead", "ignored") for r in s.all_rows()),
                     timeout=120, what="follow-ups")
            with session_scope(s.db) as sess:
                transitions = sess.exec(select(PipelineRun).where(PipelineRun.outcome == "applied")).all()
            applied = len(transitions)
            calls = sum(v for k, v in state.calls.items() if k != "total")
            ratios.append(calls / applied)
            detail = {"applied_transitions": applied, "autotask_calls": calls,
                      "by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total"))}
            log(f"calls per transition: {ratios[-1]:.2f} ({calls} calls / {applied} applied)")
    finally:
        s.stop()
    return {"ratio": summary(ratios), **detail}


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


def _mem(pids: list[int]) -> tuple[float, float]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def memory(count: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="atrelay-bench-run-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env.update({"ATRELAY_VAR_DIR": str(tmp / "var"), "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET})
    ports = [free_port(), free_port(), free_port()]
    run = Proc("atrelay-run", ["run", "--port", str(ports[0]), "--autotask-sandbox-port", str(ports[1]),
                               "--timezest-sandbox-port", str(ports[2])], env, tmp)
    try:
        run.wait_log("atrelay is running", timeout=120)
        time.sleep(10)

        def split() -> dict[str, tuple[float, float]]:
            pids = _tree(run.proc.pid)
            sandboxes, ours = [], []
            for pid in pids:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_text()
                except OSError:
                    continue
                (sandboxes if "sandbox" in cmd else ours).append(pid)
            return {"atrelay": _mem(ours), "sandboxes": _mem(sandboxes)}

        idle = split()
        peak = {"atrelay": (0.0, 0.0)}
        url = f"http://127.0.0.1:{ports[0]}/webhooks/webform"
        gen = subprocess.Popen([sys.executable, "-m", "bench.loadgen", "--url", url, "--secret", WEBFORM_SECRET,
                                "--count", str(count), "--concurrency", "16", "--rate", "50",
                                "--first-ticket", "50001"], cwd=ROOT, stdout=subprocess.DEVNULL)
        while gen.poll() is None:
            now = split()["atrelay"]
            peak["atrelay"] = max(peak["atrelay"], now)
            time.sleep(0.5)
        result = {"idle_rss_mb": idle["atrelay"][0], "idle_pss_mb": idle["atrelay"][1],
                  "load_rss_mb": peak["atrelay"][0], "load_pss_mb": peak["atrelay"][1],
                  "sandboxes_rss_mb": idle["sandboxes"][0]}
        log(f"memory: idle {result['idle_rss_mb']:.0f} MB RSS / {result['idle_pss_mb']:.0f} MB PSS; "
            f"under load {result['load_rss_mb']:.0f} MB RSS")
        return result
    finally:
        run.stop()


# ---- report -------------------------------------------------------------------------------------
def _fmt(s: dict[str, float], digits: int = 0) -> tuple[str, str, str]:
    f = f"{{:.{digits}f}}"
    return f.format(s["median"]), f.format(s["min"]), f.format(s["max"])


def write_doc(res: dict[str, Any]) -> None:
    m = res["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand. Medians of several runs, with min and",
        "max. Load comes from a separate process (`bench/loadgen.py`), every request signed with Standard",
        "Webhooks; Autotask is the bundled sandbox, which counts the calls it receives.",
        "",
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, {m['platform']}",
        f"- Date: {m['date']}",
        f"- Configuration: {res['config']}",
        "",
        "## Summary against targets",
        "",
        "| What | Target | Measured (median) | Met |",
        "|---|---|---|---|",
    ]
    for t in res["targets"]:
        lines.append(f"| {t['what']} | {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "## 1. Intake (signed webhooks answered 202 by the ingress; no workers running)", "",
              "| Mode | Ingress processes | Concurrency | req/s median (min-max) | p50 ms | p99 ms median (min-max) |",
              "|---|---|---|---|---|---|"]
    for r in res["intake"]:
        rps, p50, p99 = _fmt(r["rps"]), _fmt(r["p50_ms"], 1), _fmt(r["p99_ms"], 1)
        lines.append(f"| {r['mode']} | {r['ingress_processes']} | {r['concurrency']} | {rps[0]} ({rps[1]}-{rps[2]}) | "
                     f"{p50[0]} | {p99[0]} ({p99[1]}-{p99[2]}) |")
    lines += ["", "## 2. End to end (accepted -> applied, Redis + PostgreSQL)", "",
              "| Worker processes | Sandbox latency | Offered | p50 ms | p99 ms median (min-max) | events/s median (min-max) |",
              "|---|---|---|---|---|---|"]
    for r in res["end_to_end"]:
        eps = _fmt(r["events_per_s"], 1)
        if "p99_ms" in r:
            p50, p99 = _fmt(r["p50_ms"]), _fmt(r["p99_ms"])
            lines.append(f"| {r['processes']} | {r['sandbox_latency_ms']} ms | {r['offered_rate']}/s | {p50[0]} | "
                         f"{p99[0]} ({p99[1]}-{p99[2]}) | {eps[0]} ({eps[1]}-{eps[2]}) |")
        else:
            lines.append(f"| {r['processes']} | {r['sandbox_latency_ms']} ms | burst | - | - | "
                         f"{eps[0]} ({eps[1]}-{eps[2]}) |")
    c = res["calls"]
    ratio = _fmt(c["ratio"], 2)
    lines += ["", "## 3. Autotask calls per applied transition (realistic mix)", "",
              "Mix: 100 web forms; 50 Mission Control events (escalated, out of scope, and no contact with its",
              "follow-up to Waiting Customer); 20 events whose ticket already has the status; 30 duplicate deliveries;",
              "30 TimeZest requests polled through sent and scheduled.", "",
              f"- Calls per applied transition: **{ratio[0]}** (min {ratio[1]}, max {ratio[2]}); "
              f"{c['autotask_calls']} calls for {c['applied_transitions']} applied transitions in the last run.",
              "", "| Call | Count (last run) |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in c["by_endpoint"].items()]
    q = res["quota"]
    lines += ["", "## 4. Quota compliance", "",
              f"{q['events']} events; sandbox enforcing 3 in-flight requests per endpoint and "
              f"{q['sandbox_limit_per_hour']} requests/hour; atrelay budget {q['budget_per_hour']}/hour; "
              "2 worker processes x 2.", "",
              f"- Limit errors returned by the sandbox: **{sum(q['limit_errors'].values())}** {q['limit_errors'] or ''}",
              f"- Applied: {q['applied']} of {q['events']} in {q['seconds']:.0f} s",
              f"- Autotask calls: {q['autotask_calls']} in {q['seconds']:.0f} s, {q['autotask_calls'] / q['seconds']:.1f} "
              f"requests/s: {100 * q['autotask_calls'] / q['budget_per_hour']:.0f} % of the rolling-hour budget "
              "spent in the run (a burst may use the budget quickly; the governor parks work once it is spent)",
              f"- Most requests in flight per endpoint: {q['max_in_flight_seen']}"]
    mem = res["memory"]
    lines += ["", "## 5. Memory of `atrelay run` (supervisor, ingress, worker with its 2 pool processes and embedded beat)", "",
              "| State | RSS MB (sum) | PSS MB (shared pages counted once) |", "|---|---|---|",
              f"| idle | {mem['idle_rss_mb']:.0f} | {mem['idle_pss_mb']:.0f} |",
              f"| under load (peak) | {mem['load_rss_mb']:.0f} | {mem['load_pss_mb']:.0f} |", "",
              f"The bundled sandboxes add {mem['sandboxes_rss_mb']:.0f} MB RSS and are not counted above.", ""]
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    DOC.write_text("\n".join(lines))


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    within = [r for r in res["intake"] if r["mode"] == "redis+postgresql" and r["p99_ms"]["median"] < 50]
    best_intake = max(within or [r for r in res["intake"] if r["mode"] == "redis+postgresql"],
                      key=lambda r: r["rps"]["median"])
    e2e = next(r for r in res["end_to_end"] if r.get("sandbox_latency_ms") == 0 and "p99_ms" in r
               and r["processes"] == 2)
    return [
        {"what": "Intake, signed webhooks/s (Redis + PostgreSQL, best concurrency)", "target": ">= 1000/s",
         "measured": f"{best_intake['rps']['median']:.0f}/s at c={best_intake['concurrency']}, "
                     f"{best_intake['ingress_processes']} ingress process(es)",
         "met": best_intake["rps"]["median"] >= 1000},
        {"what": "Intake p99 at that concurrency", "target": "< 50 ms",
         "measured": f"{best_intake['p99_ms']['median']:.1f} ms", "met": best_intake["p99_ms"]["median"] < 50},
        {"what": "End-to-end p99 at 20 events/s, 0 ms sandbox latency (2 processes)", "target": "< 250 ms",
         "measured": f"{e2e['p99_ms']['median']:.0f} ms", "met": e2e["p99_ms"]["median"] < 250},
        {"what": "Autotask calls per applied transition", "target": "<= 2.0",
         "measured": f"{res['calls']['ratio']['median']:.2f}", "met": res["calls"]["ratio"]["median"] <= 2.0},
        {"what": "Limit errors under quota enforcement", "target": "0",
         "measured": str(sum(res["quota"]["limit_errors"].values())), "met": not res["quota"]["limit_errors"]},
        {"what": "Idle memory of `atrelay run`", "target": "< 250 MB",
         "measured": f"{res['memory']['idle_rss_mb']:.0f} MB RSS, {res['memory']['idle_pss_mb']:.0f} MB PSS",
         "met": res["memory"]["idle_pss_mb"] < 250},
    ]


def _notes() -> list[str]:
    notes_file = ROOT / "bench" / "notes.md"
    if not notes_file.exists():
        return []
    return [line[2:] for line in notes_file.read_text().splitlines() if line.startswith("- ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs and events (a smoke run)")
    parser.add_argument("--report-only", action="store_true", help="rewrite docs/benchmarks.md from the last results")
    args = parser.parse_args()
    if args.report_only:
        res = json.loads((RESULTS / "latest.json").read_text())
        res["notes"] = _notes()
        write_doc(res)
        return
    runs = 2 if args.quick else 3
    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    state = SandboxState()
    server = ThreadedServer(autotask_app(state)).start()
    tz_state = TimezestSandboxState()
    tz_server = ThreadedServer(timezest_app(tz_state)).start()
    res: dict[str, Any] = {"machine": machine(), "notes": []}
    res["config"] = ("ingress: uvicorn with uvloop/httptools, 1 or 2 processes as shown; Celery prefork workers; "
                     "Redis 7 broker; PostgreSQL 15 audit DB; quota governor on; the load generator, "
                     "PostgreSQL and Redis share the same 2 cores; defaults otherwise")
    try:
        with pg_database() as pg:
            log("intake")
            res["intake"] = intake(server, state, pg, runs, 500 if args.quick else 1500)
            log("end to end")
            res["end_to_end"] = end_to_end(server, state, pg, runs, 100 if args.quick else 200)
            log("Autotask calls per transition")
            res["calls"] = calls_per_transition(server, state, pg, (tz_server.url, tz_state), 1 if args.quick else 2)
            log("quota compliance")
            res["quota"] = quota(server, state, pg, 1000 if args.quick else 5000)
        log("memory")
        res["memory"] = memory(300 if args.quick else 1000)
    finally:
        server.stop()
        tz_server.stop()
    res["targets"] = targets(res)
    res["seconds"] = time.monotonic() - started
    res["notes"] = _notes()
    (RESULTS / "latest.json").write_text(json.dumps(res, indent=2, default=str))
    write_doc(res)
    log(f"wrote {DOC.relative_to(ROOT)} in {res['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
