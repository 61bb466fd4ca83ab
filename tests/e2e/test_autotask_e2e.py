"""Autotask as an event source, end to end: the sandbox's signed callouts reach a running ingress,
real worker processes act on them, reconciliation recovers what Autotask dropped.

Mission Control works inside the MSP's Autotask (it sets its statuses itself), and the new-user
form arrives as an e-mailed note; both are seen only through Autotask's own webhooks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
from sqlmodel import col, select

from connectors.autotask.client import AutotaskClient
from connectors.autotask.webhooks import install_webhooks
from pipelines.audit import InboundEvent, RejectedRequest, TicketStatusChange
from pipelines.db import session_scope
from pipelines.reconcile import reconcile_once
from sandboxes.autotask.data import SANDBOX_RESOURCES
from tests.integration.helpers import webform_body
from tests.stacks import Stack
from tests.support import AUTOTASK_HOOK_SECRET, WEBFORM_SECRET, autotask_signed, sandbox_ticket, wait_for
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS as C

STATUS = {"New": 1, "Waiting Customer": 7, "Received Form Response": 29682844, "Sent from MC": 29682845,
          "Out of Scope": 29682846, "MC No Contact": 29682847, "Note Emailed In": 29682841}


def client(stack: Stack) -> AutotaskClient:
    return AutotaskClient(username=C["username"], secret=C["secret"], integration_code=C["integration_code"],
                          zone_url=f"{stack.sandbox_url}/atservicesrest/v1.0/zoneInformation", max_attempts=1)


def install(stack: Stack, *, exclude_self: bool = True) -> None:
    with client(stack) as c:
        own = c.find_resource_by_username(C["username"])
        assert own is not None and own.id == SANDBOX_RESOURCES["atrelay"]
        install_webhooks(c, base_url=stack.ingress_url, secret=AUTOTASK_HOOK_SECRET,
                         exclude_resource_id=own.id if exclude_self else None)
    httpx.put(f"{stack.sandbox_url}/_sandbox/webhooks", json={"retry_seconds": 0.3}).raise_for_status()


def act(stack: Stack, ticket: int, status: str, who: str) -> None:
    httpx.post(f"{stack.sandbox_url}/_sandbox/tickets/{ticket}/status",
               json={"status": status, "as": who}).raise_for_status()


def add_note(stack: Stack, ticket: int, title: str, description: str, who: str = "contact") -> int:
    response = httpx.post(f"{stack.sandbox_url}/_sandbox/tickets/{ticket}/notes",
                          json={"title": title, "description": description, "as": who})
    response.raise_for_status()
    return int(response.json().get("id") or response.json().get("itemId") or 0)


def idle(stack: Stack) -> None:
    assert httpx.get(f"{stack.sandbox_url}/_sandbox/webhooks/idle", params={"timeout": 20},
                     timeout=30).json()["idle"]


def status_of(stack: Stack, ticket: int) -> str:
    return str(sandbox_ticket(stack.sandbox_url, ticket)["ticket"]["statusLabel"])


def atrelay_notes(stack: Stack, ticket: int) -> list[dict[str, Any]]:
    return [n for n in sandbox_ticket(stack.sandbox_url, ticket)["notes"] if "[atrelay:event:" in n["description"]]


def patches(stack: Stack) -> int:
    calls = httpx.get(f"{stack.sandbox_url}/_sandbox/calls").json()["by_endpoint"]
    return int(calls.get("PATCH tickets", 0))


def rows(stack: Stack) -> list[InboundEvent]:
    with session_scope(stack.db) as s:
        return list(s.exec(select(InboundEvent).order_by(col(InboundEvent.id))).all())


def settle(stack: Stack, ticket: int, status: str, timeout: float = 60) -> list[InboundEvent]:
    wait_for(lambda: status_of(stack, ticket) == status or None, timeout=timeout,
             what=f"ticket {ticket} to reach {status}")
    idle(stack)
    return stack.all_final(len(rows(stack)), timeout=timeout)


def test_mc_no_contact_set_in_autotask_moves_on_to_waiting_customer(stack: Stack) -> None:
    install(stack)
    act(stack, 50002, "MC No Contact", "mission-control")
    events = settle(stack, 50002, "Waiting Customer")
    assert [(e.source, e.event_type, e.state) for e in events] == [
        ("autotask", "autotask.ticket.changed", "ignored"),  # the observation, which derived ...
        ("autotask", "mc.no_contact", "applied"),  # ... MC's escalation (status already set by MC) ...
        ("atrelay", "mc.no_contact.follow_up", "applied"),  # ... and the knowledge base's follow-up
    ], stack.logs()
    assert events[0].reason is not None and "rule mc-no-contact" in events[0].reason
    assert events[1].reason == "already-set: note with the follow-up"
    (note,) = atrelay_notes(stack, 50002)  # one note tells both
    assert "Mission Control could not reach the user" in note["description"]
    assert "MC No Contact to Waiting Customer" in note["description"]
    assert patches(stack) == 1  # one transition applied by atrelay, one PATCH, no call back
    with session_scope(stack.db) as s:
        changes = list(s.exec(select(TicketStatusChange).order_by(col(TicketStatusChange.id))).all())
    assert [(c.to_status_id, c.by_resource_id, c.by_atrelay, c.via) for c in changes] == [
        (STATUS["MC No Contact"], SANDBOX_RESOURCES["mission_control"], False, "callout"),
        (STATUS["Waiting Customer"], None, True, "atrelay"),
    ]
    hooks = httpx.get(f"{stack.sandbox_url}/_sandbox/webhooks").json()
    assert json.dumps(hooks).count("atrelay") >= 2  # both webhooks are atrelay's


def test_emailed_new_user_form_sets_received_form_response(dist: Stack) -> None:
    install(dist)
    note_id = add_note(dist, 50001, "New User Form - new starter", "First name: Sam\nStart date: 2026-12-01")
    # Autotask's own workflow rule reacts to the e-mail first; atrelay's status still applies.
    act(dist, 50001, "Note Emailed In", "help-desk")
    events = settle(dist, 50001, "Received Form Response")
    kinds = [(e.event_type, e.state) for e in events]
    assert ("form.submitted", "applied") in kinds and kinds.count(("form.submitted", "applied")) == 1, kinds
    (note,) = atrelay_notes(dist, 50001)
    assert "emailed into the ticket" in note["description"] and f"#{note_id}" in note["description"]
    assert status_of(dist, 50001) == "Received Form Response"


def test_a_note_with_another_title_changes_nothing(dist: Stack) -> None:
    install(dist)
    add_note(dist, 50001, "Re: printer", "It works again, thanks", "contact")
    idle(dist)
    events = dist.all_final(1)
    assert [(e.event_type, e.state) for e in events] == [("autotask.note.added", "ignored")]
    assert atrelay_notes(dist, 50001) == [] and patches(dist) == 0


def test_reconciliation_recovers_dropped_callouts_and_late_ones_apply_nothing(dist: Stack) -> None:
    install(dist)
    with client(dist) as c:
        assert reconcile_once(dist.db, c, dist.enqueue, watched_status_ids=set(), own_resource_id=None).outcome \
            == "baseline"
    httpx.put(f"{dist.sandbox_url}/_sandbox/webhooks", json={"drop_next": 3}).raise_for_status()
    act(dist, 50003, "Sent from MC", "mission-control")
    note_id = add_note(dist, 50004, "New User Form for Alex", "First name: Alex")
    act(dist, 50005, "Out of Scope", "mission-control")
    idle(dist)
    assert rows(dist) == []  # all three callouts were lost
    watched = {STATUS["Sent from MC"], STATUS["Out of Scope"], STATUS["MC No Contact"]}
    with client(dist) as c:
        result = reconcile_once(dist.db, c, dist.enqueue, watched_status_ids=watched,
                                own_resource_id=SANDBOX_RESOURCES["atrelay"])
    assert result.outcome == "ok" and len(result.emitted) == 3
    dist.all_final(6, timeout=90)
    assert status_of(dist, 50004) == "Received Form Response"
    assert len(atrelay_notes(dist, 50003)) == len(atrelay_notes(dist, 50004)) == len(atrelay_notes(dist, 50005)) == 1
    before = (patches(dist), len(rows(dist)))
    # The lost callouts arrive after all (signed here, as Autotask would): nothing is applied twice.
    late = [
        {"Action": "Update", "Guid": "late-guid", "EntityType": "Ticket", "Id": 50003, "SequenceNumber": 90,
         "Fields": {"Status": STATUS["Sent from MC"]}, "EventTime": "2026-11-26T10:00:00Z",
         "PersonID": SANDBOX_RESOURCES["mission_control"]},
        {"Action": "Create", "Guid": "late-guid-n", "EntityType": "TicketNote", "Id": note_id, "SequenceNumber": 91,
         "Fields": {"TicketID": 50004, "Title": "New User Form for Alex"}, "EventTime": "2026-11-26T10:00:00Z",
         "PersonID": None},
    ]
    answers = []
    for payload, path in zip(late, ("tickets", "notes"), strict=True):
        body = json.dumps(payload).encode()
        answers.append(httpx.post(f"{dist.ingress_url}/webhooks/autotask/{path}", content=body,
                                  headers=autotask_signed(body), timeout=10))
    assert [a.status_code for a in answers] == [202, 200], [a.text for a in answers]  # the note: same key
    events = dist.all_final(before[1] + 1)
    assert events[-1].reason == "no-status-change", events[-1].reason
    assert (patches(dist), len(atrelay_notes(dist, 50003)), len(atrelay_notes(dist, 50004))) == (before[0], 1, 1)


def test_own_writes_are_recognised_without_the_exclusion(dist: Stack) -> None:
    """Loop safety: even when the webhook does not exclude atrelay's API user, its writes change nothing."""
    install(dist, exclude_self=False)
    body = webform_body("T20261126.0001")
    assert dist.post("/webhooks/webform", body, WEBFORM_SECRET).status_code == 202
    wait_for(lambda: status_of(dist, 50001) == "Received Form Response" or None, what="the form to apply")
    idle(dist)
    events = dist.all_final(3)
    by_type = {e.event_type: e for e in events}
    assert by_type["form.submitted"].state == "applied"
    assert by_type["autotask.ticket.changed"].reason == "own-change: made by atrelay's API user"
    assert by_type["autotask.note.added"].reason == "own-note: written by atrelay's API user"
    assert patches(dist) == 1 and len(atrelay_notes(dist, 50001)) == 1


def test_install_twice_status_doctor_and_a_deactivation_notice(dist: Stack) -> None:
    env = {**dist.env, "COLUMNS": "200"}
    cli = [sys.executable, "-m", "workers.cli"]
    for _ in range(2):
        done = subprocess.run([*cli, "autotask", "webhooks", "install", "--url", dist.ingress_url], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    hooks = httpx.get(f"{dist.sandbox_url}/_sandbox/webhooks").json()["webhooks"]
    assert sorted(h["entityType"] for h in hooks) == ["Ticket", "TicketNote"], hooks
    status = subprocess.run([*cli, "autotask", "webhooks", "status"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "TicketWebhooks" in status.stdout and "TicketNoteWebhooks" in status.stdout
    doctor = subprocess.run([*cli, "doctor"], env=env, capture_output=True, text=True, timeout=60)
    assert "TicketWebhooks" in doctor.stdout and "active and ready" in doctor.stdout, doctor.stdout
    # A deactivation notice, unsigned as Autotask sends them (anyone can): counted, never quoted, and no
    # problem while Autotask shows the webhooks active (issue 20; the notice used to fail doctor).
    notice = json.dumps({"Action": "Deactivated", "Guid": "x", "EntityType": "Ticket", "Id": 1}).encode()
    answer = httpx.post(f"{dist.ingress_url}/webhooks/autotask/deactivated", content=notice, timeout=10)
    assert answer.status_code == 202
    doctor = subprocess.run([*cli, "doctor"], env=env, capture_output=True, text=True, timeout=60)
    assert "1 deactivation notice(s) received" in doctor.stdout and "not trusted" in doctor.stdout
    assert not [line for line in doctor.stderr.splitlines() if line.startswith("problem") and "deactivat" in line]
    assert "active and ready" in doctor.stdout
    assert len(httpx.get(f"{dist.sandbox_url}/_sandbox/webhooks").json()["webhooks"]) == 2
    assert rows(dist) == []
    with session_scope(dist.db) as s:
        (kept,) = s.exec(select(RejectedRequest).where(RejectedRequest.source == "autotask-deactivation")).all()
    assert kept.reason.startswith("deactivation notice (unsigned)")
