"""When TimeZest's own write is verified, TicketHistory is read only if the ticket was active near the
transition (pipelines/gate.py ``timezest_wrote``).

In a day as it runs, a contact books hours or days after the scheduling link went out, and atrelay's own
"Scheduling Link Sent" write is then long past: the booking costs no history read. The benchmark's mix
posts both within seconds, so there atrelay's own write is the recent activity and each booking reads
the history once (docs/benchmarks.md, calls per transition). The calls are counted by the Autotask
sandbox, not by atrelay.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.gate import History, timezest_wrote
from sandboxes.autotask.data import SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import make_context


def _history_reads(state: SandboxState) -> int:
    return sum(n for key, n in state.calls.items() if "tickethistory" in key.lower())


@pytest.mark.parametrize(("active_before", "reads"), [(timedelta(minutes=10), 0), (timedelta(seconds=30), 1)],
                         ids=["quiet-near-the-booking", "active-near-the-booking"])
def test_a_booking_reads_history_only_when_the_ticket_was_active_near_it(
        sqlite_url: str, autotask: tuple[str, SandboxState], active_before: timedelta, reads: int) -> None:
    url, state = autotask
    ctx = make_context(sqlite_url, url, timezest_resource_id=SANDBOX_RESOURCES["timezest"])
    booked = datetime.now(UTC)
    state.tickets[50001]["lastActivityDate"] = (booked - active_before).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    lists = ctx.lists()
    ticket = ctx.client.get_ticket(50001)
    before = _history_reads(state)
    wrote = timezest_wrote(ctx, ticket, around=booked, target_id=lists.status_id("Scheduled"), lists=lists,
                           history=History(ctx, ticket.id))
    assert wrote == []  # TimeZest wrote nothing on this ticket either way
    assert _history_reads(state) - before == reads
