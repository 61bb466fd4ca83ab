"""Contract tests from Autotask's documented examples, not from atrelay's own sandbox.

Each answer below is quoted from Datto's Autotask REST API developer help, the official Postman
collection and the Swagger, and each test names the topic it quotes: §1 zone discovery, §2
authentication, §3 the Tickets entity, §4 picklists, §5 TicketNotes, §6 errors, §7 rate and thread
limits, §8 webhooks. They are served by an ``httpx.MockTransport``, so the client
is checked against something it did not write: the sandbox and the cassettes recorded from it are
atrelay's own emulator (``tests/cassettes/README.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from connectors.autotask import errors as E
from connectors.autotask.callouts import dedupe_key, parse_callout
from connectors.autotask.client import Attempt, AutotaskClient

# Credentials of this test only (never real): the requests' headers are checked against them.
USER, SECRET, CODE = "apiuser@tenant.example", "doc-example-secret", "DOC-EXAMPLE-CODE"
ZONE_URL = "https://webservices2.autotask.net/atservicesrest/v1.0/zoneInformation"
BASE_URL = "https://webservices2.autotask.net/ATServicesRest/V1.0/"

Route = Callable[[httpx.Request], httpx.Response]


class Served(list[httpx.Request]):
    """The requests the client sent, answered by ``route``."""

    def __init__(self, route: Route) -> None:
        super().__init__()
        self.route = route

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.append(request)
        return self.route(request)


def make(route: Route, *, base_url: str | None = BASE_URL, max_attempts: int = 1,
         attempts: list[Attempt] | None = None) -> tuple[AutotaskClient, Served]:
    served = Served(route)
    client = AutotaskClient(username=USER, secret=SECRET, integration_code=CODE, base_url=base_url,
                            zone_url=ZONE_URL, transport=httpx.MockTransport(served), max_attempts=max_attempts,
                            sleep=lambda _s: None, on_attempt=attempts.append if attempts is not None else None)
    return client, served


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Route:
    return lambda _request: httpx.Response(status, json=body, headers=headers)


@pytest.fixture(autouse=True)
def _fresh_zone_cache() -> Iterator[None]:
    from connectors.autotask import client as client_module

    client_module._zone_cache.clear()
    yield
    client_module._zone_cache.clear()


# ---- §1 Zone discovery and base URL --------------------------------------------------------------
def test_zone_lookup_answer_from_the_postman_collection() -> None:
    """§1: the PM example answer; base URL = ``url`` + ``V1.0/``; the lookup is non-authenticated."""
    zone = {"zoneName": "Pre Release", "url": "https://webservices2.autotask.net/ATServicesRest/",
            "webUrl": "https://ww2.autotask.net/", "ci": 30595}

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.lower().endswith("zoneinformation"):
            return httpx.Response(200, json=zone)
        return httpx.Response(200, json={"item": {"id": 12345, "ticketNumber": "T20240101.0001", "status": 8}})

    client, served = make(route, base_url=None)
    assert client.base_url == "https://webservices2.autotask.net/ATServicesRest/V1.0/"
    lookup = served[0]
    assert lookup.url.params["user"] == USER
    assert not {"apiintegrationcode", "secret", "username"} & {k.lower() for k in lookup.headers}
    assert client.get_ticket(12345).id == 12345
    assert str(served[1].url) == "https://webservices2.autotask.net/ATServicesRest/V1.0/Tickets/12345"


# ---- §2 Authentication ---------------------------------------------------------------------------
def test_every_call_carries_the_three_documented_headers() -> None:
    """§2: ApiIntegrationCode, UserName, Secret and Content-Type: application/json on every call."""
    client, served = make(answer(200, {"item": {"id": 12345, "ticketNumber": "T20240101.0001", "status": 8}}))
    client.get_ticket(12345)
    headers = served[0].headers
    assert (headers["ApiIntegrationCode"], headers["UserName"], headers["Secret"]) == (CODE, USER, SECRET)
    assert headers["Content-Type"] == "application/json"


def test_failed_authentication_is_a_401() -> None:
    """§2 (D-sec): "Failed authentication to the REST API will result in the return of a 401 error"."""
    attempts: list[Attempt] = []
    client, _ = make(answer(401, None), max_attempts=3, attempts=attempts)
    with pytest.raises(E.AuthError) as exc:
        client.get_ticket(12345)
    assert not exc.value.retryable and len(attempts) == 1


# ---- §3 Tickets entity ---------------------------------------------------------------------------
def test_get_ticket_envelope() -> None:
    """§3 Response envelopes: ``GET /V1.0/Tickets/12345`` -> ``{"item": {...}}``."""
    client, served = make(answer(200, {"item": {"id": 12345, "ticketNumber": "T20240101.0001", "status": 8,
                                                "...": "..."}}))
    ticket = client.get_ticket(12345)
    assert (ticket.id, ticket.ticket_number, ticket.status) == (12345, "T20240101.0001", 8)
    assert served[0].method == "GET"


def test_missing_ticket_is_200_with_item_null() -> None:
    """§3: an id that does not exist (or is not visible) returns HTTP 200 with ``{"item": null}``."""
    attempts: list[Attempt] = []
    client, _ = make(answer(200, {"item": None}), max_attempts=3, attempts=attempts)
    with pytest.raises(E.TicketNotFound):
        client.get_ticket(99999)
    assert len(attempts) == 1  # permanent: not retried


def test_query_envelope_and_syntax() -> None:
    """§3 Response envelopes (``items`` + ``pageDetails``) and Query syntax (POST, ``filter`` of ``op``/``field``/``value``)."""
    page = {"items": [{"id": 12345, "ticketNumber": "T20240101.0001", "status": 8}],
            "pageDetails": {"count": 1, "requestCount": 500, "prevPageUrl": None, "nextPageUrl": None}}
    client, served = make(answer(200, page))
    ticket = client.find_ticket_by_number("T20240101.0001")
    assert (ticket.id, ticket.status) == (12345, 8)
    sent = served[0]
    assert sent.method == "POST" and sent.url.path == "/ATServicesRest/V1.0/Tickets/query"
    query = json.loads(sent.content)
    assert {"op": "eq", "field": "ticketNumber", "value": "T20240101.0001"} in query["filter"]
    assert 1 <= query["MaxRecords"] <= 500  # §3: MaxRecords runs from 1 to 500


def test_query_with_no_match_is_not_found() -> None:
    """§3: a query answers ``items`` (here none) with its ``pageDetails``."""
    page = {"items": [], "pageDetails": {"count": 0, "requestCount": 500, "prevPageUrl": None, "nextPageUrl": None}}
    client, _ = make(answer(200, page))
    with pytest.raises(E.TicketNotFound):
        client.find_ticket_by_number("T20240101.0002")


def test_status_change_is_a_patch_with_id() -> None:
    """§3 PATCH vs PUT: ``PATCH /V1.0/Tickets {"id": 12345, "status": 5}`` -> ``200 {"itemId": 12345}``."""
    client, served = make(answer(200, {"itemId": 12345}))
    assert client.set_ticket_status(12345, 5) == 12345
    sent = served[0]
    assert (sent.method, sent.url.path) == ("PATCH", "/ATServicesRest/V1.0/Tickets")
    assert json.loads(sent.content) == {"id": 12345, "status": 5}


# ---- §4 Picklists --------------------------------------------------------------------------------
FIELDS_EXAMPLE = {"fields": [
    {"name": "status", "dataType": "integer", "length": 0,
     "isRequired": True, "isReadOnly": False, "isQueryable": True,
     "isReference": False, "referenceEntityType": "",
     "isPickList": True, "picklistParentValueField": "",
     "isSupportedWebhookField": True,
     "picklistValues": [
         {"value": "1", "label": "New", "isDefaultValue": True, "sortOrder": 1,
          "parentValue": "", "isActive": True, "isSystem": True},
         {"value": "5", "label": "Complete", "isDefaultValue": False, "sortOrder": 2,
          "parentValue": "", "isActive": True, "isSystem": True}]}]}


def test_entity_information_fields_picklist_shape() -> None:
    """§4: ``Tickets/entityInformation/fields``; picklist ``value`` is a string, ``ticket.status`` an integer."""
    client, served = make(answer(200, FIELDS_EXAMPLE))
    (status,) = client.ticket_fields()
    assert served[0].url.path == "/ATServicesRest/V1.0/Tickets/entityInformation/fields"
    assert status.name == "status" and status.is_picklist and status.picklist_values is not None
    values = {v.label: v for v in status.picklist_values}
    assert (values["New"].value, values["Complete"].value) == ("1", "5")
    assert values["New"].is_default and values["Complete"].is_system and values["Complete"].is_active
    assert int(values["Complete"].value) == 5  # the documented fixed value (§4: Complete = 5)


def test_status_labels_resolve_from_the_documented_picklist() -> None:
    """§4: label -> int from the picklist; TicketNotes' noteType/publish are "resolved the same way"."""
    from connectors.autotask.picklists import Picklists

    def field(name: str, *labels: str) -> dict[str, Any]:
        return {"name": name, "dataType": "integer", "isPickList": True, "picklistValues": [
            {"value": str(i), "label": label, "isDefaultValue": i == 1, "sortOrder": i, "parentValue": "",
             "isActive": True, "isSystem": True} for i, label in enumerate(labels, start=1)]}

    notes = {"fields": [field("noteType", "Task Summary"), field("publish", "All Autotask Users")]}

    def route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=notes if "TicketNotes" in request.url.path else FIELDS_EXAMPLE)

    client, _ = make(route)
    lists = Picklists.load(client)
    assert (lists.status_id("New"), lists.status_id("Complete")) == (1, 5)


# ---- §5 TicketNotes ------------------------------------------------------------------------------
def test_note_is_created_through_the_child_url() -> None:
    """§5: ``POST /V1.0/Tickets/12345/Notes {ticketID, title, description, noteType, publish}`` -> ``{"itemId": 987654}``."""
    client, served = make(answer(200, {"itemId": 987654}))
    note_id = client.add_ticket_note(12345, title="Partner update",
                                     description="Partner X reported status 'resolved' (event 8f3c…)",
                                     note_type=1, publish=1)
    assert note_id == 987654
    sent = served[0]
    assert (sent.method, sent.url.path) == ("POST", "/ATServicesRest/V1.0/Tickets/12345/Notes")
    assert json.loads(sent.content) == {"ticketID": 12345, "title": "Partner update",
                                        "description": "Partner X reported status 'resolved' (event 8f3c…)",
                                        "noteType": 1, "publish": 1}


def test_note_description_is_cut_at_the_documented_32000() -> None:
    """§5 Fields and limits: ``description`` at most 32,000 characters, ``title`` at most 250."""
    client, served = make(answer(200, {"itemId": 987654}))
    client.add_ticket_note(12345, title="t" * 300, description="d" * 40_000, note_type=1, publish=1)
    sent = json.loads(served[0].content)
    assert len(sent["description"]) <= 32_000 and len(sent["title"]) <= 250


# ---- §6 Errors -----------------------------------------------------------------------------------
def test_500_with_errors_array_is_a_rejection_not_an_outage() -> None:
    """§6: failed operation = HTTP 500 with ``{"errors": [...]}``; "Don't retry 500s blindly"."""
    text = "A ContactGroup already exists with Name [...]. ContactGroup names must be unique."
    attempts: list[Attempt] = []
    client, _ = make(answer(500, {"errors": [text]}), max_attempts=3, attempts=attempts)
    with pytest.raises(E.RejectedError) as exc:
        client.set_ticket_status(12345, 5)
    assert not exc.value.retryable and len(attempts) == 1
    assert exc.value.errors == [text] and text in exc.value.reason


def test_errors_as_objects_are_read_too() -> None:
    """§6: "GO also accepts ``errors`` entries shaped as objects ``{"message": …}``" [LIB]."""
    client, _ = make(answer(500, {"errors": [{"message": "Value 99 is not a valid value for field status."}]}))
    with pytest.raises(E.RejectedError) as exc:
        client.set_ticket_status(12345, 99)
    assert "Value 99 is not a valid value" in exc.value.reason


# ---- §7 Rate limits, thread limits, ThresholdInformation -----------------------------------------
THREAD_TEXT = "Thread Threshold Exceeded — The Autotask API thread threshold of 3 threads has been exceeded"


@pytest.mark.parametrize("status", [500, 429, 400])
def test_thread_threshold_text_whatever_the_status(status: int) -> None:
    """§7 Thread limit: the error text (code Itgenatr005); "Detect it by status **or** by matching text"."""
    client, _ = make(answer(status, {"errors": [THREAD_TEXT]}))
    with pytest.raises(E.ThreadThresholdExceeded) as exc:
        client.get_ticket(12345)
    assert exc.value.retryable


def test_thread_threshold_code_alone_is_recognised() -> None:
    """§7: match ``thread threshold`` **or** ``Itgenatr005`` in ``errors[]``."""
    client, _ = make(answer(500, {"errors": ["Request refused (Itgenatr005)"]}))
    with pytest.raises(E.ThreadThresholdExceeded):
        client.get_ticket(12345)


def test_429_without_retry_after() -> None:
    """§7 Retry-After: "No official mention of Retry-After ... Assume it may be missing"."""
    client, _ = make(answer(429, {"errors": ["API request threshold exceeded"]}))
    with pytest.raises(E.RateLimited) as exc:
        client.get_ticket(12345)
    assert exc.value.retryable and exc.value.retry_after is None


def test_threshold_information_answer() -> None:
    """§7 ThresholdInformation: ``{"externalRequestThreshold": 10000, "requestThresholdTimeframe": 60, ...}``."""
    client, served = make(answer(200, {"externalRequestThreshold": 10000, "requestThresholdTimeframe": 60,
                                       "currentTimeframeRequestCount": 124}))
    info = client.threshold_information()
    assert (info.external_request_threshold, info.request_threshold_timeframe,
            info.current_timeframe_request_count) == (10000, 60, 124)
    assert served[0].url.path == "/ATServicesRest/V1.0/ThresholdInformation"


# ---- §8 Webhooks ---------------------------------------------------------------------------------
CALLOUT_EXAMPLE = b"""{"Action": "Update",
 "Guid": "a1da62a4-2c49-40a8-8183-69994ce5b3eb",
 "EntityType": "Ticket",
 "Id": 351181,
 "Fields": {"TicketNumber": "T20250915.0001", "Status": 5},
 "EventTime": "2025-09-15T14:57:50Z",
 "SequenceNumber": 1,
 "PersonID": 30691780}"""


def test_webhook_callout_example_parses() -> None:
    """§8 Payload: the documented callout (comments removed), PascalCase ``Fields``."""
    payload = parse_callout(CALLOUT_EXAMPLE)
    assert (payload.action, payload.entity_type, payload.id, payload.person_id) == (
        "Update", "Ticket", 351181, 30691780)
    assert not payload.is_note and payload.ticket_id == 351181
    assert payload.field("status") == 5 and payload.field("ticketNumber") == "T20250915.0001"
    assert payload.event_time is not None and payload.event_time.isoformat() == "2025-09-15T14:57:50+00:00"
    # §8 Delivery: stay idempotent on (Guid, Id, SequenceNumber/EventTime): a redelivery is the same key.
    assert dedupe_key(payload, CALLOUT_EXAMPLE) == dedupe_key(parse_callout(CALLOUT_EXAMPLE), CALLOUT_EXAMPLE)
    later = CALLOUT_EXAMPLE.replace(b'"SequenceNumber": 1', b'"SequenceNumber": 2')
    assert dedupe_key(parse_callout(later), later) != dedupe_key(payload, CALLOUT_EXAMPLE)
