"""Examples the model test found, shrunk by hand to what matters, kept as regression tests.

Each replays a day on the same machine (tests/model/test_model.py) and checks the same invariants;
each failed on the code before the fix named in its docstring.
"""

from __future__ import annotations

from tests.model.harness import COMPLETE, WAITING_CUSTOMER
from tests.model.test_model import Day


def test_a_late_callout_does_not_lend_its_time_to_the_status_seen_now() -> None:
    """(a) A technician sets Waiting Customer, then Complete with an important checklist item open; only the
    first callout arrives. The run sees Complete: who and when come from TicketHistory, not from the
    callout about Waiting Customer (the guard's event was dated before the change it acted on)."""
    state = Day()
    state.technician_edits_checklist(done=False, ticket=50001)
    state.technician_sets_status(status=WAITING_CUSTOMER, ticket=50001)
    state.technician_sets_status(status=COMPLETE, ticket=50001)
    state.autotask_calls_out(pick=0, then="deliver")
    state.worker_runs(pick=0, fault="none", call=("GET", "/tickets/"))
    state.worker_runs(pick=0, fault="none", call=("GET", "/tickets/"))
    state.writes_are_right()
    state.teardown()


def test_a_second_report_of_an_escalation_is_a_duplicate_even_when_stale() -> None:
    """(b) MC sets MC No Contact and posts its webhook; reconciliation meets the change (twice, as the
    status moved while its first observation waited). The webhook is applied and moved on; the report
    derived from MC's status change then runs: it is the same escalation (no note), not a stale one."""
    state = Day()
    state.reconciliation()  # baseline
    state.technician_sets_status(status=29682836, ticket=50003)
    state.reconciliation()
    state.mission_control_escalates(age=0, kind="mc.no_contact", ticket=50003, via="both")
    state.reconciliation()
    state.teardown()


def test_two_webhooks_from_mission_control_are_two_escalations() -> None:
    """(b) MC escalates (its status and its webhook), and seconds later posts another No Contact webhook
    while the status is unchanged: two messages from one channel are two escalations, two notes."""
    state = Day()
    state.mission_control_escalates(age=0, kind="mc.no_contact", ticket=50003, via="both")
    state.reconciliation()
    state.reconciliation()
    state.mission_control_escalates(age=0, kind="mc.no_contact", ticket=50003, via="both")
    state.autotask_calls_out(pick=0, then="deliver")
    state.teardown()


def test_an_escalation_after_a_person_moved_the_ticket_on_is_new_though_the_callout_was_lost() -> None:
    """(b) MC escalates by webhook and status; a technician moves the ticket on (that callout is lost) and
    two seconds later MC sets MC No Contact again. The second is a new escalation with its own note and
    follow-up: the ticket's history shows the person's change between the two (no time window hides it)."""
    state = Day()
    state.mission_control_escalates(age=0, kind="mc.escalated", ticket=50002, via="autotask")
    state.mission_control_escalates(age=0, kind="mc.no_contact", ticket=50002, via="both")
    state.technician_sets_status(status=WAITING_CUSTOMER, ticket=50002)
    state.mission_control_escalates(age=0, kind="mc.no_contact", ticket=50002, via="autotask")
    state.autotask_calls_out(pick=0, then="deliver")
    state.autotask_calls_out(pick=0, then="deliver")
    state.autotask_calls_out(pick=0, then="lose")
    state.autotask_calls_out(pick=0, then="deliver")
    state.worker_runs(pick=0, fault="none", call=("GET", "/tickets/"))
    state.teardown()
