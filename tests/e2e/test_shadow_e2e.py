"""Shadow mode end to end (issue 22): real ingress and worker processes in ATRELAY_MODE=shadow against the
Autotask sandbox, a burst of mixed partner events, people acting in Autotask, `atrelay shadow report`,
then the switch to live."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from sqlmodel import select

from pipelines.audit import ShadowWrite
from pipelines.db import session_scope
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.e2e.test_autotask_e2e import act, idle, install
from tests.integration.helpers import mc_body, webform_body
from tests.stacks import Stack, start_stack
from tests.support import ROOT


def writes_reaching(stack: Stack) -> dict[str, int]:
    """Status PATCHes and note POSTs that reached the sandbox (it counts every call)."""
    calls = httpx.get(f"{stack.sandbox_url}/_sandbox/calls").json()["by_endpoint"]
    return {"patch": int(calls.get("PATCH tickets", 0)), "note": int(calls.get("POST tickets/{id}/notes", 0))}


def shadow_writes(stack: Stack) -> list[ShadowWrite]:
    with session_scope(stack.db) as s:
        return list(s.exec(select(ShadowWrite)).all())


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env={**stack.env, "COLUMNS": "250"},
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_a_shadow_week_then_live(tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState]) -> None:
    server, sandbox = autotask_server
    stack = start_stack(tmp_path, mode="embedded", sandbox_server=server, sandbox=sandbox,
                        env_extra={"ATRELAY_MODE": "shadow"})
    try:
        install(stack)  # Autotask's callouts reach the stack: what people do is heard
        burst = [("/webhooks/webform", webform_body(f"T20261126.000{n}")) for n in (1, 2, 3)] + [
            ("/webhooks/mission-control", mc_body("mc.escalated", "T20261126.0004")),
            ("/webhooks/mission-control", mc_body("mc.out_of_scope", "T20261126.0005")),
            ("/webhooks/mission-control", mc_body("mc.no_contact", "T20261126.0006")),
        ]
        for path, body in burst:
            assert stack.post(path, body).status_code == 202
        rows = stack.all_final(len(burst) + 1, timeout=90)  # and MC No Contact's follow-up
        assert {r.state for r in rows} == {"applied"}, [(r.id, r.state, r.reason) for r in rows]
        assert all((r.reason or "").startswith("shadow: nothing written") for r in rows), [r.reason for r in rows]
        # Nothing reached Autotask, and every event recorded what it would have written.
        assert writes_reaching(stack) == {"patch": 0, "note": 0}
        held = shadow_writes(stack)
        assert {r.id for r in rows} == {w.event_id for w in held}
        assert sorted(w.to_status for w in held if w.kind == "patch") == sorted([
            "Received Form Response", "Received Form Response", "Received Form Response", "Sent from MC",
            "Out of Scope", "MC No Contact", "Waiting Customer"])
        assert {sandbox.tickets[t]["status"] for t in range(50001, 50007)} == {1}  # all still New
        # People act in Autotask: on 50001 the status atrelay would have set, on 50002 another one.
        act(stack, 50001, "Received Form Response", "technician")
        act(stack, 50002, "In Progress", "technician")
        idle(stack)
        stack.all_final(len(rows) + 2, timeout=60)
        out = cli(stack, "shadow", "report", "--format", "json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert (report["agreed"], report["decided"]) == (1, 2), report
        (form,) = [r for r in report["rules"] if r["rule"] == "form.submitted"]
        assert (form["would_apply"], form["agree"], form["disagree"], form["pending"]) == (3, 1, 1, 1)
        assert form["look_at"] == ["T20261126.0002"]
        table = cli(stack, "shadow", "report")
        assert "Agreement: 1 of 2" in table.stdout and "T20261126.0002" in table.stdout, table.stdout

        # One more event accepted in shadow mode while no worker runs: it waits across the switch.
        worker = next(p for p in stack.procs if p.name.startswith("worker"))
        worker.stop()
        assert stack.post("/webhooks/webform", webform_body("T20261126.0003", when="2026-11-26T11:00:00Z")
                          ).status_code == 202
        accepted = len(stack.all_rows())
        for proc in list(stack.procs):
            proc.stop()
        stack.procs.clear()
        # Go live: the first live process says how many events accepted in shadow mode it will never write.
        stack.env["ATRELAY_MODE"] = "live"
        live = stack.start_worker()
        assert f"the {accepted} event(s) accepted in shadow mode" in live.log(), live.log()[-3000:]
        stack.start_ingress()
        waiting = stack.all_final(accepted, timeout=60)[-1]
        assert waiting.reason is not None and waiting.reason.startswith("shadow: nothing written"), waiting.reason
        assert writes_reaching(stack) == {"patch": 0, "note": 0}
        assert [w.why for w in shadow_writes(stack) if w.event_id == waiting.id] == ["accepted", "accepted"]
        # Live writes what it accepts from now on.
        assert stack.post("/webhooks/webform", webform_body("T20261126.0003", when="2026-11-26T12:00:00Z")
                          ).status_code == 202
        # The status PATCH lands before the note POST: wait for the event to end, not for the status.
        live_row = stack.all_final(accepted + 1, timeout=60)[-1]
        assert (live_row.state, sandbox.tickets[50003]["status"]) == ("applied", 29682844), live_row.reason
        assert writes_reaching(stack) == {"patch": 1, "note": 1}
    finally:
        stack.stop()
        sandbox.reset()
