"""The commands a person runs: `atrelay run` with no configuration, `send`, `events`, `migrate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from pipelines.schema import head_revision, upgrade
from sandboxes.common.server import free_port
from tests.support import ROOT, Proc, wait_for


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env.update({"ATRELAY_VAR_DIR": str(tmp / "var"), "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra})
    return env


def atrelay(tmp: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=_env(tmp, **extra), cwd=tmp,
                          capture_output=True, text=True, timeout=120)


def test_run_send_events_with_no_configuration(tmp_path: Path) -> None:
    ports = {"port": free_port(), "at": free_port(), "tz": free_port()}
    run = Proc("atrelay-run", ["run", "--port", str(ports["port"]), "--autotask-sandbox-port", str(ports["at"]),
                               "--timezest-sandbox-port", str(ports["tz"])],
               _env(tmp_path, ATRELAY_TIMEZEST_POLL_SECONDS="5"), tmp_path)
    try:
        run.wait_log("atrelay is running", timeout=120)
        banner = run.log()
        assert "using the bundled Autotask sandbox" in banner
        assert f"http://127.0.0.1:{ports['port']}" in banner
        assert f"Dashboard: http://127.0.0.1:{ports['port']}/ops" in banner
        sent = atrelay(tmp_path, "send", str(ROOT / "samples" / "webform-new-user.json"),
                       "--url", f"http://127.0.0.1:{ports['port']}")
        assert sent.returncode == 0, sent.stderr
        assert '"status":"accepted"' in sent.stdout

        def applied() -> bool:
            ticket = httpx.get(f"http://127.0.0.1:{ports['at']}/_sandbox/tickets/50001").json()["ticket"]
            return bool(ticket["statusLabel"] == "Received Form Response")

        wait_for(applied, timeout=60, what="the sandbox ticket to change")
        # Beat polls the bundled TimeZest sandbox; a link sent there reaches the Autotask sandbox.
        tz = f"http://127.0.0.1:{ports['tz']}/_sandbox/scheduling_requests"
        request_id = httpx.post(tz, json={"ticket_id": 50004}).json()["id"]
        httpx.post(f"{tz}/{request_id}/transition", json={"status": "sent"}).raise_for_status()

        def link_sent() -> bool:
            ticket = httpx.get(f"http://127.0.0.1:{ports['at']}/_sandbox/tickets/50004").json()["ticket"]
            return bool(ticket["statusLabel"] == "Scheduling Link Sent")

        wait_for(link_sent, timeout=90, what="beat's TimeZest poll to reach the ticket")
        # `atrelay run` registered the sandbox's Autotask webhooks: Mission Control setting MC No
        # Contact in Autotask itself moves on to Waiting Customer, as a newcomer would try it.
        assert "Autotask sandbox webhooks call" in banner
        httpx.post(f"http://127.0.0.1:{ports['at']}/_sandbox/tickets/50002/status",
                   json={"status": "MC No Contact", "as": "mission-control"}).raise_for_status()

        def moved_on() -> bool:
            ticket = httpx.get(f"http://127.0.0.1:{ports['at']}/_sandbox/tickets/50002").json()["ticket"]
            return bool(ticket["statusLabel"] == "Waiting Customer")

        wait_for(moved_on, timeout=60, what="MC No Contact to move on to Waiting Customer")
        listing = atrelay(tmp_path, "events")
        assert listing.returncode == 0, listing.stderr
        assert "form.submitted" in listing.stdout and "applied" in listing.stdout
        assert "timezest.link_sent" in listing.stdout
        assert "ok" in atrelay(tmp_path, "polls").stdout
        shown = atrelay(tmp_path, "events", "show", "1")
        assert "New -> Received Form Response" in shown.stdout and "PATCH" in shown.stdout
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.log()[-3000:]


def test_processes_refuse_an_out_of_date_schema(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    for command in (["ingress"], ["worker"], ["beat"], ["events"]):
        out = atrelay(tmp_path, *command, ATRELAY_DATABASE_URL=f"sqlite:///{db}")
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert "run `atrelay migrate` first" in out.stderr
    migrated = atrelay(tmp_path, "migrate", ATRELAY_DATABASE_URL=f"sqlite:///{db}")
    head = head_revision(f"sqlite:///{db}")
    assert migrated.returncode == 0 and f"empty -> {head}" in migrated.stdout
    again = atrelay(tmp_path, "migrate", ATRELAY_DATABASE_URL=f"sqlite:///{db}")
    assert f"already at {head}" in again.stdout


def test_worker_refuses_a_status_the_tenant_lacks(tmp_path: Path, autotask: tuple[str, object]) -> None:
    from tests.conftest import autotask_env

    url, _ = autotask
    rules = tmp_path / "rules.toml"
    rules.write_text('[events."form.submitted"]\nstatus = "Form Received"\n')
    db = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(db)
    out = atrelay(tmp_path, "worker", ATRELAY_DATABASE_URL=db, ATRELAY_RULES_FILE=str(rules), **autotask_env(url))
    assert out.returncode == 2
    assert "'Form Received' is not an active value" in out.stderr
    assert "'Received Form Response'" in out.stderr  # the labels that do exist


def test_send_explains_when_nothing_listens(tmp_path: Path) -> None:
    out = atrelay(tmp_path, "send", str(ROOT / "samples" / "mc-escalated.json"), "--url",
                  f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "Is `atrelay run` running?" in out.stderr


def test_dlq_and_replay_commands(tmp_path: Path) -> None:
    from pipelines import store
    from tests.integration.helpers import add_event, webform_body

    db = f"sqlite:///{tmp_path / 'var' / 'atrelay.db'}"
    (tmp_path / "var").mkdir()
    upgrade(db)
    ids = []
    for _ in range(3):
        event_id = add_event(db, "webform", "form.submitted", webform_body())
        store.claim_event(db, event_id, 60)
        run = store.start_run(db, event_id, None, None)
        store.finish_run(db, event_id=event_id, run_id=run, state=store.EventState.DEAD, outcome="dead",
                         reason="ticket-not-found: no ticket numbered 'T20261126.0001'")
        ids.append(event_id)
    listing = atrelay(tmp_path, "dlq")
    assert listing.returncode == 0 and listing.stdout.count("ticket-not-found") == 3
    one = atrelay(tmp_path, "replay", str(ids[0]))
    assert one.returncode == 0 and f"event #{ids[0]} queued again" in one.stdout
    again = atrelay(tmp_path, "replay", str(ids[0]))
    assert again.returncode == 1 and "only dead, skipped or ignored" in again.stderr
    rest = atrelay(tmp_path, "replay", "--dead", "--since", "2020-01-01")
    assert rest.returncode == 0 and "2 of 2 dead letters queued again" in rest.stdout
    assert [store.get_event(db, i).state for i in ids] == ["accepted"] * 3  # type: ignore[union-attr]
    assert "Dead letters (0)" in atrelay(tmp_path, "dlq").stdout


def test_audit_seal_verify_and_tamper(tmp_path: Path) -> None:
    from sqlalchemy import update

    from pipelines import store
    from pipelines.audit import PipelineRun
    from pipelines.db import session_scope
    from tests.integration.helpers import add_event, webform_body

    db = f"sqlite:///{tmp_path / 'var' / 'atrelay.db'}"
    (tmp_path / "var").mkdir()
    upgrade(db)
    for _ in range(3):
        event_id = add_event(db, "webform", "form.submitted", webform_body())
        store.claim_event(db, event_id, 60)
        run = store.start_run(db, event_id, None, None)
        store.finish_run(db, event_id=event_id, run_id=run, state=store.EventState.DEAD, outcome="dead", reason="x")
    assert "sealed 3 event(s)" in atrelay(tmp_path, "audit", "seal").stdout
    ok = atrelay(tmp_path, "audit", "verify")
    assert ok.returncode == 0 and "audit chain OK: 3 seal(s) verified" in ok.stdout
    with session_scope(db) as s:
        s.execute(update(PipelineRun).where(PipelineRun.event_id == 2).values(reason="nothing to see"))
    bad = atrelay(tmp_path, "audit", "verify")
    assert bad.returncode == 1 and "seal #2: event #2 was changed" in bad.stderr
