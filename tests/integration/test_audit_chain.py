"""The tamper-evident audit chain: sealing, verification that names the first bad row, pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, update
from sqlmodel import col, select

from pipelines import store
from pipelines.audit import AuditAnchor, AuditSeal, EffectLedger, InboundEvent, OutboundAttempt, PipelineRun
from pipelines.chain import prune, seal, verify
from pipelines.db import session_scope
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, mc_body, webform_body


@pytest.fixture
def sealed(db_url: str, autotask: tuple[str, SandboxState]) -> list[int]:
    """Four finished events (applied, applied with a note only (already set), dead, applied), sealed."""
    url, _ = autotask
    ctx = make_context(db_url, url)
    ids = [
        add_event(db_url, "webform", "form.submitted", webform_body(50001)),
        add_event(db_url, "webform", "form.submitted", webform_body(50001)),  # already set: a note only
        add_event(db_url, "webform", "form.submitted", webform_body("T20200101.0001")),  # dead
        add_event(db_url, "mission-control", "mc.escalated", mc_body("mc.escalated", 50003)),
    ]
    for event_id in ids:
        process_event(ctx, event_id)
    assert seal(db_url) == 4
    assert seal(db_url) == 0  # nothing new
    return ids


def test_untouched_chain_verifies(db_url: str, sealed: list[int]) -> None:
    result = verify(db_url)
    assert result.ok and result.checked == 4 and result.unsealed_final == 0


def test_changed_run_is_named(db_url: str, sealed: list[int]) -> None:
    with session_scope(db_url) as s:
        s.execute(update(PipelineRun).where(col(PipelineRun.event_id) == sealed[2]).values(outcome="applied"))
    result = verify(db_url)
    assert not result.ok and result.checked == 2
    assert f"event #{sealed[2]} was changed" in (result.problem or "")


def test_changed_event_body_is_named(db_url: str, sealed: list[int]) -> None:
    with session_scope(db_url) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == sealed[0]).values(body=b"{}"))
    result = verify(db_url)
    assert not result.ok and f"event #{sealed[0]} was changed" in (result.problem or "")


def test_removed_attempt_and_removed_event_are_named(db_url: str, sealed: list[int]) -> None:
    with session_scope(db_url) as s:
        first = s.exec(select(OutboundAttempt.id).where(OutboundAttempt.event_id == sealed[3])).first()
        s.execute(delete(OutboundAttempt).where(col(OutboundAttempt.id) == first))
    assert f"event #{sealed[3]} was changed" in (verify(db_url).problem or "")


def test_removed_event_is_named(db_url: str, sealed: list[int]) -> None:
    with session_scope(db_url) as s:
        for table in (OutboundAttempt, PipelineRun, EffectLedger):  # everything that names the event
            s.execute(delete(table).where(col(table.event_id) == sealed[1]))
        s.execute(delete(InboundEvent).where(col(InboundEvent.id) == sealed[1]))
    assert verify(db_url).problem == f"seal #2: event #{sealed[1]} was removed"


def test_inserted_attempt_is_named(db_url: str, sealed: list[int]) -> None:
    with session_scope(db_url) as s:
        run = s.exec(select(PipelineRun).where(PipelineRun.event_id == sealed[0])).first()
        assert run is not None
        s.add(OutboundAttempt(event_id=sealed[0], run_id=run.id, method="PATCH", path="/Tickets", status_code=200))
    assert "was inserted" in (verify(db_url).problem or "")


def test_removed_or_forged_seal_breaks_the_chain(db_url: str, sealed: list[int]) -> None:
    with session_scope(db_url) as s:
        s.execute(update(AuditSeal).where(col(AuditSeal.seq) == 3).values(content_hash="f" * 64))
    assert "seal #3" in (verify(db_url).problem or "") and "does not chain" in (verify(db_url).problem or "")
    with session_scope(db_url) as s:
        s.execute(delete(AuditSeal).where(col(AuditSeal.seq) == 3))
    assert "seal #3 is missing" in (verify(db_url).problem or "")


def test_prune_keeps_the_rest_verifiable(db_url: str, sealed: list[int]) -> None:
    old = datetime.now(UTC) - timedelta(days=100)
    with session_scope(db_url) as s:
        s.execute(update(AuditSeal).where(col(AuditSeal.seq) <= 2).values(sealed_at=old))
    result = prune(db_url, datetime.now(UTC) - timedelta(days=90))
    assert (result.seals, result.events) == (2, 2)
    assert store.get_event(db_url, sealed[0]) is None and store.get_event(db_url, sealed[2]) is not None
    with session_scope(db_url) as s:
        anchor = s.get(AuditAnchor, 1)
    assert anchor is not None and anchor.last_seq == 2
    check = verify(db_url)
    assert check.ok and check.checked == 2


def test_replayed_event_gets_a_second_seal(db_url: str, autotask: tuple[str, SandboxState], sealed: list[int]) -> None:
    url, sandbox = autotask
    sandbox.tickets[50099] = {**sandbox.tickets[50001], "id": 50099, "ticketNumber": "T20200101.0001", "status": 1}
    assert store.replay(db_url, sealed[2])[0]
    assert process_event(make_context(db_url, url), sealed[2]).state == "applied"
    assert seal(db_url) == 1
    result = verify(db_url)
    assert result.ok and result.checked == 5
