"""The Autotask sandbox's webhooks, attribution, TicketHistory and checklist, over real HTTP.

The receiver and the signature check are written here, from Autotask's webhook documentation, and share nothing with
atrelay's verifier or the sandbox's signer: they are the independent side of the oracle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sandboxes.autotask.data import SANDBOX_CONTACT_ID, SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS

HEADERS = {"ApiIntegrationCode": SANDBOX_AUTOTASK_CREDENTIALS["integration_code"],
           "UserName": SANDBOX_AUTOTASK_CREDENTIALS["username"], "Secret": SANDBOX_AUTOTASK_CREDENTIALS["secret"]}
SECRET = "s3cr3t-key"
TICKET = 50001


class Receiver:
    """A local HTTP endpoint that records every POST and answers scripted status codes per path."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict[str, str], bytes]] = []
        self.codes: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.hits.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    script = receiver.codes.get(self.path) or []
                    code = script.pop(0) if len(script) > 1 else (script[0] if script else 200)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self, path: str = "/hook") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for p, _h, b in self.hits if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def api(url: str) -> str:
    return f"{url}/atservicesrest/V1.0"


def field_ids(url: str, entity: str) -> dict[str, int]:
    info = httpx.get(f"{api(url)}/{entity}/entityInformation/fields", headers=HEADERS).json()
    (picklist,) = [f for f in info["fields"] if f["name"] == "fieldID"]
    return {v["label"]: int(v["value"]) for v in picklist["picklistValues"]}


def make_webhook(url: str, receiver: Receiver, *, subscribed: tuple[str, ...] = ("status",),
                 always: tuple[str, ...] = (), entity: str = "TicketWebhooks", path: str = "/hook",
                 **extra: Any) -> int:
    body = {"name": "atrelay test", "isActive": True, "webhookUrl": receiver.url(path),
            "deactivationUrl": receiver.url("/deactivated"), "secretKey": SECRET,
            "isSubscribedToCreateEvents": entity == "TicketNoteWebhooks", "isSubscribedToUpdateEvents": True,
            "isSubscribedToDeleteEvents": False, **extra}
    response = httpx.post(f"{api(url)}/{entity}", headers=HEADERS, json=body)
    assert response.status_code == 200, response.text
    wid = int(response.json()["itemId"])
    ids = field_ids(url, entity.replace("Webhooks", "WebhookFields"))
    for name in dict.fromkeys(subscribed + always):
        r = httpx.post(f"{api(url)}/{entity}/{wid}/Fields", headers=HEADERS, json={
            "fieldID": ids[name], "isSubscribedField": name in subscribed,
            "isDisplayAlwaysField": name in always, "webhookID": wid})
        assert r.status_code == 200, r.text
    return wid


def idle(url: str, timeout: float = 10) -> None:
    assert httpx.get(f"{url}/_sandbox/webhooks/idle", params={"timeout": timeout}, timeout=timeout + 5).json()["idle"]


def settings(url: str, **values: Any) -> None:
    httpx.put(f"{url}/_sandbox/webhooks", json=values).raise_for_status()


def counters(url: str, wid: int) -> dict[str, Any]:
    (hook,) = [h for h in httpx.get(f"{url}/_sandbox/webhooks").json()["webhooks"] if h["id"] == wid]
    return hook  # type: ignore[no-any-return]


def patch(url: str, **fields: Any) -> httpx.Response:
    return httpx.patch(f"{api(url)}/Tickets", headers=HEADERS, json={"id": TICKET, **fields})


# ---- signature and escaping ------------------------------------------------------------------------
def test_callout_is_signed_over_autotask_escaped_bytes(autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    url, _ = autotask
    wid = make_webhook(url, receiver, subscribed=("title",), always=("ticketNumber",))
    title = "Tom & Jerry <b>'quoted'</b> café"
    assert patch(url, title=title).status_code == 200
    idle(url)
    ((_path, headers, raw),) = receiver.hits
    assert headers["content-type"].startswith("application/json")
    expected = "sha1=" + base64.b64encode(hmac.new(SECRET.encode(), raw, hashlib.sha1).digest()).decode()
    assert hmac.compare_digest(headers["x-hook-signature"], expected)
    text = raw.decode("ascii")  # every non-ASCII character is escaped
    for escape in ("\\u0026", "\\u003C", "\\u003E", "\\u0027", "\\u00E9"):
        assert escape in text
    assert not any(c in text.split('"Fields"')[1].split('"EventTime"')[0] for c in "&<>'")
    payload = json.loads(raw)
    assert payload["Fields"] == {"Title": title, "TicketNumber": "T20261126.0001"}
    assert payload["Action"] == "Update" and payload["EntityType"] == "Ticket" and payload["Id"] == TICKET
    assert payload["PersonID"] == SANDBOX_RESOURCES["atrelay"] and payload["SequenceNumber"] == 1
    assert payload["EventTime"].endswith("Z")
    hook = httpx.get(f"{api(url)}/TicketWebhooks/{wid}", headers=HEADERS).json()["item"]
    assert payload["Guid"] == hook["webhookGUID"]


def test_fields_are_changed_subscribed_plus_display_always(autotask: tuple[str, SandboxState],
                                                          receiver: Receiver) -> None:
    url, _ = autotask
    make_webhook(url, receiver, subscribed=("status", "dueDateTime"), always=("ticketNumber",))
    assert patch(url, dueDateTime="2026-12-01T10:00:00Z").status_code == 200
    # An unsubscribed field changes: no callout.
    httpx.patch(f"{url}/_sandbox/tickets/{TICKET}", json={"assignedResourceID": "help-desk", "as": "technician"})
    httpx.post(f"{url}/_sandbox/tickets/{TICKET}/status", json={"status": "In Progress", "as": "technician"})
    idle(url)
    bodies = receiver.bodies()
    assert [b["Fields"] for b in bodies] == [
        {"DueDateTime": "2026-12-01T10:00:00.000Z", "TicketNumber": "T20261126.0001"},
        {"Status": 8, "TicketNumber": "T20261126.0001"},
    ]
    assert [b["SequenceNumber"] for b in bodies] == [1, 2]
    assert [b["PersonID"] for b in bodies] == [SANDBOX_RESOURCES["atrelay"], SANDBOX_RESOURCES["technician"]]


# ---- delivery ---------------------------------------------------------------------------------------
def test_failed_callout_is_retried_then_dropped_after_five_attempts(autotask: tuple[str, SandboxState],
                                                                    receiver: Receiver) -> None:
    url, _ = autotask
    settings(url, retry_seconds=0.05)
    receiver.codes["/hook"] = [500]
    wid = make_webhook(url, receiver)
    patch(url, status=5)
    idle(url)
    assert len(receiver.bodies()) == 5 and {b["SequenceNumber"] for b in receiver.bodies()} == {1}
    state = httpx.get(f"{url}/_sandbox/webhooks").json()
    (entry,) = state["error_log"]
    assert entry["sequenceNumber"] == 1 and entry["attempts"] == 5 and entry["errorMessage"] == "HTTP 500"
    assert json.loads(entry["payload"])["Fields"] == {"Status": 5}
    hook = counters(url, wid)
    assert hook["isActive"] and hook["counters"]["failed"] == 1 and hook["counters"]["pending"] == 0


def test_callouts_are_delivered_in_order_behind_a_retry(autotask: tuple[str, SandboxState],
                                                        receiver: Receiver) -> None:
    url, _ = autotask
    settings(url, retry_seconds=0.1)
    receiver.codes["/hook"] = [503, 503, 200]
    wid = make_webhook(url, receiver)
    patch(url, status=5)
    patch(url, status=8)
    idle(url)
    assert [b["SequenceNumber"] for b in receiver.bodies()] == [1, 1, 1, 2]
    assert counters(url, wid)["counters"]["delivered"] == 2


def test_drop_next_loses_a_callout_silently(autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    url, _ = autotask
    wid = make_webhook(url, receiver)
    settings(url, drop_next=1)
    patch(url, status=5)
    patch(url, status=8)
    idle(url)
    assert [(b["SequenceNumber"], b["Fields"]) for b in receiver.bodies()] == [(2, {"Status": 8})]
    hook = counters(url, wid)
    assert hook["counters"]["dropped"] == 1 and hook["counters"]["delivered"] == 1
    assert [x["sequenceNumber"] for x in httpx.get(f"{url}/_sandbox/webhooks").json()["lost"]] == [1]


def test_25_consecutive_failures_deactivate_with_an_unsigned_notice(autotask: tuple[str, SandboxState],
                                                                     receiver: Receiver) -> None:
    url, _ = autotask
    settings(url, retry_seconds=0.01)
    receiver.codes["/hook"] = [500]
    wid = make_webhook(url, receiver)
    for status in (5, 8, 5, 8, 5):  # 5 callouts x 5 attempts = 25 failures
        patch(url, status=status)
    idle(url)
    assert len(receiver.bodies()) == 25
    item = httpx.get(f"{api(url)}/TicketWebhooks/{wid}", headers=HEADERS).json()["item"]
    assert item["isActive"] is False
    ((_p, headers, raw),) = [h for h in receiver.hits if h[0] == "/deactivated"]
    assert "x-hook-signature" not in headers
    notice = json.loads(raw)
    assert notice["Action"] == "Deactivated" and notice["Guid"] == item["webhookGUID"]
    patch(url, status=8)
    idle(url)
    assert len(receiver.bodies()) == 25  # an inactive webhook calls out no more


def test_delete_calls_the_deactivation_url(autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    url, _ = autotask
    wid = make_webhook(url, receiver)
    assert httpx.delete(f"{api(url)}/TicketWebhooks/{wid}", headers=HEADERS).json() == {"itemId": wid}
    idle(url)
    assert [json.loads(b)["Action"] for p, _h, b in receiver.hits if p == "/deactivated"] == ["Deactivated"]
    assert httpx.get(f"{api(url)}/TicketWebhooks/{wid}", headers=HEADERS).json() == {"item": None}


# ---- the webhook entities -----------------------------------------------------------------------------
def test_webhook_validation_and_duplicates(autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    url, _ = autotask
    base = {"name": "hook", "webhookUrl": receiver.url("/hook"), "deactivationUrl": receiver.url("/d"),
            "secretKey": SECRET}
    created = httpx.post(f"{api(url)}/TicketWebhooks", headers=HEADERS, json=base)
    wid = created.json()["itemId"]
    item = httpx.get(f"{api(url)}/TicketWebhooks/{wid}", headers=HEADERS).json()["item"]
    assert item["isActive"] is True and item["isReady"] is False and item["webhookGUID"]
    assert item["ownerResourceID"] == SANDBOX_RESOURCES["atrelay"]
    for bad in ({**base, "webhookUrl": receiver.url("/other")} | {"name": "n" * 51},
                {k: v for k, v in base.items() if k != "deactivationUrl"} | {"webhookUrl": receiver.url("/x")},
                {**base, "webhookUrl": receiver.url("/y"), "secretKey": "k" * 65},
                base):  # the same URL again: a duplicate
        response = httpx.post(f"{api(url)}/TicketWebhooks", headers=HEADERS, json=bad)
        assert response.status_code == 500 and response.json()["errors"], bad
    # The same URL on the other entity is not a duplicate.
    assert httpx.post(f"{api(url)}/TicketNoteWebhooks", headers=HEADERS, json=base).status_code == 200
    renamed = httpx.patch(f"{api(url)}/TicketWebhooks", headers=HEADERS, json={"id": wid, "name": "renamed"})
    assert renamed.json() == {"itemId": wid}
    found = httpx.post(f"{api(url)}/TicketWebhooks/query", headers=HEADERS,
                       json={"filter": [{"op": "eq", "field": "name", "value": "renamed"}]}).json()["items"]
    assert [h["id"] for h in found] == [wid]
    ids = field_ids(url, "TicketWebhookFields")
    assert {"status", "dueDateTime", "ticketNumber", "assignedResourceID", "lastActivityDate"} <= set(ids)
    assert sorted(ids.values()) != list(range(1, len(ids) + 1))  # tenant-specific, not 1..N
    httpx.post(f"{api(url)}/TicketWebhooks/{wid}/Fields", headers=HEADERS,
               json={"fieldID": ids["status"], "isSubscribedField": True, "isDisplayAlwaysField": False,
                     "webhookID": wid})
    fields = httpx.get(f"{api(url)}/TicketWebhooks/{wid}/Fields", headers=HEADERS).json()["items"]
    assert [(f["fieldID"], f["webhookID"]) for f in fields] == [(ids["status"], wid)]
    assert httpx.get(f"{api(url)}/TicketWebhooks/{wid}", headers=HEADERS).json()["item"]["isReady"] is True
    note_ids = field_ids(url, "TicketNoteWebhookFields")
    assert {"ticketID", "title", "description", "noteType", "creatorResourceID", "createdByContactID",
            "publish"} <= set(note_ids)


def test_excluded_resource_gets_no_callout(autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    url, _ = autotask
    wid = make_webhook(url, receiver)
    excluded = httpx.post(f"{api(url)}/TicketWebhooks/{wid}/ExcludedResources", headers=HEADERS,
                          json={"resourceID": SANDBOX_RESOURCES["atrelay"], "webhookID": wid})
    assert excluded.status_code == 200
    listed = httpx.get(f"{api(url)}/TicketWebhooks/{wid}/ExcludedResources", headers=HEADERS).json()["items"]
    assert [x["resourceID"] for x in listed] == [SANDBOX_RESOURCES["atrelay"]]
    patch(url, status=5)  # atrelay's own write
    httpx.post(f"{url}/_sandbox/tickets/{TICKET}/status", json={"status": "In Progress", "as": "mission-control"})
    idle(url)
    assert [(b["Fields"], b["PersonID"]) for b in receiver.bodies()] == [
        ({"Status": 8}, SANDBOX_RESOURCES["mission_control"])]
    child = listed[0]["id"]
    assert httpx.delete(f"{api(url)}/TicketWebhooks/{wid}/ExcludedResources/{child}", headers=HEADERS).status_code == 200
    patch(url, status=5)
    idle(url)
    assert receiver.bodies()[-1]["PersonID"] == SANDBOX_RESOURCES["atrelay"]


# ---- acting as someone ------------------------------------------------------------------------------
def test_contact_note_is_an_emailed_note_with_a_null_person(autotask: tuple[str, SandboxState],
                                                            receiver: Receiver) -> None:
    url, _ = autotask
    make_webhook(url, receiver, entity="TicketNoteWebhooks", path="/notes",
                 subscribed=("noteType",), always=("ticketID", "creatorResourceID", "createdByContactID"))
    made = httpx.post(f"{url}/_sandbox/tickets/{TICKET}/notes",
                      json={"title": "Re: form", "description": "Here you go", "as": "contact"}).json()
    assert made["noteType"] == 13 and made["createdByContactID"] == SANDBOX_CONTACT_ID
    assert made["creatorResourceID"] is None
    idle(url)
    (body,) = receiver.bodies("/notes")
    assert (body["Action"], body["EntityType"], body["Id"], body["PersonID"]) == ("Create", "TicketNote", made["id"], None)
    assert body["Fields"] == {"NoteType": 13, "TicketID": TICKET, "CreatorResourceID": None,
                              "CreatedByContactID": SANDBOX_CONTACT_ID}
    ticket = httpx.get(f"{api(url)}/Tickets/{TICKET}", headers=HEADERS).json()["item"]
    assert ticket["lastActivityPersonType"] == 2 and ticket["lastActivityResourceID"] is None
    assert httpx.get(f"{api(url)}/TicketNotes/{made['id']}", headers=HEADERS).json()["item"]["id"] == made["id"]
    assert httpx.get(f"{api(url)}/Tickets/{TICKET}/Notes/{made['id']}", headers=HEADERS).json()["item"] is not None
    assert httpx.get(f"{api(url)}/Tickets/50002/Notes/{made['id']}", headers=HEADERS).json() == {"item": None}


def test_api_writes_are_attributed_to_atrelay_and_people_to_themselves(autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    note = httpx.post(f"{api(url)}/Tickets/{TICKET}/Notes", headers=HEADERS,
                      json={"ticketID": TICKET, "title": "t", "description": "d", "noteType": 1, "publish": 1})
    stored = sandbox.notes[note.json()["itemId"]]
    assert stored["creatorResourceID"] == SANDBOX_RESOURCES["atrelay"] and stored["createdByContactID"] is None
    assert stored["createDateTime"].endswith("Z")
    for who in ("technician", "mission-control", "timezest"):
        httpx.patch(f"{url}/_sandbox/tickets/{TICKET}", json={"dueDateTime": f"2026-12-0{len(who) % 9 + 1}T09:00:00Z",
                                                              "as": who}).raise_for_status()
        ticket = httpx.get(f"{api(url)}/Tickets/{TICKET}", headers=HEADERS).json()["item"]
        assert ticket["lastActivityResourceID"] == SANDBOX_RESOURCES[who.replace("-", "_")]
        assert ticket["lastActivityPersonType"] == 1
    refused = patch(url, assignedResourceID=SANDBOX_RESOURCES["mission_control"])
    assert refused.status_code == 500 and "API-only" in refused.json()["errors"][0]
    assert patch(url, assignedResourceID=SANDBOX_RESOURCES["help_desk"]).status_code == 200
    people = httpx.post(f"{api(url)}/Resources/query", headers=HEADERS,
                        json={"filter": [{"op": "eq", "field": "userName",
                                          "value": SANDBOX_AUTOTASK_CREDENTIALS["username"]}]}).json()["items"]
    assert [p["id"] for p in people] == [SANDBOX_RESOURCES["atrelay"]]


# ---- TicketHistory and checklist -------------------------------------------------------------------
def test_ticket_history_records_who_changed_what(autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    httpx.post(f"{url}/_sandbox/tickets/{TICKET}/status", json={"status": "In Progress", "as": "technician"})
    patch(url, status=5)
    httpx.post(f"{url}/_sandbox/tickets/{TICKET}/notes", json={"title": "Hi", "description": "x", "as": "contact"})
    items = httpx.post(f"{api(url)}/TicketHistory/query", headers=HEADERS,
                       json={"filter": [{"op": "eq", "field": "ticketID", "value": TICKET}]}).json()["items"]
    assert [(i["action"], i["detail"], i["resourceID"]) for i in items] == [
        ("Edit", "Status changed from New to In Progress", SANDBOX_RESOURCES["technician"]),
        ("Edit", "Status changed from In Progress to Complete", SANDBOX_RESOURCES["atrelay"]),
        ("Note Added", "Note added: Hi", None),
    ]
    bad = httpx.post(f"{api(url)}/TicketHistory/query", headers=HEADERS,
                     json={"filter": [{"op": "gt", "field": "id", "value": 0}]})
    assert bad.status_code == 500 and bad.json()["errors"]
    view = httpx.get(f"{url}/_sandbox/tickets/{TICKET}").json()
    assert [(h["to"], h["resource_id"]) for h in view["history"]] == [
        (8, SANDBOX_RESOURCES["technician"]), (5, SANDBOX_RESOURCES["atrelay"])]


def test_checklist_query_and_completion_fire_no_webhook(autotask: tuple[str, SandboxState],
                                                        receiver: Receiver) -> None:
    url, _ = autotask
    make_webhook(url, receiver, subscribed=("status", "lastActivityDate"))
    seeded = httpx.post(f"{url}/_sandbox/tickets/{TICKET}/checklist", json={"items": [
        {"itemName": "Back up mailbox", "isImportant": True},
        {"itemName": "Say hello", "isImportant": False},
        {"itemName": "Wipe old laptop", "isImportant": True, "isCompleted": True}]}).json()["items"]
    query = {"filter": [{"op": "eq", "field": "ticketID", "value": TICKET},
                        {"op": "eq", "field": "isCompleted", "value": False},
                        {"op": "eq", "field": "isImportant", "value": True}]}
    open_items = httpx.post(f"{api(url)}/TicketChecklistItems/query", headers=HEADERS, json=query).json()["items"]
    assert [i["itemName"] for i in open_items] == ["Back up mailbox"]
    done = httpx.patch(f"{api(url)}/Tickets/{TICKET}/ChecklistItems", headers=HEADERS,
                       json={"id": seeded[0]["id"], "isCompleted": True})
    assert done.json() == {"itemId": seeded[0]["id"]}
    assert httpx.post(f"{api(url)}/TicketChecklistItems/query", headers=HEADERS, json=query).json()["items"] == []
    item = httpx.get(f"{api(url)}/TicketChecklistItems/{seeded[0]['id']}", headers=HEADERS).json()["item"]
    assert item["completedByResourceID"] == SANDBOX_RESOURCES["atrelay"] and item["completedDateTime"]
    idle(url)
    assert receiver.hits == []


# ---- thread limit ----------------------------------------------------------------------------------
def test_one_thread_bucket_for_the_tenant_unless_split(autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask

    def burst() -> list[int]:
        calls = [lambda: httpx.get(f"{api(url)}/Tickets/{TICKET}", headers=HEADERS, timeout=10),
                 lambda: httpx.post(f"{api(url)}/TicketNotes/query", headers=HEADERS, timeout=10,
                                    json={"filter": [{"op": "eq", "field": "ticketID", "value": TICKET}]})]
        with ThreadPoolExecutor(max_workers=2) as pool:
            return sorted(r.status_code for r in pool.map(lambda f: f(), calls))

    httpx.put(f"{url}/_sandbox/faults", json={"latency_ms": 300, "max_in_flight": 1}).raise_for_status()
    assert burst() == [200, 500]
    assert sandbox.max_in_flight_seen == {"tenant": 2}
    httpx.put(f"{url}/_sandbox/faults", json={"latency_ms": 300, "max_in_flight": 1,
                                              "thread_buckets": "entity"}).raise_for_status()
    assert burst() == [200, 200]
