"""Pipeline scenarios: end to end on both modes, calls per transition, the thread limit, recovery.

They measure whatever the pipeline does when the benchmark runs; the targets are in bench/report.py.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import httpx
from sqlmodel import select

from bench.common import add_tickets, latencies, loadgen, log, stack, summary
from bench.loadgen import percentile
from connectors.timezest.client import TimezestClient
from pipelines.audit import EventState, InboundEvent, PipelineRun
from pipelines.db import session_scope
from pipelines.timezest_poll import poll_once
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from sandboxes.timezest.app import TimezestSandboxState
from tests.stacks import Stack
from tests.support import MC_SECRET, WEBFORM_SECRET, wait_for
from workers.settings import SANDBOX_TIMEZEST_API_KEY, Settings

__all__ = ["calls_mix", "embedded_latency", "end_to_end", "recovery", "thread_limit"]

#: ATRELAY_AUTOTASK_MAX_IN_FLIGHT's default: the limit that bounds throughput at real latencies.
IN_FLIGHT_LIMIT = 3


def _all_final(s: Stack) -> bool:
    return all(EventState(r.state).final for r in s.all_rows())


def _calls(state: SandboxState) -> int:
    return sum(v for k, v in state.calls.items() if k != "total")


def _applied(db: str) -> int:
    with session_scope(db) as s:
        return len(s.exec(select(PipelineRun.id).where(PipelineRun.outcome == "applied")).all())


def end_to_end(server: ThreadedServer, state: SandboxState, pg: str, runs: int, count: int,
               burst: int) -> list[dict[str, Any]]:
    """Redis + PostgreSQL, one worker with 2 processes: latency at 20 events/s, then a burst.

    The burst also gives goal 2's second figure: Autotask calls per applied transition when
    ``burst`` events wait at once (reads can be batched only when work queues up).
    """
    rows: list[dict[str, Any]] = []
    s = stack("redis+postgresql", server, state, pg, workers=1, concurrency=2)
    try:
        p50s, p99s, rates = [], [], []
        for _ in range(runs):
            s.clean()
            first = add_tickets(state, count)
            gen = loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, count, 4, first, rate=20.0)
            assert gen["codes"].get("202", 0) == count, gen["codes"]
            s.all_final(count, timeout=600)
            lat, span = latencies(s.db)
            p50s.append(percentile(lat, 50))
            p99s.append(percentile(lat, 99))
            rates.append(len(lat) / span if span else 0.0)
        rows.append({"mode": "redis+postgresql", "processes": 2, "offered_rate": 20.0, "p50_ms": summary(p50s),
                     "p99_ms": summary(p99s), "events_per_s": summary(rates)})
        log(f"e2e redis 20/s: p99 {rows[-1]['p99_ms']['median']:.0f} ms")
        s.clean()
        first = add_tickets(state, burst)
        started = time.monotonic()
        loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, burst, 32, first)
        s.all_final(burst, timeout=900)
        elapsed = time.monotonic() - started
        calls, applied = _calls(state), _applied(s.db)
        rows.append({"mode": "redis+postgresql", "processes": 2, "offered_rate": "burst", "events": burst,
                     "events_per_s": summary([burst / elapsed]), "calls": calls, "applied": applied,
                     "calls_per_transition": calls / applied if applied else float("nan"),
                     "by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total"))})
        log(f"e2e burst of {burst}: {burst / elapsed:.1f} events/s, {calls}/{applied} calls per transition")
    finally:
        s.stop()
    return rows


def embedded_latency(server: ThreadedServer, state: SandboxState, runs: int, count: int,
                     rate: float = 5.0) -> dict[str, Any]:
    """Goal 4: `atrelay run`'s defaults (SQLite, kombu SQLAlchemy broker), accept -> applied at 5/s."""
    s = stack("embedded", server, state, None, workers=1, concurrency=2)
    try:
        p50s, p99s = [], []
        for _ in range(runs):
            s.clean()
            first = add_tickets(state, count)
            gen = loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, count, 2, first, rate=rate)
            assert gen["codes"].get("202", 0) == count, gen["codes"]
            s.all_final(count, timeout=300)
            lat, _ = latencies(s.db)
            p50s.append(percentile(lat, 50))
            p99s.append(percentile(lat, 99))
        log(f"e2e embedded {rate}/s: p50 {summary(p50s)['median']:.0f} ms p99 {summary(p99s)['median']:.0f} ms")
        return {"mode": "embedded", "offered_rate": rate, "events": count, "p50_ms": summary(p50s),
                "p99_ms": summary(p99s)}
    finally:
        s.stop()


def thread_limit(server: ThreadedServer, state: SandboxState, pg: str, count: int,
                 latency_ms: int = 150) -> list[dict[str, Any]]:
    """Goal 3: throughput against what the in-flight limit allows at ``latency_ms`` per Autotask call.

    Allowed = limit / (calls per event x latency). The sandbox enforces the limit (a request over it
    is a thread-threshold error), so limit errors are counted, not assumed.
    """
    rows = []
    default = Settings.model_fields["worker_concurrency"].default
    # The defaults first (one worker, its default pool size), then two workers sharing that many runs.
    for workers, concurrency in ((1, default), (2, max(1, default // 2))):
        s = stack("redis+postgresql", server, state, pg, workers=workers, concurrency=concurrency)
        try:
            s.clean()
            first = add_tickets(state, count)
            state.latency_ms, state.max_in_flight = latency_ms, IN_FLIGHT_LIMIT
            started = time.monotonic()
            loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, count, 8, first)
            s.all_final(count, timeout=600)
            elapsed = time.monotonic() - started
            calls = _calls(state)
            per_event = calls / count
            allowed = IN_FLIGHT_LIMIT / (per_event * latency_ms / 1000)
            # From the first event accepted to the last applied, by the audit log's clocks: the wall
            # time above also holds the load generator's start and this poll's 0.1 s steps.
            _, span = latencies(s.db)
            rate = count / span
            rows.append({"workers": workers, "concurrency": concurrency, "latency_ms": latency_ms, "events": count,
                         "wall_events_per_s": count / elapsed,
                         "events_per_s": rate, "calls_per_event": per_event, "allowed_per_s": allowed,
                         "share": rate / allowed,
                         "limit_errors": sum(v for k, v in state.errors_returned.items()
                                             if k in ("thread_threshold", "hourly_limit")),
                         "max_in_flight_seen": dict(state.max_in_flight_seen)})
            log(f"thread limit {workers}x{concurrency}: {rate:.2f} events/s of {allowed:.2f} allowed "
                f"({100 * rate / allowed:.0f} %), {rows[-1]['limit_errors']} limit errors")
        finally:
            state.latency_ms, state.max_in_flight = 0, None
            s.stop()
    return rows


def recovery(server: ThreadedServer, state: SandboxState, pg: str, runs: int, timeout: float = 60.0
             ) -> dict[str, Any]:
    """Goal 5: SIGKILL a worker mid-run; how long until every event it held is applied (beat running).

    Two workers (the killed one is not restarted): the survivor and the sweeper must finish its work.
    A run that does not finish within ``timeout`` counts as ``timeout`` and is flagged.
    """
    times: list[float] = []
    timed_out = 0
    for _ in range(runs):
        s = stack("redis+postgresql", server, state, pg, workers=2, concurrency=1, beat=True)
        try:
            s.clean()
            first = add_tickets(state, 6)
            state.latency_ms = 700  # every run is mid-call when the kill comes
            for t in range(first, first + 6):
                body = (b'{"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z", "data": {"form": "bench", '
                        b'"ticket_id": %d, "answers": {"q1": "a"}}}' % t)
                assert s.post("/webhooks/webform", body).status_code == 202
            wait_for(lambda: sum(state.in_flight.values()) >= 2, timeout=30, what="both workers mid-call")
            workers = [p for p in s.procs if p.name.startswith("worker")]
            s.kill(workers[0])
            killed = time.monotonic()
            state.latency_ms = 0

            try:
                wait_for(functools.partial(_all_final, s), timeout=timeout, what="the killed worker's events")
                times.append(time.monotonic() - killed)
            except AssertionError:
                times.append(timeout)
                timed_out += 1
            log(f"recovery after SIGKILL: {times[-1]:.1f} s")
        finally:
            state.latency_ms = 0
            s.stop()
    return {"seconds": summary(times), "timed_out": timed_out, "timeout": timeout}


def calls_mix(server: ThreadedServer, state: SandboxState, pg: str,
              tz: tuple[str, TimezestSandboxState], runs: int) -> dict[str, Any]:
    """Goal 2: Autotask calls per applied transition on the realistic mix (see the doc for the mix)."""
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
            applied, calls = _applied(s.db), _calls(state)
            ratios.append(calls / applied)
            detail = {"applied_transitions": applied, "autotask_calls": calls,
                      "by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total"))}
            log(f"calls per transition: {ratios[-1]:.2f} ({calls} calls / {applied} applied)")
    finally:
        s.stop()
    return {"ratio": summary(ratios), **detail}
