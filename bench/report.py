"""docs/benchmarks.md and the README's one-line summary, from one run's results (bench/results/latest.json)."""

from __future__ import annotations

import re
from typing import Any

from bench import report_wire
from bench.common import ROOT

__all__ = ["DOC", "README", "targets", "write_doc", "write_readme"]

DOC = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
CHANGES = ROOT / "bench" / "changes.md"
NOTES = ROOT / "bench" / "notes.md"


def _s(s: dict[str, float], digits: int = 0, unit: str = "") -> str:
    """``median (min-max)``, or just the value for a single run."""
    f = f"{{:.{digits}f}}"
    if s.get("runs", 1) == 1 or s["min"] == s["max"]:
        return f.format(s["median"]) + unit
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}-{f.format(s['max'])})"


def _one(v: float) -> dict[str, float]:
    return {"median": v, "min": v, "max": v, "runs": 1}


def _ratio(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """a / b per statistic: median over median, worst (min/max) and best (max/min)."""
    return {"median": a["median"] / b["median"], "min": a["min"] / b["max"], "max": a["max"] / b["min"],
            "runs": a.get("runs", 1)}


def _intake(res: dict[str, Any], mode: str, kind: str = "standard-webhooks") -> dict[str, Any]:
    return next(r for r in res["intake"] if r["mode"] == mode and r["kind"] == kind)


def _burst(res: dict[str, Any], by: str) -> dict[str, Any]:
    """Section 2's burst whose forms name their ticket ``by`` number or id (results before issue 21: by id)."""
    return next(r for r in res["end_to_end"] if r["offered_rate"] == "burst" and r.get("by", "id") == by)


def _share(r: dict[str, Any]) -> str:
    """A burst against the thread limit: share (events/s of allowed events/s), limit errors."""
    return (f"{_s({k: 100 * v for k, v in r['share'].items()}, 0, ' %')} "
            f"({r['events_per_s']['median']:.2f} of {r['allowed_per_s']:.2f} events/s), "
            f"{r['limit_errors']} limit errors")


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal of issues 14, 19 (point 3), 21 and 24 as a row: what, target, measured median (min-max), met."""
    rp, emb = _intake(res, "redis+postgresql"), _intake(res, "embedded")
    cb = _intake(res, "redis+postgresql", "autotask-callouts")
    floor = next(f for f in res["floor"] if f["backend"] == "sqlite")
    rp_share, emb_share = _ratio(rp["rps"], floor["rps"]), _ratio(emb["rps"], floor["rps"])
    burst = _burst(res, "id")
    by_id = [r for r in res["thread_limit"] if r["by"] == "id"]
    tl = by_id[0]
    tl_best = max(by_id, key=lambda r: r["share"]["median"])
    rec, emb_e2e, mem = res["recovery"], res["embedded_e2e"], res["memory"]
    e2e = next(r for r in res["end_to_end"] if r["offered_rate"] != "burst")
    rec_text = _s(rec["seconds"], 1, " s") + (f", {rec['timed_out']} run(s) not done in {rec['timeout']:.0f} s"
                                              if rec["timed_out"] else "")
    return [
        {"goal": "1", "what": "Intake, signed webhooks/s, Redis + PostgreSQL, 1 process, 32 connections",
         "target": ">= 1000/s", "measured": _s(rp["rps"], 0, "/s"), "met": rp["rps"]["median"] >= 1000},
        {"goal": "1", "what": "Intake p99 at that load", "target": "< 50 ms",
         "measured": _s(rp["p99_ms"], 1, " ms"), "met": rp["p99_ms"]["median"] < 50},
        {"goal": "1", "what": "Intake as a share of the verify-and-commit floor (SQLite floor), Redis + PostgreSQL",
         "target": ">= 50 %", "measured": _s({k: 100 * v for k, v in rp_share.items()}, 0, " %"),
         "met": rp_share["median"] >= 0.5},
        {"goal": "1", "what": "Intake as a share of the same floor, embedded default", "target": ">= 50 %",
         "measured": _s({k: 100 * v for k, v in emb_share.items()}, 0, " %"), "met": emb_share["median"] >= 0.5},
        {"goal": "1", "what": "Autotask callout intake, signed callouts/s (Redis + PostgreSQL, 32 connections)",
         "target": ">= 1000/s, p99 < 50 ms", "measured": f"{_s(cb['rps'], 0, '/s')}, p99 {_s(cb['p99_ms'], 1, ' ms')}",
         "met": cb["rps"]["median"] >= 1000 and cb["p99_ms"]["median"] < 50},
        {"goal": "2", "what": "Autotask calls per applied transition, benchmark mix", "target": "<= 2.2",
         "measured": _s(res["calls"]["ratio"], 2), "met": res["calls"]["ratio"]["median"] <= 2.2},
        {"goal": "2", "what": f"Autotask calls per applied transition, {burst['events']}-event burst by ticket id "
                              "(the easier input: no number to resolve)",
         "target": "<= 2.05", "measured": _s(_one(burst["calls_per_transition"]), 2),
         "met": burst["calls_per_transition"] <= 2.05},
        {"goal": "3", "what": f"Throughput / what the in-flight limit allows, defaults ({tl['workers']} worker x "
                              f"{tl['concurrency']}), {tl['latency_ms']} ms Autotask latency, {tl['events']} forms by "
                              "ticket id (the easier input)",
         "target": ">= 90 %, 0 limit errors", "measured": _share(tl),
         "met": tl["share"]["median"] >= 0.9 and tl["limit_errors"] == 0},
        {"goal": "3", "what": f"The same, best configuration measured ({tl_best['workers']} worker(s) x "
                              f"{tl_best['concurrency']})", "target": ">= 90 %, 0 limit errors",
         "measured": f"{_s({k: 100 * v for k, v in tl_best['share'].items()}, 0, ' %')}, "
                     f"{tl_best['limit_errors']} limit errors",
         "met": tl_best["share"]["median"] >= 0.9 and tl_best["limit_errors"] == 0},
        {"goal": "3", "what": "Limit errors under quota enforcement (quota run, section 5)", "target": "0",
         "measured": str(sum(res["quota"]["limit_errors"].values())), "met": not res["quota"]["limit_errors"]},
        {"goal": "4", "what": f"Embedded end-to-end p99 at {emb_e2e['offered_rate']:.0f} events/s",
         "target": "< 300 ms", "measured": _s(emb_e2e["p99_ms"], 0, " ms"), "met": emb_e2e["p99_ms"]["median"] < 300},
        {"goal": "5", "what": "A SIGKILLed worker's events applied again (from the kill)", "target": "<= 30 s",
         "measured": rec_text, "met": rec["seconds"]["median"] <= 30 and not rec["timed_out"]},
        {"goal": "6", "what": "Idle memory of `atrelay run` (PSS; USS reported)", "target": "< 250 MB PSS",
         "measured": f"{mem['idle_pss_mb']:.0f} MB PSS, {mem['idle_uss_mb']:.0f} MB USS",
         "met": mem["idle_pss_mb"] < 250},
        *([{"goal": "22", "what": "`atrelay run` again right after Ctrl-C, to its banner (ready), sandboxes, "
                                 "nothing configured", "target": "< 15 s",
            "measured": f"{_s(res['restart']['restart_s'], 1, ' s')} (first start "
                        f"{_s(res['restart']['first_start_s'], 1, ' s')})",
            "met": res["restart"]["restart_s"]["median"] < 15}] if "restart" in res else []),
        {"goal": "-", "what": "End-to-end p99 at 20 events/s, Redis + PostgreSQL, 0 ms Autotask latency",
         "target": "< 250 ms", "measured": _s(e2e["p99_ms"], 0, " ms"), "met": e2e["p99_ms"]["median"] < 250},
        *_refusal_targets(res),
        *report_wire.targets(res),
    ]


def _refusal_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's point 3 (bench/refusal.py); absent from results older than it."""
    r = res.get("refusal")
    if r is None:
        return []
    codes = r["genuine_codes"]
    accepted = codes.get("202", 0)
    ratio = r["refused_cpu_ms"] / r["accepted_cpu_ms"]
    return [
        {"goal": "19.3", "what": f"Signed callouts at {r['rate']:.0f}/s while {r['attackers']} clients send "
                                 f"{r['size'] // 1024} KiB bogus-signature bodies as fast as they can",
         "target": "p99 < 1 s, none over 10 s",
         "measured": f"p99 {r['genuine_p99_ms']:.0f} ms, max {r['genuine_max_ms']:.0f} ms, {r['genuine_over_10s']} over "
                     f"10 s, {accepted} of {r['genuine']} accepted",
         "met": r["genuine_p99_ms"] < 1000 and r["genuine_over_10s"] == 0 and accepted == r["genuine"]},
        {"goal": "19.3", "what": f"Server CPU of a refused {r['size'] // 1024} KiB request / an accepted one of the "
                                 "same size", "target": "<= 1.0",
         "measured": f"{ratio:.2f} ({r['refused_cpu_ms']:.1f} / {r['accepted_cpu_ms']:.1f} ms)", "met": ratio <= 1.0},
    ]


def _section_intake(res: dict[str, Any]) -> list[str]:
    lines = ["## 1. Intake (32 connections, one server process, no workers running)", "",
             "The floor (`bench/floor.py`): Starlette, verify the Standard Webhooks signature, INSERT and COMMIT "
             "one row per request; no validation, no refusal records, no broker. Measured in this run.", "",
             "| Server | Database / broker | Requests | req/s median (min-max) | p50 ms | p99 ms median (min-max) | "
             "server CPU ms per request |", "|---|---|---|---|---|---|---|"]
    for f in res["floor"]:
        lines.append(f"| floor | {f['backend']} | signed Standard Webhooks | {_s(f['rps'])} | "
                     f"{f['p50_ms']['median']:.1f} | {_s(f['p99_ms'], 1)} | {_s(f['cpu_ms'], 2)} |")
    for r in res["intake"]:
        db = "SQLite / kombu SQLAlchemy" if r["mode"] == "embedded" else "PostgreSQL / Redis"
        kind = "signed Standard Webhooks" if r["kind"] == "standard-webhooks" else "signed Autotask callouts"
        lines.append(f"| atrelay ingress ({r['mode']}) | {db} | {kind} | {_s(r['rps'])} | "
                     f"{r['p50_ms']['median']:.1f} | {_s(r['p99_ms'], 1)} | {_s(r['cpu_ms'], 2)} |")
    return lines


def _section_pipeline(res: dict[str, Any]) -> list[str]:
    lines = ["", "## 2. End to end (accepted -> applied)", "",
             "Forms name their ticket by number, as the real form does; the second burst names it by id, the "
             "easier input kept to compare with runs before issue 21.", "",
             "| Mode | Workers x runs at once | Offered | p50 ms | p99 ms median (min-max) | events/s |", "|---|---|---|---|---|---|"]
    e = res["embedded_e2e"]
    lines.append(f"| embedded | 1 x 2 | {e['offered_rate']:.0f}/s ({e['events']} events) | {e['p50_ms']['median']:.0f} | "
                 f"{_s(e['p99_ms'])} | - |")
    for r in res["end_to_end"]:
        if r["offered_rate"] == "burst":
            by = "by ticket number" if r.get("by", "id") == "number" else "by ticket id (easier)"
            lines.append(f"| {r['mode']} | 1 x {r['processes']} | burst of {r['events']} {by} | - | - | "
                         f"{_s(r['events_per_s'], 1)} |")
        else:
            lines.append(f"| {r['mode']} | 1 x {r['processes']} | {r['offered_rate']:.0f}/s | {r['p50_ms']['median']:.0f} | "
                         f"{_s(r['p99_ms'])} | {_s(r['events_per_s'], 1)} |")
    c = res["calls"]
    bursts = [r for r in res["end_to_end"] if r["offered_rate"] == "burst"]
    lines += ["", "## 3. Autotask calls per applied transition", "",
              "Mix, sent as the senders send it: 100 web forms and 50 Mission Control webhooks (escalated, out of "
              "scope, and no contact with its follow-up to Waiting Customer) naming their ticket by number; 20 forms "
              "whose ticket already has the status; 30 duplicate deliveries; 30 of Mission Control's own status "
              "changes (10 of each) made in the sandbox as Mission Control and posted as Autotask ticket callouts; 20 "
              "new-user forms e-mailed into their tickets (a contact's note) and posted as note callouts; 30 TimeZest "
              "requests polled through sent and scheduled. Bursts: section 2's.", "",
              f"- Mix: **{_s(c['ratio'], 2)}**; {c['autotask_calls']} calls for {c['applied_transitions']} applied "
              "transitions in the last run."]
    for b in bursts:
        by = "by ticket number" if b.get("by", "id") == "number" else "by ticket id (easier)"
        lines.append(f"- Burst of {b['events']} {by}: **{b['calls_per_transition']:.2f}**; {b['calls']} calls for "
                     f"{b['applied']} applied transitions.")
    heads = ["Mix (last run)"] + [f"Burst by {b.get('by', 'id')}" for b in bursts]
    lines += ["", f"| Call | {' | '.join(heads)} |", "|---|" + "---|" * len(heads)]
    for k in sorted(set(c["by_endpoint"]).union(*(b["by_endpoint"] for b in bursts))):
        cells = [c["by_endpoint"].get(k, 0)] + [b["by_endpoint"].get(k, 0) for b in bursts]
        lines.append(f"| `{k}` | {' | '.join(str(v) for v in cells)} |")
    lines += report_wire.section_wire(res)
    lines += ["", "## 4. The thread limit (sandbox enforcing 3 requests in flight, 150 ms per call)", "",
              "A burst of forms posted at once (8 connections); ingress, worker(s) and beat as separate processes. "
              "Allowed = limit / (calls per event x latency); "
              "events/s over the audit log's span (first event accepted to the last applied). Defaults otherwise: "
              "1 x 4 is `atrelay worker` as shipped (ATRELAY_WORKER_CONCURRENCY runs on ATRELAY_WORKER_POOL "
              "threads). By number: what the form sends (issue 21's goal, and issue 24's figure for the embedded "
              "default), repeated in one stack; by id: the easier input, one run each, kept to compare with earlier "
              "runs.", "",
              "| Mode | Tickets named by | Workers x concurrency | Events | events/s | Calls per transition | "
              "Allowed events/s | Share median (min-max) | Limit errors | Most in flight | Load average |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["thread_limit"]:
        lines.append(f"| {r['mode']} | {r['by']} | {r['workers']} x {r['concurrency']} | {r['events']} | "
                     f"{_s(r['events_per_s'], 2)} | {_s(r['calls_per_transition'], 2)} | {r['allowed_per_s']:.2f} | "
                     f"{_s({k: 100 * v for k, v in r['share'].items()}, 0, ' %')} | {r['limit_errors']} | "
                     f"{r['most_in_flight']} | {r['loadavg']:.1f} |")
    q = res["quota"]
    rec = res["recovery"]
    lines += ["", "## 5. Quota compliance", "",
              f"{q['events']} events; sandbox enforcing 3 in-flight requests and {q['sandbox_limit_per_hour']} "
              f"requests/hour; atrelay budget {q['budget_per_hour']}/hour; 2 workers x 2 runs at once.", "",
              f"- Limit errors returned by the sandbox: **{sum(q['limit_errors'].values())}** {q['limit_errors'] or ''}",
              f"- Applied: {q['applied']} of {q['events']} in {q['seconds']:.0f} s; {q['autotask_calls']} Autotask calls "
              f"({q['autotask_calls'] / q['seconds']:.1f}/s)",
              f"- Most requests in flight: {q['max_in_flight_seen']}",
              "", "## 6. Recovery from a killed worker", "",
              "Two workers (1 run at once each) and beat; 6 events at 700 ms per Autotask call; one worker is SIGKILLed "
              "(with its pool) while both are mid-call and not restarted; time from the kill until every event is final.",
              "", f"- Seconds: **{_s(rec['seconds'], 1)}** over {rec['seconds']['runs']} run(s)"
              + (f"; {rec['timed_out']} run(s) not finished within {rec['timeout']:.0f} s (counted as "
                 f"{rec['timeout']:.0f} s)" if rec["timed_out"] else "")]
    lines += report_wire.section_kill_recovery(res)
    return lines


def _section_refusal(res: dict[str, Any]) -> list[str]:
    """Section 8 (bench/refusal.py); absent from results older than it."""
    r = res.get("refusal")
    if r is None:
        return []
    return ["", "## 8. Refusal under a bogus-signature flood (Autotask callout endpoint)", "",
            f"One ingress process, Redis + PostgreSQL. Cost: {r['size']}-byte bodies one at a time, all `&`, with a "
            "wrong `X-Hook-Signature` (refused), then signed callouts of the same size (accepted). Flood: "
            f"{r['attackers']} processes post the bogus body as fast as the server answers while signed callouts "
            f"arrive at {r['rate']:.0f}/s.", "",
            "| Figure | Value |", "|---|---|",
            f"| Server CPU per refused request | {r['refused_cpu_ms']:.1f} ms ({r['refused_wall_ms']:.0f} ms wall) |",
            f"| Server CPU per accepted request | {r['accepted_cpu_ms']:.1f} ms ({r['accepted_wall_ms']:.0f} ms wall) |",
            f"| Signed callouts during the flood | p50 {r['genuine_p50_ms']:.0f} ms, p99 {r['genuine_p99_ms']:.0f} ms, "
            f"max {r['genuine_max_ms']:.0f} ms, {r['genuine_over_10s']} over 10 s, answers {r['genuine_codes']} |",
            f"| Bogus requests refused meanwhile | {r['attack_requests']} ({r['attack_mib_per_s']:.1f} MiB/s) |",
            f"| /healthz during the flood | p50 {r['healthz_p50_ms']:.0f} ms, p99 {r['healthz_p99_ms']:.0f} ms |"]


def write_doc(res: dict[str, Any]) -> None:
    m = res["machine"]
    lines = ["# Benchmarks", "",
             "Generated by `make bench` (`bench/run.py`); do not edit by hand. Figures from one run: medians of "
             "the repeats with min and max. Load comes from a separate process (`bench/loadgen.py`), every request "
             "signed as its sender signs it; Autotask is the bundled sandbox, which counts the calls it receives.", "",
             f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, {m['platform']}",
             f"- Date: {m['date']}; the run took {res['seconds'] / 60:.1f} min"
             f"{' (--quick: a smoke run, fewer runs and events)' if res.get('quick') else ''}; load average at the start "
             f"{m.get('loadavg', '?')} (other work on the machine skews every figure)",
             f"- Code: commit {m.get('commit', '?')} (the tree `make bench` ran on)",
             *([f"- Meanwhile on the machine: {res['note']}"] if res.get("note") else []),
             f"- Configuration: {res['config']}", "",
             "## Summary against the goals (issues 14, 19, 21 and 24)", "",
             "| Goal | What | Target | Measured: median (min-max) | Met |", "|---|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['goal']} | {t['what']} | {t['target']} | {t['measured']} | "
                     f"{'yes' if t['met'] else '**no**'} |")
    lines += ["", *_section_intake(res), *_section_pipeline(res), *_section_refusal(res)]
    mem = res["memory"]
    lines += ["", "## 7. Memory of `atrelay run` (supervisor, ingress, worker with its default pool, embedded beat)",
              "", "| State | RSS MB (sum) | PSS MB (shared pages counted once) | USS MB (private pages only) |",
              "|---|---|---|---|",
              f"| idle | {mem['idle_rss_mb']:.0f} | {mem['idle_pss_mb']:.0f} | {mem['idle_uss_mb']:.0f} |",
              f"| under load (peak PSS) | {mem['load_rss_mb']:.0f} | {mem['load_pss_mb']:.0f} | {mem['load_uss_mb']:.0f} |",
              "", f"The bundled sandboxes add {mem['sandboxes_rss_mb']:.0f} MB RSS and are not counted above. Idle, the "
              f"whole process tree (sandboxes included) used {mem.get('idle_cpu_percent', float('nan')):.1f} % of one "
              "core over 10 s (the embedded worker polls its broker table every 50 ms).", ""]
    if CHANGES.exists():
        lines += ["## Before and after each change", ""]
        lines += [line for line in CHANGES.read_text().splitlines() if not line.startswith("# ")] + [""]
    notes = [line[2:] for line in NOTES.read_text().splitlines() if line.startswith("- ")] if NOTES.exists() else []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    DOC.write_text("\n".join(lines))


def headline(res: dict[str, Any]) -> str:
    """One line for the README, from the same results as the doc."""
    goals = [t for t in res["targets"] if t["goal"] != "-"]
    rp, m = _intake(res, "redis+postgresql"), res["machine"]
    emb = report_wire.embedded_burst(res)
    missed = [t for t in goals if not t["met"]]
    return (f"Last run ({m['date']}, commit {m.get('commit', '?')}, {m['cores']} cores): "
            f"{rp['rps']['median']:.0f} signed webhooks/s on one "
            f"ingress process with p99 {rp['p99_ms']['median']:.0f} ms (Redis + PostgreSQL, 32 connections); "
            f"embedded end-to-end p99 {res['embedded_e2e']['p99_ms']['median']:.0f} ms at 5 events/s; "
            f"{res['calls']['ratio']['median']:.2f} Autotask calls per transition on a mix sent as the senders send it"
            + (f"; a burst of {emb['events']} forms by ticket number at {100 * emb['share']['median']:.1f} % of what "
               f"Autotask's thread limit allows on the embedded default" if emb else "")
            + f"; `atrelay run` idle at {res['memory']['idle_pss_mb']:.0f} MB PSS; "
            f"{sum(1 for t in goals if t['met'])} of {len(goals)} goal rows met"
            + (" (not met: " + "; ".join(f"goal {t['goal']}, {t['target']}: {t['measured']}" for t in missed) + ")"
               if missed else "") + ".")


_INTRO = ("`make bench` (about 20 minutes; needs PostgreSQL and Redis like the tests) measures intake against "
          "a verify-and-commit floor, end-to-end latency on both modes, Autotask calls per transition (on a mix sent "
          "as the senders send it, one event at a time, and a bulk edit's flood of callouts), bursts against the "
          "thread limit on both modes, quota compliance, recovery from a killed worker on both modes, refusal under "
          "a bogus-signature flood and memory, and rewrites [docs/benchmarks.md](docs/benchmarks.md) (every goal as "
          "a row) and the line below.")


def write_readme(res: dict[str, Any]) -> None:
    """Regenerate the README's "## Benchmarks" section: the fixed intro and the one-line summary."""
    text = README.read_text()
    body = f"{_INTRO}\n\n{headline(res)}\n"
    text, found = re.subn(r"(## Benchmarks\n\n).*?(\n## )", lambda mm: mm.group(1) + body + mm.group(2), text,
                          count=1, flags=re.DOTALL)
    if found:
        README.write_text(text)
