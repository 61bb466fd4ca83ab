"""docs/benchmarks.md rows and sections for issues 21 (what senders send) and 24 (the embedded default
keeps up); each is absent from results older than the issue."""

from __future__ import annotations

from typing import Any

__all__ = ["embedded_burst", "section_kill_recovery", "section_wire", "targets"]


def _s(s: dict[str, float], digits: int = 0, unit: str = "") -> str:
    """``median (min-max)``, or just the value for a single run (as bench.report's)."""
    f = f"{{:.{digits}f}}"
    if s.get("runs", 1) == 1 or s["min"] == s["max"]:
        return f.format(s["median"]) + unit
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}-{f.format(s['max'])})"


def _pct(s: dict[str, float]) -> str:
    # One decimal: these rows sit near their 90 % goal, and a median of 89.8 % shown as "90 %" beside
    # "no" reads as a contradiction.
    return _s({k: 100 * v for k, v in s.items()}, 1, " %")


def _burst(res: dict[str, Any], mode: str) -> dict[str, Any] | None:
    return next((r for r in res.get("thread_limit", []) if r.get("by") == "number" and r["mode"] == mode), None)


def embedded_burst(res: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 24's figure: the embedded default's burst of forms by number against the thread limit."""
    return _burst(res, "embedded")


#: Calls per applied transition on the benchmark mix as published before issue 18's write gate
#: (docs/benchmarks.md from `make bench` on a clean clone of 05fc34d): the figure issue 18 must not
#: worsen by more than 0.1. That mix named tickets by id and had no callouts (``calls_before_21``).
CALLS_BEFORE_18 = 1.89


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    old_mix = res.get("calls_before_21")
    if old_mix:
        rows.append({"goal": "18", "what": "Calls per applied transition on the mix as it was before issue 21 (by "
                                           f"ticket id, no callouts), against {CALLS_BEFORE_18} published before "
                                           "the write gate", "target": f"<= {CALLS_BEFORE_18 + 0.1:.2f}",
                     "measured": _s(old_mix["ratio"], 2),
                     "met": old_mix["ratio"]["median"] <= CALLS_BEFORE_18 + 0.1 + 1e-9})
    flood = res.get("callout_flood")
    if flood:
        rows += [
            {"goal": "21", "what": f"A bulk edit's flood of {flood['callouts']} valid ticket callouts (Redis + "
                                   f"PostgreSQL, {flood['latency_ms']} ms): ticket reads per callout",
             "target": "<= 0.2", "measured": _s(flood["reads_per_callout"], 3),
             "met": flood["reads_per_callout"]["median"] <= 0.2},
            {"goal": "21", "what": "The same flood: share of the hourly budget it used "
                                   f"({flood['budget_per_hour']} requests)",
             "target": f"< {100 * flood['observe_share']:.0f} % (callout work's share; the rest is kept for writes)",
             "measured": f"{_s({k: 100 * v for k, v in flood['budget_share'].items()}, 1, ' %')} in "
                         f"{_s(flood['seconds'], 0, ' s')}",
             "met": flood["budget_share"]["max"] < flood["observe_share"]},
        ]
    rp = _burst(res, "redis+postgresql")
    if rp:
        rows += [
            {"goal": "21", "what": f"Burst of {rp['events']} forms by ticket number, {rp['latency_ms']} ms Autotask "
                                   f"latency (Redis + PostgreSQL, {rp['workers']} x {rp['concurrency']}): calls per "
                                   "applied transition", "target": "<= 2.2",
             "measured": _s(rp["calls_per_transition"], 2), "met": rp["calls_per_transition"]["median"] <= 2.2},
            {"goal": "21", "what": "The same burst: throughput / what the in-flight limit allows",
             "target": ">= 90 %, 0 limit errors", "measured": f"{_pct(rp['share'])}, {rp['limit_errors']} limit errors",
             "met": rp["share"]["median"] >= 0.9 and rp["limit_errors"] == 0},
        ]
    single = res.get("one_at_a_time")
    if single:
        rows.append({"goal": "21", "what": f"Forms by ticket number one at a time ({single[0]['events']} events, each "
                                           "posted once the one before is final): calls per applied transition",
                     "target": "<= 3.1",
                     "measured": "; ".join(f"{r['mode']} {_s(r['calls_per_transition'], 2)}" for r in single),
                     "met": all(r["calls_per_transition"]["median"] <= 3.1 for r in single)})
    emb = _burst(res, "embedded")
    if emb:
        rows.append({"goal": "24", "what": f"Embedded default: burst of {emb['events']} forms by ticket number, "
                                           f"{emb['latency_ms']} ms: throughput / what the in-flight limit allows",
                     "target": ">= 90 %, 0 limit errors",
                     "measured": f"{_pct(emb['share'])} ({emb['events_per_s']['median']:.2f} of "
                                 f"{emb['allowed_per_s']:.2f} events/s), {emb['limit_errors']} limit errors",
                     "met": emb["share"]["median"] >= 0.9 and emb["limit_errors"] == 0})
    for r in res.get("kill_recovery", []):
        held = "holding governor slots" if r["held"] == "governor-slots" else "holding prefetched deliveries"
        rows.append({"goal": "24", "what": f"Worker SIGKILLed {held}, {r['mode']}: its {r['events']} events applied "
                                           "(from the kill, a new worker started)",
                     "target": "<= 30 s, each once",
                     "measured": _s(r["seconds"], 1, " s") + ("" if r["exactly_once"] else ", **not** each once")
                     + (f", {r['timed_out']} run(s) not done in {r['timeout']:.0f} s" if r["timed_out"] else ""),
                     "met": r["seconds"]["max"] <= 30 and not r["timed_out"] and r["exactly_once"]})
    return rows


def section_wire(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    old_mix = res.get("calls_before_21")
    if old_mix:
        lines += ["", f"- The mix as it was before issue 21 (forms and Mission Control webhooks by ticket id, no "
                      f"callouts; one run): **{_s(old_mix['ratio'], 2)}**; {old_mix['autotask_calls']} calls for "
                      f"{old_mix['applied_transitions']} applied transitions (published before issue 18's write "
                      f"gate: {CALLS_BEFORE_18})."]
    single = res.get("one_at_a_time")
    if single:
        lines += ["", "### 3.1 One event at a time", "",
                  f"Forms by ticket number, each posted once the one before is final ({single[0]['events']} per run, "
                  f"{single[0]['latency_ms']} ms per Autotask call, one worker as shipped). Nothing waits behind a run, "
                  "so no read is shared and every number is new: one `Tickets/query` resolves the number and is the "
                  "run's read, then a PATCH and a note.", "",
                  "| Mode | Calls per transition | Accepted -> applied p50 ms | p99 ms | Calls (last run) | "
                  "Load average |", "|---|---|---|---|---|---|"]
        for r in single:
            calls = ", ".join(f"{k}: {v}" for k, v in r["by_endpoint"].items())
            lines.append(f"| {r['mode']} | {_s(r['calls_per_transition'], 2)} | {_s(r['p50_ms'])} | "
                         f"{_s(r['p99_ms'])} | {calls} | {r['loadavg']:.1f} |")
    flood = res.get("callout_flood")
    if flood:
        calls = ", ".join(f"`{k}` {v}" for k, v in flood["by_endpoint"].items()) or "none"
        lines += ["", "### 3.2 A bulk edit's flood of Autotask callouts", "",
                  f"A technician moves {flood['callouts']} tickets to In Progress at once (made in the sandbox as that "
                  "person), and the ticket callouts Autotask sends for them arrive together, signed, on 8 connections "
                  f"(Redis + PostgreSQL, one worker as shipped, {flood['latency_ms']} ms per Autotask call, the "
                  "sandbox enforcing 3 in flight). No rule acts on In Progress: what is measured is the cost of "
                  "observing, which comes out of the share of the hourly budget callout work may use "
                  f"({100 * flood['observe_share']:.0f} %; ATRELAY_AUTOTASK_WRITE_RESERVE_PERCENT keeps the rest for "
                  "status writes).", "",
                  f"- Ticket reads (GET by id or `Tickets/query`) per callout: **{_s(flood['reads_per_callout'], 3)}**; "
                  f"every Autotask call per callout: {_s(flood['calls_per_callout'], 3)}",
                  f"- Share of the hourly budget ({flood['budget_per_hour']}) used: "
                  f"{_s({k: 100 * v for k, v in flood['budget_share'].items()}, 1, ' %')}, in "
                  f"{_s(flood['seconds'], 0, ' s')} (from the first callout posted to the last observed)",
                  f"- Calls (last run): {calls}; events: {flood['states']}; limit errors: {flood['limit_errors']}; "
                  f"load average {flood['loadavg']:.1f}"]
    return lines


def section_kill_recovery(res: dict[str, Any]) -> list[str]:
    rows = res.get("kill_recovery")
    if not rows:
        return []
    lines = ["", "### 6.1 A worker killed holding governor slots or prefetched deliveries (issue 24)", "",
             f"One worker and beat with the default lease (20 s), sweep (5 s) and slot expiry (10 s); "
             f"{rows[0]['events']} forms by ticket number at {rows[0]['latency_ms']} ms per Autotask call. Holding "
             "governor slots: four runs at once, killed while at least two hold a slot. Holding prefetched "
             "deliveries: one run at a time, killed after its first PATCH, so most of the events are deliveries it "
             "had taken off the queue and not started. A new worker is started right after the SIGKILL; seconds from "
             "the kill until every event is final, the new worker's start-up included "
             "(`tests/integration/test_kill_recovery.py` asserts the same bound).", "",
             "| Mode | Held at the kill | Seconds median (min-max) | Each applied once | Runs | Load average |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        runs = str(r["seconds"]["runs"]) + (f" ({r['timed_out']} timed out)" if r["timed_out"] else "")
        lines.append(f"| {r['mode']} | {r['held']} | {_s(r['seconds'], 1)} | {'yes' if r['exactly_once'] else '**no**'} | "
                     f"{runs} | {r['loadavg']:.1f} |")
    return lines
