"""Secrets never reach logs, the audit tables or the cassettes.

Known secret values are configured, real traffic runs through real processes (webhooks, a TimeZest
poll, Autotask calls, an admin replay), then every log line, every column of every audit table and
every cassette is searched for them.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import httpx
from sqlalchemy import MetaData, select

from pipelines.db import engine_for
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from sandboxes.timezest.app import TimezestSandboxState
from tests.stacks import start_stack
from tests.support import ROOT, signed, wait_for


def _whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def test_no_secret_in_logs_tables_or_cassettes(
    tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState],
    timezest: tuple[str, TimezestSandboxState], pg_url: str, redis_url: str,
) -> None:
    server, state = autotask_server
    tz_url, tz = timezest
    values = {
        "autotask_secret": "at-secret-" + secrets.token_hex(12),
        "autotask_code": "at-code-" + secrets.token_hex(12),
        "timezest_key": "tz-key-" + secrets.token_hex(12),
        "webform": _whsec(),
        "mc": _whsec(),
        "admin": "admin-" + secrets.token_hex(12),
    }
    saved = dict(state.credentials)
    state.credentials.update({"secret": values["autotask_secret"], "integration_code": values["autotask_code"]})
    tz.api_key = values["timezest_key"]
    stack = start_stack(tmp_path, mode="redis+postgresql", sandbox_server=server, sandbox=state, pg_url=pg_url,
                        redis_url=redis_url, beat=True, env_extra={
                            "ATRELAY_AUTOTASK_SECRET": values["autotask_secret"],
                            "ATRELAY_AUTOTASK_INTEGRATION_CODE": values["autotask_code"],
                            "ATRELAY_TIMEZEST_API_KEY": values["timezest_key"],
                            "ATRELAY_TIMEZEST_BASE_URL": f"{tz_url}/v1",
                            "ATRELAY_TIMEZEST_POLL_SECONDS": "5",
                            "ATRELAY_WEBFORM_WEBHOOK_SECRET": values["webform"],
                            "ATRELAY_MC_WEBHOOK_SECRET": values["mc"],
                            "ATRELAY_ADMIN_TOKEN": values["admin"],
                            "ATRELAY_LOG_LEVEL": "DEBUG",
                        })
    try:
        state.credentials.update({"secret": values["autotask_secret"], "integration_code": values["autotask_code"]})
        form = json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                           "data": {"form": "new-user", "ticket_id": 50001, "answers": {"q": "a"}}}).encode()
        mc = json.dumps({"type": "mc.no_contact", "timestamp": "2026-11-26T09:31:00Z",
                         "data": {"ticket_number": "T20261126.0002", "summary": "no answer"}}).encode()
        ghost = json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                            "data": {"form": "x", "ticket_number": "T19990101.0001"}}).encode()
        post = stack.ingress_url + "/webhooks/"
        ids = [httpx.post(post + "webform", content=form, headers=signed(form, values["webform"])).json()["id"],
               httpx.post(post + "mission-control", content=mc, headers=signed(mc, values["mc"])).json()["id"],
               httpx.post(post + "webform", content=ghost, headers=signed(ghost, values["webform"])).json()["id"]]
        assert httpx.post(post + "webform", content=form, headers=signed(form, _whsec())).status_code == 401
        request = tz.create({"ticket_id": 50004})
        tz.transition(request["id"], "sent")
        for event_id in ids:
            stack.final(event_id)
        replay = httpx.post(f"{stack.ingress_url}/api/events/{ids[2]}/replay",
                            headers={"Authorization": f"Bearer {values['admin']}"})
        assert replay.status_code == 202
        stack.final(ids[2])
        wait_for(lambda: state.tickets[50004]["status"] == 29682835, timeout=60, what="the TimeZest poll")
        wait_for(lambda: len(stack.all_rows()) >= 5 and all(r.state in ("applied", "dead", "skipped")
                                                             for r in stack.all_rows()), timeout=60,
                 what="the follow-up")
    finally:
        stack.stop()
        state.credentials.clear()
        state.credentials.update(saved)

    needles = {name: v for name, v in values.items()}
    needles.update({f"{n}-raw": v.removeprefix("whsec_") for n, v in values.items() if v.startswith("whsec_")})
    haystacks: dict[str, str] = {p.name: p.log() for p in stack.procs}
    metadata = MetaData()
    engine = engine_for(pg_url)
    metadata.reflect(bind=engine)
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            haystacks[f"table {table.name}"] = "\n".join(
                repr(tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row)) for row in rows)
    for cassette in (ROOT / "tests" / "cassettes").rglob("*.yaml"):
        haystacks[str(cassette.relative_to(ROOT))] = cassette.read_text()
    assert "table inbound_events" in haystacks and any("worker" in k for k in haystacks)
    assert len(haystacks["table outbound_attempts"]) > 0
    hits = [(name, where) for name, value in needles.items() for where, text in haystacks.items() if value in text]
    assert hits == []
