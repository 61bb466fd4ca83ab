"""Issue 11 item 2 end to end, on the embedded default and on Redis + PostgreSQL: a form stamped
year 9999 is clamped at intake and the ticket's next event still applies (real ingress and workers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipelines.clock import CLAMPED_HEADER
from tests.integration.helpers import mc_body, webform_body
from tests.stacks import Stack
from tests.support import sandbox_ticket

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive


def test_year_9999_does_not_block_the_ticket(stack: Stack) -> None:
    response = stack.post("/webhooks/webform", webform_body(50002, when="9999-12-31T23:59:59Z"))
    assert response.status_code == 202, response.text
    far = stack.final(response.json()["id"])
    assert far.state == "applied"
    assert far.headers[CLAMPED_HEADER].startswith("9999-12-31T23:59:59")
    assert far.occurred_at is not None and far.occurred_at.year == datetime.now(UTC).year
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = stack.post("/webhooks/mission-control", mc_body("mc.out_of_scope", 50002, when=now))
    assert response.status_code == 202, response.text
    later = stack.final(response.json()["id"])
    assert (later.state, later.reason) == ("applied", None)  # before the clamp: skipped as "stale"
    assert sandbox_ticket(stack.sandbox_url, 50002)["ticket"]["statusLabel"] == "Out of Scope"
