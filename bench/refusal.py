"""Refusal is cheaper than acceptance (issue 19, point 3): unsigned floods must not starve signed callouts.

Two measurements on one ingress process (Redis + PostgreSQL, no workers), each load from processes of its
own so their CPU is not the server's:

* **Cost**: bodies of the flood's size (256 KiB less 64 bytes) sent one at a time, first with a bogus
  ``X-Hook-Signature`` (all ``&``: refused 401), then signed genuine callouts of exactly the same size
  (their note text is ``&``: accepted 202). Server CPU per request, and wall time per request.
* **Flood**: four attacker processes (bench/flood.py) post bogus-signature bodies as fast as the server
  answers while bench/loadgen.py sends signed callouts at a steady rate; their p99 and how many took
  longer than Autotask's 10-second callout timeout, and /healthz's latency meanwhile.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from bench.common import ROOT, cpu_seconds, loadgen, log, stack
from bench.flood import BOGUS_SIGNATURE, bogus_body
from bench.loadgen import _autotask_sign, percentile
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.support import AUTOTASK_HOOK_SECRET

__all__ = ["ATTACKERS", "SIZE", "refusal"]

SIZE = 256 * 1024 - 64
ATTACKERS = 4
PATH = "/webhooks/autotask/tickets"


def _genuine(i: int, size: int) -> bytes:
    """A signed ticket callout of exactly ``size`` bytes: the padding is note-like text of ``&``."""
    head = {"Action": "Update", "Guid": "5c1e6a8e-bench-refusal", "EntityType": "Ticket", "Id": 70001 + i,
            "Fields": {"Status": 5, "Description": ""}, "EventTime": "2026-11-26T10:00:00Z",
            "SequenceNumber": i + 1, "PersonID": 30691780}
    bare = json.dumps(head, separators=(",", ":")).encode()
    head["Fields"]["Description"] = "&" * (size - len(bare))  # type: ignore[index]
    body = json.dumps(head, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def _cost(url: str, pid: int, bodies: list[tuple[bytes, dict[str, str]]], expected: int) -> dict[str, float]:
    walls: list[float] = []
    with httpx.Client(timeout=120) as client:
        before = cpu_seconds(pid)
        for body, headers in bodies:
            started = time.perf_counter()
            status = client.post(url, content=body, headers=headers).status_code
            walls.append(1000 * (time.perf_counter() - started))
            assert status == expected, status
        cpu = cpu_seconds(pid) - before
    return {"cpu_ms": 1000 * cpu / len(bodies), "wall_ms_median": statistics.median(walls)}


def _watch_health(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get(url)
            except httpx.HTTPError:
                continue
            out.append(1000 * (time.perf_counter() - started))
            stop.wait(0.25)


def refusal(server: ThreadedServer, state: SandboxState, pg: str, count: int = 40,
            genuine: int = 120, rate: float = 4.0) -> dict[str, Any]:
    s = stack("redis+postgresql", server, state, pg, workers=0, ingress_processes=1)
    try:
        url = s.ingress_url + PATH
        pid = next(p.proc.pid for p in s.procs if p.name.startswith("ingress"))
        bogus = [(bogus_body(SIZE), {"X-Hook-Signature": BOGUS_SIGNATURE, "Content-Type": "application/json"})
                 for _ in range(count)]
        signed = [(b, _autotask_sign(b, AUTOTASK_HOOK_SECRET)) for b in (_genuine(i, SIZE) for i in range(count))]
        refused = _cost(url, pid, bogus, 401)
        accepted = _cost(url, pid, signed, 202)
        log(f"refusal cost: refused {refused['cpu_ms']:.1f} ms CPU ({refused['wall_ms_median']:.0f} ms wall), "
            f"accepted {accepted['cpu_ms']:.1f} ms CPU ({accepted['wall_ms_median']:.0f} ms wall) per 256 KiB request")
        s.clean()
        seconds = genuine / rate + 8
        floods = [subprocess.Popen([sys.executable, "-m", "bench.flood", "--url", url, "--seconds", str(seconds),
                                    "--size", str(SIZE)], cwd=ROOT, stdout=subprocess.PIPE)
                  for _ in range(ATTACKERS)]
        health: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_health, args=(s.ingress_url + "/healthz", stop, health))
        try:
            time.sleep(2)  # the flood is at full strength before the first genuine callout
            watcher.start()
            result = loadgen(url, AUTOTASK_HOOK_SECRET, genuine, 8, 80001, rate=rate, kind="autotask")
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join()
            attacks = []
            for proc in floods:
                out, _ = proc.communicate(timeout=seconds + 120)
                attacks.append(json.loads(out) if out else {})
        row = {
            "size": SIZE, "attackers": ATTACKERS, "genuine": genuine, "rate": rate,
            "refused_cpu_ms": refused["cpu_ms"], "accepted_cpu_ms": accepted["cpu_ms"],
            "refused_wall_ms": refused["wall_ms_median"], "accepted_wall_ms": accepted["wall_ms_median"],
            "genuine_codes": result["codes"], "genuine_p50_ms": result["p50_ms"], "genuine_p99_ms": result["p99_ms"],
            "genuine_max_ms": result.get("max_ms"), "genuine_over_10s": result.get("over_10s"),
            "attack_requests": sum(int(a.get("requests", 0)) for a in attacks),
            "attack_mib_per_s": sum(int(a.get("bytes", 0)) for a in attacks) / seconds / 2**20,
            "healthz_p50_ms": percentile(health, 50), "healthz_p99_ms": percentile(health, 99),
        }
        log(f"refusal flood: genuine callouts p99 {row['genuine_p99_ms']:.0f} ms, max {row['genuine_max_ms']:.0f} ms, "
            f"{row['genuine_over_10s']} over 10 s, codes {row['genuine_codes']}; {row['attack_requests']} refused "
            f"({row['attack_mib_per_s']:.1f} MiB/s); /healthz p50 {row['healthz_p50_ms']:.0f} ms")
        return row
    finally:
        s.stop()
