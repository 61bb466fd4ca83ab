"""The status table and decide(): pure, tested as tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.common.events import EventType, PartnerEvent, Source
from pipelines.rules import DEFAULT_RULES, Ignore, RulesError, Transition, decide, load_rules

KB_TABLE = [
    (EventType.FORM_SUBMITTED, "Received Form Response"),
    (EventType.MC_ESCALATED, "Sent from MC"),
    (EventType.MC_OUT_OF_SCOPE, "Out of Scope"),
    (EventType.MC_NO_CONTACT, "MC No Contact"),
    (EventType.MC_NO_CONTACT_FOLLOW_UP, "Waiting Customer"),
    (EventType.TIMEZEST_LINK_SENT, "Scheduling Link Sent"),
    (EventType.TIMEZEST_SCHEDULED, "Scheduled"),
    # Issue 11 item 4: a booked appointment cancelled is the office admin's to re-book.
    (EventType.TIMEZEST_CANCELLED, "Follow Up Needed: Admin"),
    (EventType.TIMEZEST_RESCHEDULED, None),
]


def _event(etype: EventType) -> PartnerEvent:
    return PartnerEvent(source=Source.WEBFORM, type=etype, external_id="x", ticket_id=1,
                        occurred_at=datetime(2026, 11, 26, tzinfo=UTC), summary="s")


@pytest.mark.parametrize(("etype", "status"), KB_TABLE)
def test_defaults_follow_the_knowledge_base(etype: EventType, status: str | None) -> None:
    decision = decide(_event(etype), DEFAULT_RULES)
    assert isinstance(decision, Transition)
    assert decision.status == status
    assert decision.note is True


def test_a_note_only_event_changes_no_status_whatever_its_rule() -> None:
    """A TimeZest request cancelled before anyone booked: the rule's status is not applied, the note is."""
    event = _event(EventType.TIMEZEST_CANCELLED).model_copy(update={"note_only": True})
    assert decide(event, DEFAULT_RULES) == Transition(status=None, note=True)


def test_every_event_type_has_a_default_rule() -> None:
    assert set(DEFAULT_RULES) == set(EventType)


def test_only_mc_no_contact_has_a_follow_up() -> None:
    follow = {e: r.follow_up for e, r in DEFAULT_RULES.items() if r.follow_up}
    assert follow == {EventType.MC_NO_CONTACT: EventType.MC_NO_CONTACT_FOLLOW_UP}


def test_rules_file_overrides_rows(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[events."timezest.cancelled"]\nstatus = "Follow Up Needed:Resource"\n'
        '[events."mc.escalated"]\nnote = false\n'
        '[events."timezest.link_sent"]\nstatus = ""\nnote = false\n'
    )
    rules = load_rules(path)
    assert rules[EventType.TIMEZEST_CANCELLED].status == "Follow Up Needed:Resource"
    assert rules[EventType.MC_ESCALATED].note is False
    assert rules[EventType.MC_ESCALATED].status == "Sent from MC"
    assert decide(_event(EventType.TIMEZEST_LINK_SENT), rules) == Ignore("rule-disabled")
    assert rules[EventType.FORM_SUBMITTED] == DEFAULT_RULES[EventType.FORM_SUBMITTED]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[events."form.sent"]\nstatus = "X"\n', "unknown event type 'form.sent'"),
        ('[events."form.submitted"]\nstatus = 5\n', "form.submitted.status must be a string"),
        ('[events."form.submitted"]\ncolour = "red"\n', "takes only 'status' and 'note'"),
        ('[events."form.submitted"]\nnote = "yes"\n', "note must be true or false"),
        ("events = 3\n", "[events] must be a table"),
        ("this is not toml", "rules file"),
    ],
)
def test_malformed_rules_file_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(content)
    with pytest.raises(RulesError, match=None) as exc:
        load_rules(path)
    assert message in str(exc.value)


def test_a_rules_file_error_names_the_bad_key_and_keeps_its_section(tmp_path: Path) -> None:
    """Issue 13: the message said only what is allowed, never which key was wrong."""
    from rich.console import Console
    from rich.markup import escape

    path = tmp_path / "rules.toml"
    path.write_text('[events."mc.no_contact"]\nstatus = "MC No Contact"\nstauts = "x"\nnote = true\n')
    with pytest.raises(RulesError) as exc:
        load_rules(path)
    message = str(exc.value)
    assert "[events.'mc.no_contact'] has unknown key(s) 'stauts'" in message
    assert "it takes only 'status' and 'note'" in message
    # As the CLI and doctor print it (escaped): the section name survives rich's markup parser.
    console = Console(record=True, width=400)
    console.print(escape(message))
    assert "[events.'mc.no_contact']" in console.export_text()


def test_docs_rules_md_gives_the_timezest_cases_atrelay_rules_prints() -> None:
    """docs/rules.md's TimeZest table says, cell for cell, what `atrelay rules` prints (rules.TIMEZEST_CASES),
    for every TimeZest event the pipeline verifies (pipelines.gate.TIMEZEST)."""
    from pipelines.gate import TIMEZEST
    from pipelines.rules import TIMEZEST_CASES

    text = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text()
    section = text.split("## TimeZest: verify and repair, never repeat", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `timezest."):
            cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split(" | ")]
            rows[EventType(cells[0])] = tuple(cells[1:])
    assert set(TIMEZEST_CASES) == set(TIMEZEST) == set(rows)
    for etype, cases in TIMEZEST_CASES.items():
        assert rows[etype] == cases, etype
