"""Examples the model test found, shrunk by hand to what matters, kept as regression tests.

Each replays a day on the same machine (tests/model/test_model.py) and checks the same invariants;
each failed on the code before the fix named in its docstring.
"""

from __future__ import annotations

from pipelines.audit import EventState
from tests.model.harness import COMPLETE, DEFERRED, FOLLOW_UP_ADMIN, FOLLOW_UP_RESOURCE, WAITING_CUSTOMER
from tests.model.test_model import Day


def _day_ends(state: Day) -> None:
    """The day's end: teardown checks invariants (a)-(e) from the sandbox's history and raises Violation
    (an AssertionError) on a breach. Asserted here too: the example still drives events through the
    pipeline to an end (a replay that no longer produced any would pass its invariants vacuously)."""
    state.teardown()
    rows = state.world.final_rows()
    assert rows, "the example produced no event: it no longer replays what it was kept for"
    assert all(EventState(r.state).final for r in rows), [(r.id, r.state) for r in rows]


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
    _day_ends(state)


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
    _day_ends(state)


def test_two_webhooks_from_mission_control_are_two_escalations() -> None:
    """(b) MC escalates (its status and its webhook), and seconds later posts another No Contact webhook
    while the status is unchanged: two messages from one channel are two escalations, two notes."""
    state = Day()
    state.mission_control_escalates(age=0, kind="mc.no_contact", ticket=50003, via="both")
    state.reconciliation()
    state.reconciliation()
    state.mission_control_escalates(age=0, kind="mc.no_contact", ticket=50003, via="both")
    state.autotask_calls_out(pick=0, then="deliver")
    _day_ends(state)


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
    _day_ends(state)


def test_timezests_own_link_sent_stays_its_own_when_the_booking_follows() -> None:
    """(b) TimeZest's PSA actions set Scheduling Link Sent and then Scheduled, each with its note; the
    poller's two events then run. Neither gets an atrelay note (the link-sent one used to be judged
    superseded by TimeZest's own next change, and wrote a "not applied" note)."""
    state = Day()
    state.timezest_is_configured(psa=True)
    state.timezest_moves_a_request(kind="sent", ticket=50002)
    state.reconciliation()
    state.timezest_moves_a_request(kind="scheduled", ticket=50002)
    _day_ends(state)


def test_timezest_setting_its_status_again_unchanged_is_still_its_own() -> None:
    """(b) A second scheduling request on a ticket TimeZest already put in Scheduling Link Sent: TimeZest
    sets the status again (no history row, the value is the same) and writes its note. atrelay tells it
    by that note and writes nothing (found by the model: it used to repeat TimeZest's note)."""
    state = Day()
    state.timezest_is_configured(psa=True)
    state.timezest_moves_a_request(kind="sent", ticket=50002)
    for _ in range(200):
        state.world.tick()  # two minutes and more pass: the first change is out of the window
    state.timezest_moves_a_request(kind="sent", ticket=50002)
    _day_ends(state)


def test_a_timezest_change_seen_late_is_found_in_ticket_history() -> None:
    """(b) TimeZest sets Scheduled (and writes its note), then seconds later moves another request to sent
    and sets Scheduling Link Sent. The callout about Scheduled runs after that, sees Scheduling Link Sent
    and records only it. The scheduled event must still be known as TimeZest's own: TicketHistory says
    so (found by the model: recorded changes were taken as the whole story, and a note was repeated)."""
    state = Day()
    state.timezest_is_configured(psa=True)
    state.timezest_moves_a_request(kind="sent", ticket=50003)
    state.autotask_calls_out(pick=0, then="deliver")
    state.worker_runs(pick=0, fault="none", call=("GET", "/tickets/"))
    state.worker_runs(pick=0, fault="none", call=("GET", "/tickets/"))
    state.timezest_moves_a_request(kind="scheduled", ticket=50003)
    state.timezest_moves_a_request(kind="sent", ticket=50003)
    state.autotask_calls_out(pick=0, then="deliver")
    _day_ends(state)


def test_a_cancellation_timezest_noted_gets_no_note_when_atrelay_leaves_the_status() -> None:
    """(b) `[events."timezest.cancelled"] status = ""` and TimeZest's PSA actions on: TimeZest notes the
    cancelled appointment, time included; atrelay moves no status and writes nothing (found by the model:
    with no status to move, atrelay never asked what TimeZest wrote, and repeated its note)."""
    state = Day()
    state.timezest_is_configured(psa=True, leave_status=True)
    state.timezest_moves_a_request(kind="cancelled", ticket=50001)
    _day_ends(state)


def test_a_request_cancelled_before_anyone_booked_timezest_noted_gets_no_atrelay_note() -> None:
    """(b) A request nobody booked is cancelled; TimeZest notes it. Note only, and TimeZest's says it all."""
    state = Day()
    state.timezest_is_configured(psa=True)
    state.timezest_moves_a_request(kind="sent", ticket=50002)
    state.timezest_moves_a_request(kind="cancelled-unbooked", ticket=50002)
    _day_ends(state)


def test_atrelay_sets_its_cancellation_status_timezest_set_none_for_and_repeats_none_of_its_note() -> None:
    """TimeZest sets its statuses for the link and the booking, and none for the cancellation (its note
    only). atrelay's rule sets Follow Up Needed: Admin, and its note quotes nothing TimeZest's note says.
    The model found the repeated note (the cancelled time, the end user); the status was wrong with it:
    TimeZest's Scheduled of a moment before was taken for its choice for the cancellation."""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=None)
    state.timezest_moves_a_request(kind="scheduled", ticket=50003)
    state.timezest_moves_a_request(kind="cancelled", ticket=50003)
    _day_ends(state)
    assert state.world.state.tickets[50003]["status"] == FOLLOW_UP_ADMIN


def test_a_cancellation_timezest_set_its_own_status_for_keeps_it_and_adds_only_the_unsaid_time() -> None:
    """TimeZest sets its own status for the cancellation and notes it without the time: that status stays
    (no write for the cancellation, checked at the day's end), and atrelay's one note quotes the time only."""
    state = Day()
    state.timezest_is_configured(psa=True, terse=True, cancel_status=FOLLOW_UP_RESOURCE)
    state.timezest_moves_a_request(kind="scheduled", ticket=50001)
    state.timezest_moves_a_request(kind="cancelled", ticket=50001)
    _day_ends(state)
    assert state.world.state.tickets[50001]["status"] == FOLLOW_UP_RESOURCE


def test_a_reschedule_timezest_noted_gets_no_atrelay_note() -> None:
    """(b) The client moves the appointment; TimeZest notes the new time and with whom: atrelay writes nothing."""
    state = Day()
    state.timezest_is_configured(psa=True)
    state.timezest_moves_a_request(kind="rescheduled", ticket=50002)
    _day_ends(state)


def test_a_booking_timezest_noted_and_a_newer_form_replaced_gets_no_atrelay_note() -> None:
    """(b) The client books; TimeZest sets Scheduled and notes it. A web form dated a little later (its
    sender's clock ahead) is applied first and replaces Scheduled. The booking's run is then stale: TimeZest's
    note already says all atrelay's "not applied" note would, so it writes none (found by `make soak`: the
    note repeated who, when and with whom)."""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=FOLLOW_UP_RESOURCE)
    state.form_posted(age=-193, by_number=True, ticket=50001)
    state.timezest_moves_a_request(kind="scheduled", ticket=50001)
    _day_ends(state)


def test_two_cancellations_on_one_ticket_each_read_their_own_timezest_note() -> None:
    """(b) A booked appointment is cancelled, and a second request of the same ticket is cancelled unbooked
    a second later; TimeZest notes each. atrelay's note for the first must weigh the first's note (which
    gives the time), not the newest one (which does not): it repeated the cancelled time (found by
    `make soak`)."""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=None)
    state.timezest_moves_a_request(kind="cancelled", ticket=50003)
    state.timezest_moves_a_request(kind="cancelled-unbooked", ticket=50003)
    _day_ends(state)


def test_a_cancellation_a_person_superseded_keeps_atrelays_one_note() -> None:
    """(b) TimeZest cancels a booked appointment and notes it (setting no status); a technician moves the ticket
    a second later. atrelay's rule did not set its cancellation status, and its one note says so, with nothing
    TimeZest's note says. (It held before; a first fix for the booking case above dropped this note too.)"""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=None)
    state.timezest_moves_a_request(kind="cancelled", ticket=50003)
    state.technician_sets_status(status=8, ticket=50003)
    _day_ends(state)


def test_a_guard_whose_status_the_person_set_again_acts_for_the_latest_change() -> None:
    """(a) A technician sets Deferred (no due date); its callout is delivered but not yet run. They set Waiting
    Customer, then Deferred again, and a due date in the past. The guard derived from the first Deferred
    still holds (Deferred, overdue) and writes, but for the person's latest change, not the older one: it
    was dated by the first Deferred, a write after a newer change by a person (found by the model test)."""
    state = Day()
    state.timezest_is_configured(psa=False)
    state.technician_sets_status(status=DEFERRED, ticket=50003)
    state.form_emailed_in(ticket=50003)
    state.form_emailed_in(ticket=50001)
    state.form_emailed_in(ticket=50002)
    state.autotask_calls_out(pick=0, then="deliver")
    state.technician_sets_status(status=WAITING_CUSTOMER, ticket=50003)
    state.technician_sets_status(status=DEFERRED, ticket=50003)
    state.technician_sets_due_date(due="past", ticket=50003)
    _day_ends(state)
    assert state.world.state.tickets[50003]["status"] == FOLLOW_UP_RESOURCE


def test_a_cancellation_timezest_set_its_status_for_and_a_newer_form_replaced_gets_no_atrelay_note() -> None:
    """(b) TimeZest cancels a booking, sets its cancellation status and notes the time; a web form dated a
    little later (its sender's clock ahead) is applied first. The cancellation's run is then stale: TimeZest
    set its status and said it all, so atrelay writes nothing (found by `make soak` on PostgreSQL)."""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=FOLLOW_UP_ADMIN)
    state.form_posted(age=-209, by_number=True, ticket=50002)
    state.timezest_moves_a_request(kind="cancelled", ticket=50002)
    _day_ends(state)


def test_an_unbooked_then_a_booked_cancellation_in_one_second_each_read_their_own_timezest_note() -> None:
    """(b) The other order of the two-cancellations example, within one second of TimeZest's clock (both
    events carry the same time): the nearest note was the unbooked one's, which lacks the time, and atrelay's
    note for the booking repeated it. The note that says the transition's facts is TimeZest's note for it
    (found by `make soak` on SQLite)."""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=None)
    state.reconciliation()
    state.reconciliation()
    state.form_emailed_in(ticket=50001)
    state.timezest_moves_a_request(kind="cancelled-unbooked", ticket=50001)
    state.timezest_moves_a_request(kind="cancelled", ticket=50001)
    _day_ends(state)


def test_a_cancellation_followed_by_a_new_link_keeps_atrelays_note_for_the_cancellation() -> None:
    """(b) TimeZest cancels a booking (setting no status, noting the time), then sends a new link on the same
    ticket (setting Scheduling Link Sent). The cancellation is superseded by that change; its status was
    atrelay's rule's to decide, so its one note says what became of it. TimeZest's Scheduling Link Sent,
    its update for the link, was taken for a status set for the cancellation (found by `make soak`)."""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=None)
    state.timezest_moves_a_request(kind="cancelled", ticket=50003)
    state.timezest_moves_a_request(kind="sent", ticket=50003)
    _day_ends(state)


def test_a_second_link_timezest_set_again_unchanged_after_an_older_form_applied_late() -> None:
    """(b) TimeZest sends a link (Scheduling Link Sent, its note); a web form dated before TimeZest's second
    link is applied late (Received Form Response); TimeZest's second link set its status again unchanged, which
    no history row shows. atrelay restores Scheduling Link Sent for the newer link (right) and says so in one
    note (the model owed none: it counted TimeZest's unchanged set as a status it set; `make soak`). That note
    repeated the end user and the request id TimeZest's note gave: the run had read no TicketHistory (the
    ticket showed atrelay's own later write), so it never looked for TimeZest's note. atrelay now reads it
    once it has seen TimeZest's resource write to the tenant's tickets (the first link, here)."""
    state = Day()
    state.timezest_is_configured(psa=True, leave_status=True)
    state.timezest_moves_a_request(kind="sent", ticket=50002)
    state.form_posted(age=-521, by_number=True, ticket=50002)
    state.timezest_moves_a_request(kind="sent", ticket=50002)
    _day_ends(state)
    assert state.world.state.tickets[50002]["status"] == 29682835  # Scheduling Link Sent


def test_a_second_cancellation_of_one_ticket_keeps_its_one_note() -> None:
    """(b) Two booked appointments of one ticket are cancelled in turn; TimeZest sets no status and notes each.
    atrelay set Follow Up Needed: Admin for the first; for the second the status is already there, and its one
    note is still owed. TimeZest's note with the ticket showing the status was taken for TimeZest setting it,
    though atrelay's own write had put it there (found by `make soak`)."""
    state = Day()
    state.timezest_is_configured(psa=True, cancel_status=None)
    state.timezest_moves_a_request(kind="cancelled", ticket=50002)
    state.timezest_moves_a_request(kind="cancelled", ticket=50002)
    _day_ends(state)


def test_a_tenant_where_timezest_never_writes_pays_no_read_of_its_notes() -> None:
    """The other side of the fix above: with TimeZest's PSA actions off, atrelay sets the link's and the
    booking's status itself and notes each in full, and never asks Autotask for TimeZest's notes (nothing
    of TimeZest's was ever seen on the tenant's tickets). The sandbox's own call log says which calls came."""
    state = Day()
    state.timezest_is_configured(psa=False)
    state.timezest_moves_a_request(kind="sent", ticket=50002)
    state.timezest_moves_a_request(kind="scheduled", ticket=50002)
    _day_ends(state)
    calls = state.world.state.calls
    assert calls["PATCH tickets"] >= 2 and not [k for k in calls if k.lower().startswith("post ticketnotes/query")], calls


def test_a_follow_up_whose_ticket_left_its_status_and_came_back_does_not_act() -> None:
    """(a) Mission Control sets MC No Contact (and posts it); the follow-up's PATCH to Waiting Customer gets a
    503 and waits for its retry; a technician completes the ticket; MC sets MC No Contact again. The retry
    saw MC No Contact, as it expected, and moved the ticket on for the first escalation, after the person's
    newer change. The first escalation is over (the person ended it); the second has its own follow-up,
    which moves the ticket on (found by `make soak`)."""
    state = Day()
    state.mission_control_escalates(age=173, kind="mc.no_contact", ticket=50002, via="both")
    state.worker_runs(call=("PATCH", "/tickets"), fault="503", pick=441)
    state.technician_sets_status(status=COMPLETE, ticket=50002)
    state.mission_control_escalates(age=411, kind="mc.no_contact", ticket=50002, via="both")
    _day_ends(state)
    assert state.world.state.tickets[50002]["status"] == WAITING_CUSTOMER


def test_a_late_callout_for_a_status_the_ticket_left_and_shows_again_is_not_read_as_its_own() -> None:
    """(b) MC sets MC No Contact and posts it; atrelay moves the ticket on to Waiting Customer; MC sets Out of
    Scope, then MC No Contact again and posts that. The first change's callout, run late, names MC No
    Contact, which the ticket shows again: it was taken for that first change (dated by the callout), so
    the status MC set again looked like a third report, stale, and wrote a second note for the first
    escalation. The status seen now is the later change's (TicketHistory's person and time): the report
    MC's second webhook already took on (found by `make soak`)."""
    state = Day()
    state.mission_control_escalates(age=40, kind="mc.no_contact", ticket=50002, via="both")
    state.worker_runs(call=("POST", "ticketnotes/query"), fault="lost", pick=101)
    state.mission_control_escalates(age=584, kind="mc.out_of_scope", ticket=50002, via="autotask")
    state.autotask_calls_out(pick=48, then="deliver")
    state.mission_control_escalates(age=326, kind="mc.no_contact", ticket=50002, via="both")
    _day_ends(state)
