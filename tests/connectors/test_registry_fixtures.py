"""Guard: every event type has a real-shaped fixture, every fixture names an event type, and each
fixture parses through the registry's handler into a PartnerEvent of its type."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.common.events import EventType
from pipelines.audit import InboundEvent
from pipelines.registry import EVENT_HANDLERS, SOURCE_HANDLERS, WEBHOOKS, parse_stored

HERE = Path(__file__).parent
FIXTURES = sorted(HERE.glob("*/fixtures/*.json"))
#: Fixture folder -> the source its events are recorded with (the handler may depend on it).
SOURCES = {"webform": "webform", "mission_control": "mission-control", "timezest": "timezest",
           "atrelay": "atrelay", "autotask": "autotask"}


def _type_of(path: Path) -> str:
    return path.name.removesuffix(".json")


def test_every_event_type_has_a_handler() -> None:
    assert set(EVENT_HANDLERS) == set(EventType)


def test_every_event_type_has_a_fixture() -> None:
    covered = {_type_of(p) for p in FIXTURES}
    missing = sorted(e.value for e in EventType if e.value not in covered)
    assert not missing, f"event types without a fixture under tests/connectors/<name>/fixtures/: {missing}"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_fixture_names_an_event_type_and_parses(path: Path) -> None:
    name = _type_of(path)
    assert name in {e.value for e in EventType}, f"{path} names no event type"
    row = InboundEvent(id=1, source=SOURCES[path.parent.parent.name], external_id="fixture", event_type=name,
                       body=path.read_bytes(), headers={})
    event = parse_stored(row)
    assert event.type == EventType(name)
    assert event.ticket_id is not None or event.ticket_number
    assert event.summary and event.occurred_at.tzinfo is not None


@pytest.mark.parametrize("source", list(WEBHOOKS))
def test_webhook_fixtures_pass_the_ingress_shape_check(source: object) -> None:
    conn = WEBHOOKS[source]  # type: ignore[index]
    paths = sorted((HERE / conn.fixture_dir / "fixtures").glob("*.json"))
    assert paths, f"no fixtures for {source}"
    for path in paths:
        payload = conn.parse(path.read_bytes())
        assert payload.event_type.value == _type_of(path)


def test_every_source_handler_has_fixtures() -> None:
    for source in SOURCE_HANDLERS:
        folder = next(f for f, s in SOURCES.items() if s == source)
        assert sorted((HERE / folder / "fixtures").glob("*.json")), f"no fixtures for source {source}"
