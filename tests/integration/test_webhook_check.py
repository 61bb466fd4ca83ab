"""Nothing unsigned raises an alarm (issue 20.4): deactivation notices are checked against the webhooks'
real state in the Autotask sandbox (``GET TicketWebhooks/{id}``), at most once a minute; only a webhook
that really is inactive is alerted (with the command that installs it again); notices about active
webhooks are one daily "unverified" alert with their count and none of their text; a flood cannot grow
the alerts table; neither the alerts, the dashboard's verdict nor doctor repeat a sender's words."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import insert

from connectors.autotask.client import AutotaskClient
from connectors.autotask.webhooks import TICKET_WEBHOOK, find_webhook, install_webhooks
from pipelines import alerts
from pipelines.audit import OutboundAttempt
from pipelines.db import engine_for, utcnow
from pipelines.heartbeats import beat
from pipelines.webhook_check import check_webhooks, last_check
from sandboxes.autotask.state import SandboxState
from tests.conftest import autotask_env
from workers.cli.doctor import run_doctor
from workers.http.ingress import create_app
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS, load_settings

ADMIN = "webhook-check-admin-token-0123456789"
BASE = "http://127.0.0.1:9"  # where the installed webhooks point (nothing listens: deliveries just fail)
HOSTILE = "<!channel> @here URGENT [Re-login to Autotask now](https://evil.example/at-login)"


@pytest.fixture
def setup(db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[TestClient, AutotaskClient, str]]:
    url, _ = autotask
    for name, value in {**autotask_env(url), "ATRELAY_DATABASE_URL": db_url, "ATRELAY_ADMIN_TOKEN": ADMIN}.items():
        monkeypatch.setenv(name, value)
    c = SANDBOX_AUTOTASK_CREDENTIALS
    client = AutotaskClient(username=c["username"], secret=c["secret"], integration_code=c["integration_code"],
                            zone_url=f"{url}/atservicesrest/v1.0/zoneInformation", max_attempts=1)
    install_webhooks(client, base_url=BASE, secret="webhook-check-test-secret", exclude_resource_id=None)
    for role in ("worker", "beat"):  # a healthy deployment otherwise: a worker and a beat alive ...
        beat(db_url, process_id=f"{role}:t:1", role=role, host="t", pid=1, version="t")
    with engine_for(db_url).begin() as conn:  # ... and the picklists loaded by that worker
        conn.execute(insert(OutboundAttempt.__table__).values(  # type: ignore[attr-defined]
            at=utcnow(), target="autotask", method="GET", path="/V1.0/Tickets/entityInformation/fields",
            status_code=200, duration_ms=1.0))
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None),
                    headers={"authorization": f"Bearer {ADMIN}"}) as ingress:
        yield ingress, client, db_url
    client.close()


def _notice(ingress: TestClient, guid: str = "x") -> None:
    body = json.dumps({"Action": "Deactivated", "Guid": guid, "EntityType": "Ticket", "Id": 1,
                       "Message": HOSTILE}).encode()
    assert ingress.post("/webhooks/autotask/deactivated", content=body).status_code == 202


def test_a_flood_of_unsigned_notices_about_active_webhooks_is_one_unverified_alert(
        setup: tuple[TestClient, AutotaskClient, str], autotask: tuple[str, SandboxState]) -> None:
    ingress, client, db = setup
    _, sandbox = autotask
    for n in range(300):
        _notice(ingress, guid=f"{HOSTILE} {n}")
    gets = sandbox.calls["GET ticketwebhooks/{id}"]
    made = check_webhooks(db, client)
    assert len(made) == 1  # not 300, not one per check per notice
    (row,) = alerts.recent_alerts(db)
    assert row.title == "Unverified webhook deactivation notices received" and row.severity == "info"
    assert "300 deactivation notice(s)" in row.body
    assert sandbox.calls["GET ticketwebhooks/{id}"] > gets, "the webhook's state was read in Autotask"
    # More notices within the minute: no second check (no Autotask call), no new alert.
    for _ in range(50):
        _notice(ingress)
    calls = sandbox.calls["total"]
    assert check_webhooks(db, client) == [] and sandbox.calls["total"] == calls
    # A minute later they are checked: still active, and today's unverified alert exists already.
    assert check_webhooks(db, client, now=utcnow() + timedelta(seconds=61)) == []
    assert len(alerts.recent_alerts(db, limit=100)) == 1
    everything = json.dumps([(a.title, a.body, a.fields) for a in alerts.recent_alerts(db, limit=100)])
    assert "channel" not in everything and "evil.example" not in everything and "Re-login" not in everything
    page = ingress.get("/ops").text
    assert "<h2>Healthy</h2>" in page  # an unsigned claim is no alarm ...
    assert "evil.example" not in page and "Re-login" not in page  # ... and its words are never shown
    out, err = io.StringIO(), io.StringIO()
    run_doctor(load_settings(), Console(file=out, width=300), Console(file=err, width=300))
    said = out.getvalue() + err.getvalue()
    assert "350 deactivation notice(s) received" in said and "unsigned, so not trusted" in said  # doctor counts them
    assert "evil.example" not in said and "Re-login" not in said and "@here" not in said  # in its own words only


def test_a_webhook_really_deactivated_is_alerted_once_with_the_reinstall_command(
        setup: tuple[TestClient, AutotaskClient, str]) -> None:
    ingress, client, db = setup
    hook = find_webhook(client, TICKET_WEBHOOK)
    assert hook is not None
    client.call("PATCH", "TicketWebhooks", json={"id": hook.id, "isActive": False})  # as Autotask does it
    _notice(ingress)
    (made,) = check_webhooks(db, client)
    (row,) = [a for a in alerts.recent_alerts(db) if a.id == made]
    assert row.title == "Autotask deactivated atrelay's TicketWebhooks webhook" and row.severity == "warning"
    assert f"atrelay autotask webhooks install --url {BASE}" in row.body
    assert "unverified" not in row.title.lower()
    page = ingress.get("/ops").text
    assert "Needs attention" in page and f"atrelay autotask webhooks install --url {BASE}" in page
    # Checked again while it stands (no new notice needed), but alerted once a day.
    assert check_webhooks(db, client, now=utcnow() + timedelta(seconds=61)) == []
    # Installed again: the next check finds it active and the dashboard is healthy again.
    install_webhooks(client, base_url=BASE, secret="webhook-check-test-secret", exclude_resource_id=None)
    assert check_webhooks(db, client, now=utcnow() + timedelta(seconds=122)) == []
    assert last_check(db).problems == []
    assert "<h2>Healthy</h2>" in ingress.get("/ops").text
