"""Registering atrelay's ticket and ticket-note webhooks in an Autotask tenant (Autotask REST docs,
"Webhooks" and "Creating webhooks").

Idempotent: a webhook is found by its name (or by its URL, which Autotask refuses to duplicate) and
updated in place, its fields and excluded resources brought to what :data:`SPECS` says. Field ids
come from the ``fieldID`` picklist of ``<Entity>WebhookFields/entityInformation/fields``, matched
to field names case-insensitively: they are tenant data, never constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.autotask.client import AutotaskClient
from connectors.autotask.models import FieldInfo, Webhook, WebhookExcludedResource, WebhookField

__all__ = [
    "DEACTIVATION_PATH",
    "NOTE_WEBHOOK",
    "SPECS",
    "TICKET_WEBHOOK",
    "InstalledWebhook",
    "WebhookSetupError",
    "WebhookSpec",
    "find_webhook",
    "install_webhooks",
    "remove_webhooks",
    "webhook_status",
]

DEACTIVATION_PATH = "/webhooks/autotask/deactivated"


class WebhookSetupError(Exception):
    """The tenant lacks something registration needs (a field, webhook support); the text says what."""


@dataclass(frozen=True)
class WebhookSpec:
    entity: str  # the webhook entity: TicketWebhooks | TicketNoteWebhooks
    fields_entity: str  # where the fieldID picklist lives
    name: str  # <= 50 characters; how install finds its own webhook again
    path: str  # under the public base URL
    on_create: bool
    on_update: bool
    subscribed: tuple[str, ...]
    display_always: tuple[str, ...] = ()


TICKET_WEBHOOK = WebhookSpec(
    entity="TicketWebhooks", fields_entity="TicketWebhookFields", name="atrelay: ticket status",
    path="/webhooks/autotask/tickets", on_create=False, on_update=True,
    subscribed=("status", "dueDateTime"), display_always=("ticketNumber", "assignedResourceID"),
)
NOTE_WEBHOOK = WebhookSpec(
    entity="TicketNoteWebhooks", fields_entity="TicketNoteWebhookFields", name="atrelay: ticket notes",
    path="/webhooks/autotask/notes", on_create=True, on_update=False,
    subscribed=("ticketID", "title", "description", "noteType", "creatorResourceID", "createdByContactID"),
)
SPECS = (TICKET_WEBHOOK, NOTE_WEBHOOK)


@dataclass
class InstalledWebhook:
    spec: WebhookSpec
    webhook: Webhook
    created: bool = False
    fields: list[WebhookField] = field(default_factory=list)
    excluded: list[WebhookExcludedResource] = field(default_factory=list)


def _items(body: Any) -> list[dict[str, Any]]:
    return list((body or {}).get("items") or [])


def _field_ids(client: AutotaskClient, spec: WebhookSpec) -> dict[str, int]:
    body = client.call("GET", f"{spec.fields_entity}/entityInformation/fields")
    fields = [FieldInfo.model_validate(f) for f in (body or {}).get("fields") or []]
    picklist = next((f for f in fields if f.name.lower() == "fieldid" and f.picklist_values), None)
    if picklist is None or picklist.picklist_values is None:
        raise WebhookSetupError(f"{spec.fields_entity}: no fieldID picklist (does the tenant support webhooks?)")
    ids = {v.label.lower(): int(v.value) for v in picklist.picklist_values if v.is_active}
    missing = [name for name in (*spec.subscribed, *spec.display_always) if name.lower() not in ids]
    if missing:
        raise WebhookSetupError(f"{spec.fields_entity}: the tenant offers no webhook field {', '.join(missing)}")
    return ids


def find_webhook(client: AutotaskClient, spec: WebhookSpec, url: str | None = None) -> Webhook | None:
    """atrelay's webhook of this kind: by name, else by callout URL."""
    conditions: list[dict[str, Any]] = [{"op": "eq", "field": "name", "value": spec.name}]
    if url:
        conditions.append({"op": "eq", "field": "webhookUrl", "value": url})
    body = client.call("POST", f"{spec.entity}/query",
                       json={"MaxRecords": 10, "filter": [{"op": "or", "items": conditions}]})
    found = [Webhook.model_validate(item) for item in _items(body)]
    return next((w for w in found if w.name == spec.name), found[0] if found else None)


def _children(client: AutotaskClient, spec: WebhookSpec, webhook_id: int, child: str) -> list[dict[str, Any]]:
    return _items(client.call("GET", f"{spec.entity}/{webhook_id}/{child}"))


def _sync_fields(client: AutotaskClient, spec: WebhookSpec, webhook_id: int, ids: dict[str, int]) -> None:
    wanted: dict[int, tuple[bool, bool]] = {}
    for name in spec.subscribed:
        wanted[ids[name.lower()]] = (True, name in spec.display_always)
    for name in spec.display_always:
        sub, _ = wanted.get(ids[name.lower()], (False, True))
        wanted[ids[name.lower()]] = (sub, True)
    present = [WebhookField.model_validate(f) for f in _children(client, spec, webhook_id, "Fields")]
    keep: set[int] = set()
    for f in present:
        if wanted.get(f.field_id) == (f.is_subscribed_field, f.is_display_always_field) and f.field_id not in keep:
            keep.add(f.field_id)
        else:
            client.call("DELETE", f"{spec.entity}/{webhook_id}/Fields/{f.id}")
    for field_id, (subscribed, display) in wanted.items():
        if field_id not in keep:
            client.call("POST", f"{spec.entity}/{webhook_id}/Fields", json={
                "fieldID": field_id, "isSubscribedField": subscribed, "isDisplayAlwaysField": display,
                "webhookID": webhook_id}, idempotent=False)


def _sync_exclusion(client: AutotaskClient, spec: WebhookSpec, webhook_id: int, resource_id: int | None) -> None:
    if resource_id is None:
        return
    present = [WebhookExcludedResource.model_validate(r)
               for r in _children(client, spec, webhook_id, "ExcludedResources")]
    if all(r.resource_id != resource_id for r in present):
        client.call("POST", f"{spec.entity}/{webhook_id}/ExcludedResources",
                    json={"resourceID": resource_id, "webhookID": webhook_id}, idempotent=False)


def install_webhooks(client: AutotaskClient, *, base_url: str, secret: str, exclude_resource_id: int | None,
                     notification_email: str | None = None) -> list[InstalledWebhook]:
    """Create or update both webhooks so they call ``base_url``; return them as Autotask now shows them."""
    base = base_url.rstrip("/")
    out: list[InstalledWebhook] = []
    for spec in SPECS:
        ids = _field_ids(client, spec)
        url = base + spec.path
        body: dict[str, Any] = {
            "name": spec.name, "isActive": True, "webhookUrl": url, "deactivationUrl": base + DEACTIVATION_PATH,
            "secretKey": secret, "isSubscribedToCreateEvents": spec.on_create,
            "isSubscribedToUpdateEvents": spec.on_update, "isSubscribedToDeleteEvents": False,
            "sendThresholdExceededNotification": True,
        }
        if notification_email:
            body["notificationEmailAddress"] = notification_email
        existing = find_webhook(client, spec, url)
        if existing is None:
            webhook_id = int(client.call("POST", spec.entity, json=body, idempotent=False)["itemId"])
        else:
            webhook_id = existing.id
            client.call("PATCH", spec.entity, json={"id": webhook_id, **body})
        _sync_fields(client, spec, webhook_id, ids)
        _sync_exclusion(client, spec, webhook_id, exclude_resource_id)
        out.append(_describe(client, spec, webhook_id, created=existing is None))
    return out


def _describe(client: AutotaskClient, spec: WebhookSpec, webhook_id: int, *, created: bool = False) -> InstalledWebhook:
    webhook = Webhook.model_validate(client.call("GET", f"{spec.entity}/{webhook_id}")["item"])
    return InstalledWebhook(
        spec, webhook, created,
        [WebhookField.model_validate(f) for f in _children(client, spec, webhook_id, "Fields")],
        [WebhookExcludedResource.model_validate(r) for r in _children(client, spec, webhook_id, "ExcludedResources")],
    )


def webhook_status(client: AutotaskClient) -> list[tuple[WebhookSpec, InstalledWebhook | None]]:
    """Each of atrelay's webhooks as Autotask shows it, or None where it is not installed."""
    out: list[tuple[WebhookSpec, InstalledWebhook | None]] = []
    for spec in SPECS:
        found = find_webhook(client, spec)
        out.append((spec, _describe(client, spec, found.id) if found is not None else None))
    return out


def remove_webhooks(client: AutotaskClient) -> int:
    """Delete atrelay's webhooks (Autotask then calls their deactivation URL); return how many."""
    removed = 0
    for spec in SPECS:
        found = find_webhook(client, spec)
        if found is not None:
            client.call("DELETE", f"{spec.entity}/{found.id}", idempotent=False)
            removed += 1
    return removed
