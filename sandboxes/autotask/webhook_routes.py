"""HTTP routes of the Autotask sandbox's webhook entities and of their control endpoints.

Autotask side (see ``sandboxes.autotask.webhooks`` for the behaviour): ``/V1.0/TicketWebhooks`` and
``/V1.0/TicketNoteWebhooks`` (POST, PATCH, ``GET|DELETE /{id}``, ``POST /query``, children
``/{id}/Fields`` and ``/{id}/ExcludedResources``: POST, GET, ``DELETE /{childId}``), and
``GET /V1.0/TicketWebhookFields/entityInformation/fields`` / ``TicketNoteWebhookFields``.

Control side (not Autotask): ``GET /_sandbox/webhooks`` (webhooks with fields, exclusions, counters
``delivered/failed/dropped/discarded/attempts_failed/pending``; ``error_log``, ``lost``, ``notices``,
``recent``), ``PUT /_sandbox/webhooks`` (any of ``retry_seconds``, ``timeout_seconds``,
``max_attempts``, ``deactivate_after``, ``drop_next``), ``GET /_sandbox/webhooks/idle?timeout=S``
(waits until nothing is pending, answers ``{"idle", "pending"}``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from sandboxes.autotask.query import errors, lowered
from sandboxes.autotask.webhooks import ENTITIES, WebhookError, WebhookHub

__all__ = ["add_webhook_routes"]

Query = Callable[[list[dict[str, Any]], dict[str, Any]], dict[str, Any]]


def _errors(*messages: str) -> JSONResponse:
    return errors(500, *messages)


def _picklist_field(picklist: list[tuple[int, str]]) -> list[dict[str, Any]]:
    def field(name: str, data_type: str, values: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"name": name, "dataType": data_type, "length": 0, "isRequired": name != "id",
                "isReadOnly": name == "id", "isQueryable": True, "isReference": name == "webhookID",
                "referenceEntityType": "", "isPickList": values is not None, "picklistValues": values,
                "picklistParentValueField": "", "isSupportedWebhookField": False}
    values = [{"value": str(fid), "label": name, "isDefaultValue": False, "sortOrder": i, "parentValue": "",
               "isActive": True, "isSystem": True} for i, (fid, name) in enumerate(picklist)]
    return [field("id", "long"), field("fieldID", "integer", values), field("isDisplayAlwaysField", "boolean"),
            field("isSubscribedField", "boolean"), field("webhookID", "integer")]


def add_webhook_routes(app: FastAPI, hub: WebhookHub, api: str,
                       query: Query) -> None:
    """Register the webhook entities on ``app`` under ``api`` (lower-case), plus the control endpoints."""
    for segment, (_etype, picklist) in ENTITIES.items():
        _entity_routes(app, hub, f"{api}/{segment}", segment, query)
        info = segment.replace("webhooks", "webhookfields")
        app.add_api_route(f"{api}/{info}/entityinformation/fields",
                          _constant({"fields": _picklist_field(picklist)}), methods=["GET"])

    async def control_get() -> dict[str, Any]:
        return hub.snapshot()

    async def control_put(request: Request) -> dict[str, Any]:
        body = await request.json()
        settings = hub.outbox.settings
        for key in ("retry_seconds", "timeout_seconds"):
            if key in body:
                setattr(settings, key, float(body[key]))
        for key in ("max_attempts", "deactivate_after"):
            if key in body:
                setattr(settings, key, int(body[key]))
        if "drop_next" in body:
            hub.outbox.drop_next = int(body["drop_next"])
        return {"settings": dict(settings.__dict__), "drop_next": hub.outbox.drop_next}

    async def control_idle(timeout: float = 10.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while hub.outbox.pending() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        pending = hub.outbox.pending()
        return {"idle": pending == 0, "pending": pending}

    app.add_api_route("/_sandbox/webhooks", control_get, methods=["GET"])
    app.add_api_route("/_sandbox/webhooks", control_put, methods=["PUT"])
    app.add_api_route("/_sandbox/webhooks/idle", control_idle, methods=["GET"])


def _constant(value: dict[str, Any]) -> Callable[[], Any]:
    async def handler() -> dict[str, Any]:
        return value
    return handler


def _entity_routes(app: FastAPI, hub: WebhookHub, base: str, entity: str,
                   query: Query) -> None:
    async def create(request: Request) -> Response:
        try:
            return JSONResponse({"itemId": hub.create(entity, lowered(await request.json()))})
        except WebhookError as exc:
            return _errors(str(exc))

    async def patch(request: Request) -> Response:
        try:
            return JSONResponse({"itemId": hub.update(entity, lowered(await request.json()))})
        except WebhookError as exc:
            return _errors(str(exc))

    async def get(webhook_id: int) -> dict[str, Any]:
        hook = hub.find(entity, webhook_id)
        return {"item": hub.public(hook) if hook is not None else None}

    async def delete(webhook_id: int) -> Response:
        try:
            hub.delete(entity, webhook_id)
        except WebhookError as exc:
            return _errors(str(exc))
        return JSONResponse({"itemId": webhook_id})

    async def search(request: Request) -> Response:
        try:
            records = [hub.public(h) for h in hub.webhooks.values() if h["_entity"] == entity]
            return JSONResponse(query(records, await request.json()))
        except ValueError as exc:
            return _errors(str(exc))

    app.add_api_route(base, create, methods=["POST"])
    app.add_api_route(base, patch, methods=["PATCH"])
    app.add_api_route(f"{base}/query", search, methods=["POST"])
    app.add_api_route(f"{base}/{{webhook_id}}", get, methods=["GET"])
    app.add_api_route(f"{base}/{{webhook_id}}", delete, methods=["DELETE"])
    for kind, segment in (("fields", "fields"), ("excluded", "excludedresources")):
        _child_routes(app, hub, f"{base}/{{webhook_id}}/{segment}", entity, kind)


def _child_routes(app: FastAPI, hub: WebhookHub, base: str, entity: str, kind: str) -> None:
    async def add(webhook_id: int, request: Request) -> Response:
        try:
            return JSONResponse({"itemId": hub.add_child(entity, kind, webhook_id, lowered(await request.json()))})
        except WebhookError as exc:
            return _errors(str(exc))

    async def listing(webhook_id: int) -> dict[str, Any]:
        items = hub.children(kind, webhook_id) if hub.find(entity, webhook_id) is not None else []
        return {"items": items, "pageDetails": {"count": len(items), "requestCount": 500,
                                                "prevPageUrl": None, "nextPageUrl": None}}

    async def remove(webhook_id: int, child_id: int) -> Response:
        try:
            hub.delete_child(entity, kind, webhook_id, child_id)
        except WebhookError as exc:
            return _errors(str(exc))
        return JSONResponse({"itemId": child_id})

    app.add_api_route(base, add, methods=["POST"])
    app.add_api_route(base, listing, methods=["GET"])
    app.add_api_route(f"{base}/{{child_id}}", remove, methods=["DELETE"])
