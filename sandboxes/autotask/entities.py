"""Companies, Resources, TicketHistory and TicketChecklistItems of the Autotask sandbox.

* ``GET /V1.0/Companies/{id}`` (``{"item": null}`` for an unknown id, as Autotask answers).
* ``POST /V1.0/Resources/query`` (filter grammar), ``GET /V1.0/Resources/{id}``,
  ``GET /V1.0/Resources/entityInformation/fields`` (the ``licenseType`` picklist).
* ``POST /V1.0/TicketHistory/query``: Autotask only lets TicketHistory be queried by ``ticketID`` with
  ``eq``; anything else is a 500 here. Items are ``{id, ticketID, action, detail, date, resourceID}``,
  oldest first. The real ``action``/``detail`` texts are not documented; the sandbox writes
  ``action: "Edit"``, ``detail: "Status changed from New to Complete"`` (labels, not ids; "Due Date",
  "Primary Resource", "Title", ... for other fields) and ``action: "Note Added"``,
  ``detail: "Note added: <title>"``. These strings are assumptions: match on them only in tests.
  ``resourceID`` is null when a contact acted.
* ``POST /V1.0/TicketChecklistItems/query`` (filter on ``ticketID``, ``isCompleted``, ``isImportant``,
  ...), ``GET /V1.0/TicketChecklistItems/{id}``; ``POST|PATCH /V1.0/Tickets/{id}/ChecklistItems`` and
  ``DELETE /V1.0/Tickets/{id}/ChecklistItems/{itemId}`` (Autotask REST docs, TicketChecklistItems entity: at
  most 40 items, ``itemName``
  <= 600, the root is read-only). Completing sets ``completedByResourceID``/``completedDateTime``,
  un-completing clears them. Checklist changes fire no webhook and leave the ticket untouched.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from sandboxes.autotask.data import COMPANIES, LICENSE_TYPES
from sandboxes.autotask.query import errors, lowered, now, run_query
from sandboxes.autotask.state import Actor, SandboxState

__all__ = ["MAX_CHECKLIST_ITEMS", "add_checklist_item", "add_entity_routes", "update_checklist_item"]

MAX_CHECKLIST_ITEMS = 40


def add_checklist_item(st: SandboxState, ticket_id: int, body: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """Create one item from a lower-cased body; ValueError with the reason."""
    if ticket_id not in st.tickets:
        raise ValueError(f"Unable to find the parent Ticket with ID {ticket_id}.")
    items = [c for c in st.checklist.values() if c["ticketID"] == ticket_id]
    if len(items) >= MAX_CHECKLIST_ITEMS:
        raise ValueError(f"A ticket checklist can have at most {MAX_CHECKLIST_ITEMS} items.")
    name = body.get("itemname")
    if not isinstance(name, str) or not name or len(name) > 600:
        raise ValueError("itemName is required and must be at most 600 characters.")
    flags = {k: body.get(k.lower(), False) for k in ("isCompleted", "isImportant")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise ValueError("isCompleted and isImportant must be true or false.")
    item_id = next(st.checklist_ids)
    position = body.get("position") or max((c["position"] for c in items), default=0) + 1
    item = {"id": item_id, "ticketID": ticket_id, "itemName": name, **flags,
            "completedByResourceID": actor.resource_id if flags["isCompleted"] else None,
            "completedDateTime": now() if flags["isCompleted"] else None,
            "knowledgebaseArticleID": body.get("knowledgebasearticleid"), "position": position}
    st.checklist[item_id] = item
    return item


def update_checklist_item(st: SandboxState, ticket_id: int, body: dict[str, Any], actor: Actor) -> dict[str, Any]:
    item_id = body.get("id")
    item = st.checklist.get(item_id) if isinstance(item_id, int) else None
    if item is None or item["ticketID"] != ticket_id:
        raise ValueError(f"Unable to find the checklist item with ID {body.get('id')} on Ticket {ticket_id}.")
    if "itemname" in body:
        name = body["itemname"]
        if not isinstance(name, str) or not name or len(name) > 600:
            raise ValueError("itemName must be at most 600 characters.")
        item["itemName"] = name
    for key in ("isCompleted", "isImportant"):
        if key.lower() in body:
            if not isinstance(body[key.lower()], bool):
                raise ValueError(f"{key} must be true or false.")
            if key == "isCompleted" and body["iscompleted"] != item["isCompleted"]:
                done = body["iscompleted"]
                item["completedByResourceID"] = actor.resource_id if done else None
                item["completedDateTime"] = now() if done else None
            item[key] = body[key.lower()]
    if body.get("position") is not None:
        item["position"] = body["position"]
    return item


def _history_ticket(body: dict[str, Any]) -> int:
    conditions = lowered(body).get("filter") or []
    if (len(conditions) != 1 or str(conditions[0].get("op", "")).lower() != "eq"
            or str(conditions[0].get("field", "")).lower() != "ticketid"):
        raise ValueError("TicketHistory can only be queried by ticketID with the eq operator.")
    value = conditions[0].get("value")
    if not str(value).isdigit():
        raise ValueError(f"Value {value} is not a valid value for field ticketID.")
    return int(value)


def add_entity_routes(app: FastAPI, st: SandboxState, api: str) -> None:
    @app.get(f"{api}/companies/{{company_id}}")
    async def get_company(company_id: int) -> dict[str, Any]:
        return {"item": COMPANIES.get(company_id)}

    @app.post(f"{api}/resources/query")
    async def query_resources(request: Request) -> Response:
        try:
            return JSONResponse(run_query(list(st.resources.values()), await request.json()))
        except ValueError as exc:
            return errors(500, str(exc))

    @app.get(f"{api}/resources/entityinformation/fields")
    async def resource_fields() -> dict[str, Any]:
        picklist = [{"value": str(v), "label": label, "isDefaultValue": default, "sortOrder": i, "parentValue": "",
                     "isActive": True, "isSystem": True} for i, (v, label, default) in enumerate(LICENSE_TYPES)]
        return {"fields": [
            {"name": name, "dataType": kind, "length": 0, "isRequired": False, "isReadOnly": name == "id",
             "isQueryable": True, "isReference": False, "referenceEntityType": "", "isPickList": values is not None,
             "picklistValues": values, "picklistParentValueField": "", "isSupportedWebhookField": False}
            for name, kind, values in (("id", "long", None), ("userName", "string", None),
                                       ("firstName", "string", None), ("lastName", "string", None),
                                       ("licenseType", "integer", picklist), ("isActive", "boolean", None))]}

    @app.get(f"{api}/resources/{{resource_id}}")
    async def get_resource(resource_id: int) -> dict[str, Any]:
        return {"item": st.resources.get(resource_id)}

    @app.post(f"{api}/tickethistory/query")
    async def query_history(request: Request) -> Response:
        try:
            ticket_id = _history_ticket(await request.json())
        except ValueError as exc:
            return errors(500, str(exc))
        items = [h for h in st.changes if h["ticketID"] == ticket_id]
        return JSONResponse({"items": items, "pageDetails": {"count": len(items), "requestCount": 500,
                                                             "prevPageUrl": None, "nextPageUrl": None}})

    @app.post(f"{api}/ticketchecklistitems/query")
    async def query_checklist(request: Request) -> Response:
        try:
            return JSONResponse(run_query(list(st.checklist.values()), await request.json()))
        except ValueError as exc:
            return errors(500, str(exc))

    @app.get(f"{api}/ticketchecklistitems/{{item_id}}")
    async def get_checklist_item(item_id: int) -> dict[str, Any]:
        return {"item": st.checklist.get(item_id)}

    @app.post(f"{api}/tickets/{{ticket_id}}/checklistitems")
    async def create_checklist_item(ticket_id: int, request: Request) -> Response:
        try:
            who = st.api_actor(request.headers.get("impersonationresourceid"))
            item = add_checklist_item(st, ticket_id, lowered(await request.json()), who)
        except ValueError as exc:
            return errors(500, str(exc))
        return JSONResponse({"itemId": item["id"]})

    @app.patch(f"{api}/tickets/{{ticket_id}}/checklistitems")
    async def patch_checklist_item(ticket_id: int, request: Request) -> Response:
        try:
            who = st.api_actor(request.headers.get("impersonationresourceid"))
            item = update_checklist_item(st, ticket_id, lowered(await request.json()), who)
        except ValueError as exc:
            return errors(500, str(exc))
        return JSONResponse({"itemId": item["id"]})

    @app.delete(f"{api}/tickets/{{ticket_id}}/checklistitems/{{item_id}}")
    async def delete_checklist_item(ticket_id: int, item_id: int) -> Response:
        item = st.checklist.get(item_id)
        if item is None or item["ticketID"] != ticket_id:
            return errors(500, f"Unable to find the checklist item with ID {item_id} on Ticket {ticket_id}.")
        del st.checklist[item_id]
        return JSONResponse({"itemId": item_id})
