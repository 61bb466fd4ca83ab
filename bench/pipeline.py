"""Pipeline scenarios: end to end on both modes, calls per transition, bursts against the thread limit.

They measure whatever the pipeline does when the benchmark runs; the targets are in bench/report.py.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import httpx
from sqlmodel import select

from bench import wire
from bench.common import add_tickets, latencies, loadgen, log, stack, summary
from bench.loadgen import percentile
from connectors.timezest.client import TimezestClient
from pipelines.audit import InboundEvent, PipelineRun
from pipelines.db import session_scope
from pipelines.timezest_poll import poll_once
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from sandboxes.timezest.app import TimezestSandboxState
from tests.support import AUTOTASK_HOOK_SECRET, MC_SECRET, WEBFORM_SECRET, wait_for
from workers.settings import SANDBOX_TIMEZEST_API_KEY, Settings

__all__ = ["calls_mix", "embedded_latency", "end_to_end", "thread_limit"]

#: ATRELAY_AUTOTASK_MAX_IN_FLIGHT's default: the limit that bounds throughput at real latencies.
IN_FLIGHT_LIMIT = 3


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
        # By number (what forms send), then by id: the easier case, kept to compare with earlier runs.
        for by in ("number", "id"):
            s.clean()
            first = add_tickets(state, burst)
            started = time.monotonic()
            gen = loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, burst, 32, first, by=by)
            assert gen["codes"] == {"202": burst}, gen["codes"]
            s.all_final(burst, timeout=900)
            elapsed = time.monotonic() - started
            calls, applied = _calls(state), _applied(s.db)
            rows.append({"mode": "redis+postgresql", "processes": 2, "offered_rate": "burst", "events": burst,
                         "by": by, "events_per_s": summary([burst / elapsed]), "calls": calls, "applied": applied,
                         "calls_per_transition": calls / applied if applied else float("nan"),
                         "by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total")),
                         "loadavg": os.getloadavg()[0]})
            log(f"e2e burst of {burst} by {by}: {burst / elapsed:.1f} events/s, {calls}/{applied} calls per "
                f"transition, load {os.getloadavg()[0]:.1f}")
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


#: The bursts against the in-flight limit: (mode, workers, runs at once per worker, how the forms name
#: their ticket). By number is what a real form sends; by id is the easier case kept for comparison
#: (no number to resolve: the first run's read already knows which tickets the others want).
BURSTS: tuple[tuple[str, int, int | None, str], ...] = (
    ("redis+postgresql", 1, None, "number"),
    ("embedded", 1, None, "number"),
    ("redis+postgresql", 1, None, "id"),
    ("redis+postgresql", 2, None, "id"),
)


def thread_limit(server: ThreadedServer, state: SandboxState, pg: str, count: int, runs: int = 1,
                 latency_ms: int = 150, by_id_count: int | None = None,
                 modes: tuple[str, ...] = ("redis+postgresql", "embedded")) -> list[dict[str, Any]]:
    """Goal 3 (and issue 24's embedded figure): throughput against what the in-flight limit allows at
    ``latency_ms`` per Autotask call, for a burst of ``count`` forms posted at once.

    Allowed = limit / (calls per event x latency). The sandbox enforces the limit (a request over it
    is a thread-threshold error), so limit errors are counted, not assumed. The by-number bursts are
    repeated ``runs`` times in one stack; the by-id ones (``by_id_count`` forms) run once.
    """
    rows = []
    default = Settings.model_fields["worker_concurrency"].default
    for mode, workers, concurrency, by in BURSTS:
        if mode not in modes:
            continue
        per_worker = concurrency or (default if workers == 1 else max(1, default // workers))
        events = count if by == "number" else (by_id_count or count)
        # With beat, as deployed: ingress, worker(s) and beat as separate processes (`atrelay run`'s layout).
        s = stack(mode, server, state, pg if mode != "embedded" else None, workers=workers, concurrency=per_worker,
                  beat=True)
        try:
            shares, rates, per_event, per_transition = [], [], [], []
            limit_errors, most_in_flight = 0, 0  # over every run (the sandbox's counters restart with each)
            for _ in range(runs if by == "number" else 1):
                s.clean()
                first = add_tickets(state, events)
                state.latency_ms, state.max_in_flight = latency_ms, IN_FLIGHT_LIMIT
                gen = loadgen(s.ingress_url + "/webhooks/webform", WEBFORM_SECRET, events, 8, first, by=by)
                assert gen["codes"] == {"202": events}, gen["codes"]
                s.all_final(events, timeout=900)
                calls, applied = _calls(state), _applied(s.db)
                per_event.append(calls / events)
                per_transition.append(calls / applied if applied else float("nan"))
                allowed = IN_FLIGHT_LIMIT / (per_event[-1] * latency_ms / 1000)
                # From the first event accepted to the last applied, by the audit log's clocks (the load
                # generator's start and the poll for "all final" are not the pipeline's time).
                _, span = latencies(s.db)
                rates.append(events / span)
                shares.append(rates[-1] / allowed)
                limit_errors += sum(v for k, v in state.errors_returned.items()
                                    if k in ("thread_threshold", "hourly_limit"))
                most_in_flight = max(most_in_flight, *state.max_in_flight_seen.values(), 0)
                log(f"thread limit {mode} {workers}x{per_worker} by {by}: {rates[-1]:.2f} events/s of {allowed:.2f} "
                    f"allowed ({100 * shares[-1]:.0f} %), {per_transition[-1]:.2f} calls per transition, "
                    f"load {os.getloadavg()[0]:.1f}")
            rows.append({"mode": mode, "by": by, "workers": workers, "concurrency": per_worker,
                         "latency_ms": latency_ms, "events": events, "events_per_s": summary(rates),
                         "calls_per_event": summary(per_event), "calls_per_transition": summary(per_transition),
                         "allowed_per_s": IN_FLIGHT_LIMIT / (statistics.median(per_event) * latency_ms / 1000),
                         "share": summary(shares),
                         "limit_errors": limit_errors, "most_in_flight": most_in_flight,
                         "by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total")),
                         "loadavg": os.getloadavg()[0]})
        finally:
            state.latency_ms, state.max_in_flight = 0, None
            s.stop()
    return rows


def calls_mix(server: ThreadedServer, state: SandboxState, pg: str,
              tz: tuple[str, TimezestSandboxState], runs: int, as_sent: bool = True) -> dict[str, Any]:
    """Goal 2: Autotask calls per applied transition on the realistic mix (see the doc for the mix).

    ``as_sent=False`` is the mix as it was before issue 21 (forms and Mission Control webhooks by
    ticket id, no callouts): the same input as the figures published before, for issue 18's "not worse
    by more than 0.1".
    """
    tz_url, tz_state = tz
    by = "number" if as_sent else "id"
    events = 170 + (50 if as_sent else 0)  # at least this many rows before TimeZest's (follow-ups come on top)
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
            mc_own = add_tickets(state, 30)
            emailed = add_tickets(state, 20)
            # Forms and Mission Control's webhooks name their ticket by number, as the real senders do.
            loadgen(url + "webform", WEBFORM_SECRET, 100, 8, forms, by=by)
            loadgen(url + "mission-control", MC_SECRET, 50, 8, mc, kind="mc", by=by)
            loadgen(url + "webform", WEBFORM_SECRET, 20, 8, preset, by=by)
            if as_sent:
                # Mission Control's own status changes and the e-mailed form: Autotask's callouts (by id).
                callouts = [c for i, label in enumerate(("Sent from MC", "Out of Scope", "MC No Contact"))
                            for c in wire.status_callouts(state, list(range(mc_own + 10 * i, mc_own + 10 * i + 10)),
                                                          label, "mission-control")]
                notes = wire.emailed_forms(state, list(range(emailed, emailed + 20)))
                loadgen(url + "autotask/tickets", AUTOTASK_HOOK_SECRET, 30, 8, mc_own, kind="autotask",
                        bodies=callouts)
                loadgen(url + "autotask/notes", AUTOTASK_HOOK_SECRET, 20, 8, emailed, kind="autotask", bodies=notes)
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
            s.all_final(events + 30, timeout=300)
            for r in requests:
                tz_state.transition(r["id"], "scheduled")
            poll_once(s.db, client, s.enqueue)
            client.close()
            s.all_final(events + 60, timeout=300)
            wait_for(lambda: all(r.state in ("applied", "skipped", "dead", "ignored") for r in s.all_rows()),
                     timeout=120, what="follow-ups")
            applied, calls = _applied(s.db), _calls(state)
            ratios.append(calls / applied)
            detail = {"applied_transitions": applied, "autotask_calls": calls,
                      "by_endpoint": dict(sorted((k, v) for k, v in state.calls.items() if k != "total"))}
            log(f"calls per transition ({'as sent' if as_sent else 'the mix before issue 21'}): {ratios[-1]:.2f} "
                f"({calls} calls / {applied} applied), "
                f"load {os.getloadavg()[0]:.1f}")
    finally:
        s.stop()
    return {"ratio": summary(ratios), **detail}
