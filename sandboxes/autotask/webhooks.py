"""Ticket and ticket-note webhooks of the Autotask sandbox: the entities (Autotask REST docs, "Webhooks":
TicketWebhooks and its child entities) and when they fire.

Entities, for ``TicketWebhooks`` and ``TicketNoteWebhooks`` alike (paths are matched lower-cased):

* ``POST /V1.0/TicketWebhooks`` -> ``{"itemId"}``. ``webhookUrl`` and ``deactivationUrl`` are required
  (<= 500), ``name`` <= 50, ``secretKey`` <= 64, ``notificationEmailAddress`` <= 150; a second webhook
  of the same entity with the same ``webhookUrl`` is a duplicate (D-wherr). Rejections are
  ``500 {"errors": [...]}``. Omitted booleans default to ``isActive: true`` and ``false`` for the
  three ``isSubscribedTo*Events`` (an assumption: the docs do not say). ``ownerResourceID`` is the
  API user's resource, ``webhookGUID`` a fresh UUID.
* ``PATCH`` (body with ``id``), ``GET /{id}`` (``{"item": ...}``, ``isReady`` = at least one field
  attached), ``DELETE /{id}`` (calls the deactivation URL), ``POST /query`` (the filter grammar).
* Children ``/{id}/Fields`` (``fieldID``, ``isSubscribedField``, ``isDisplayAlwaysField``,
  ``webhookID``) and ``/{id}/ExcludedResources`` (``resourceID``, ``webhookID``): POST, GET
  (``{"items": [...]}``), ``DELETE /{childId}``.
* ``GET /V1.0/TicketWebhookFields/entityInformation/fields`` (and ``TicketNoteWebhookFields``): the
  ``fieldID`` picklist, values = tenant-specific field ids as strings, labels = field names.

Callouts: an update fires for an active, ready webhook subscribed to updates when one of its
subscribed fields changed and the acting resource is not excluded; ``Fields`` holds the changed
subscribed fields plus the display-always ones (Autotask's documentation does not say whether it sends
only changed fields; this models "changed only"). A create fires for webhooks subscribed to creates,
with every subscribed and display-always field. Payload keys are PascalCase; ``PersonID`` is the
acting resource, ``null`` for a contact. Deactivation (PATCH ``isActive: false``, DELETE, or 25
consecutive failures) POSTs ``{"Action": "Deactivated", "Guid", "EntityType", "Id": <webhook id>,
"EventTime"}`` to the deactivation URL with no ``X-Hook-Signature``: that shape is an assumption, and
atrelay must not trust such a notice anyway (GHSA-hh59-fgrr-93hf).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandboxes.autotask.data import NOTE_WEBHOOK_FIELDS, TICKET_WEBHOOK_FIELDS
from sandboxes.autotask.delivery import Outbox
from sandboxes.common.state_file import IdSequence

__all__ = ["ENTITIES", "WebhookError", "WebhookHub"]

#: path segment -> (EntityType in payloads, the fieldID picklist)
ENTITIES: dict[str, tuple[str, list[tuple[int, str]]]] = {
    "ticketwebhooks": ("Ticket", TICKET_WEBHOOK_FIELDS),
    "ticketnotewebhooks": ("TicketNote", NOTE_WEBHOOK_FIELDS),
}
_LIMITS = {"name": 50, "webhookurl": 500, "deactivationurl": 500, "secretkey": 64,
           "notificationemailaddress": 150}
_BOOLS = {"isactive": "isActive", "issubscribedtocreateevents": "isSubscribedToCreateEvents",
          "issubscribedtoupdateevents": "isSubscribedToUpdateEvents",
          "issubscribedtodeleteevents": "isSubscribedToDeleteEvents",
          "sendthresholdexceedednotification": "sendThresholdExceededNotification"}
_STRINGS = {"name": "name", "webhookurl": "webhookUrl", "deactivationurl": "deactivationUrl",
            "secretkey": "secretKey", "notificationemailaddress": "notificationEmailAddress"}


class WebhookError(ValueError):
    """A rejected write; the message goes into ``errors[]``."""


def _event_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


class WebhookHub:
    """Webhooks, their fields and exclusions, and the decision to call out; delivery is the Outbox's."""

    def __init__(self, resource_exists: Callable[[int], bool], owner_resource_id: int) -> None:
        self.resource_exists = resource_exists
        self.owner_resource_id = owner_resource_id
        self.outbox = Outbox(on_exhausted=self._exhausted)
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.webhooks: dict[int, dict[str, Any]] = {}  # id -> wire record (+ "_entity")
            self.fields: dict[int, dict[str, Any]] = {}
            self.exclusions: dict[int, dict[str, Any]] = {}
            self.sequences: dict[int, int] = {}
            self._ids = IdSequence(4101)  # one sequence for both entities: outbox keys stay unique
            self._child_ids = IdSequence(610001)
            self.outbox.reset()

    def stop(self) -> None:
        self.outbox.stop()

    def dump(self) -> dict[str, Any]:
        """Webhooks (with secrets: the state file is 0600), fields, exclusions, sequence numbers, next ids."""
        with self._lock:
            return {"webhooks": [dict(h) for h in self.webhooks.values()],
                    "fields": [dict(f) for f in self.fields.values()],
                    "exclusions": [dict(x) for x in self.exclusions.values()],
                    "sequences": [[k, v] for k, v in self.sequences.items()],
                    "next_id": self._ids.peek, "next_child_id": self._child_ids.peek}

    def restore(self, data: dict[str, Any]) -> None:
        """The inverse of ``dump``; pending callouts are not kept (a restart loses them, as a crash would)."""
        hooks = {int(h["id"]): dict(h) for h in data["webhooks"]}
        if any(h["_entity"] not in ENTITIES for h in hooks.values()):
            raise ValueError("unknown webhook entity")
        fields = {int(f["id"]): dict(f) for f in data["fields"]}
        exclusions = {int(x["id"]): dict(x) for x in data["exclusions"]}
        sequences = {int(k): int(v) for k, v in data["sequences"]}
        ids, child_ids = IdSequence(int(data["next_id"])), IdSequence(int(data["next_child_id"]))
        with self._lock:
            self.webhooks, self.fields, self.exclusions, self.sequences = hooks, fields, exclusions, sequences
            self._ids, self._child_ids = ids, child_ids

    # ---- entity operations ------------------------------------------------------------------
    def find(self, entity: str, webhook_id: int) -> dict[str, Any] | None:
        hook = self.webhooks.get(webhook_id)
        return hook if hook is not None and hook["_entity"] == entity else None

    def _apply(self, entity: str, hook: dict[str, Any], body: dict[str, Any]) -> None:
        for key, name in _STRINGS.items():
            if key in body:
                value = body[key]
                if value is not None and not isinstance(value, str):
                    raise WebhookError(f"{name} must be a string.")
                if value is not None and len(value) > _LIMITS[key]:
                    raise WebhookError(f"{name} exceeds the maximum length of {_LIMITS[key]}.")
                hook[name] = value
        for key, name in _BOOLS.items():
            if key in body:
                if not isinstance(body[key], bool):
                    raise WebhookError(f"{name} must be true or false.")
                hook[name] = body[key]
        for name in ("webhookUrl", "deactivationUrl"):
            if not hook.get(name):
                raise WebhookError(f"{name} is required.")
        for other in self.webhooks.values():
            if other["id"] != hook["id"] and other["_entity"] == entity and other["webhookUrl"] == hook["webhookUrl"]:
                raise WebhookError(
                    f"A webhook for this entity with the URL {hook['webhookUrl']} already exists "
                    f"(id {other['id']}); duplicate webhooks are not allowed.")

    def create(self, entity: str, body: dict[str, Any]) -> int:
        with self._lock:
            hook: dict[str, Any] = {
                "id": 0, "name": None, "webhookUrl": None, "deactivationUrl": None, "secretKey": None,
                "isActive": True, "isReady": False, "isSubscribedToCreateEvents": False,
                "isSubscribedToUpdateEvents": False, "isSubscribedToDeleteEvents": False,
                "notificationEmailAddress": None, "ownerResourceID": self.owner_resource_id,
                "sendThresholdExceededNotification": False, "webhookGUID": str(uuid.uuid4()),
                "_entity": entity,
            }
            self._apply(entity, hook, body)
            hook["id"] = next(self._ids)
            self.webhooks[hook["id"]] = hook
            self.sequences[hook["id"]] = 0
            return int(hook["id"])

    def update(self, entity: str, body: dict[str, Any]) -> int:
        with self._lock:
            webhook_id = body.get("id")
            hook = self.find(entity, webhook_id) if isinstance(webhook_id, int) else None
            if hook is None:
                raise WebhookError(f"Unable to find the webhook with ID {body.get('id')}.")
            draft = dict(hook)
            self._apply(entity, draft, body)
            was_active = hook["isActive"]
            hook.update(draft)
            if was_active and not hook["isActive"]:
                self._deactivated(hook)
            return int(hook["id"])

    def delete(self, entity: str, webhook_id: int) -> None:
        with self._lock:
            hook = self.find(entity, webhook_id)
            if hook is None:
                raise WebhookError(f"Unable to find the webhook with ID {webhook_id}.")
            del self.webhooks[webhook_id]
            self.fields = {k: f for k, f in self.fields.items() if f["webhookID"] != webhook_id}
            self.exclusions = {k: x for k, x in self.exclusions.items() if x["webhookID"] != webhook_id}
            self._deactivated(hook)

    def public(self, hook: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in hook.items() if not k.startswith("_")}
        out["isReady"] = any(f["webhookID"] == hook["id"] for f in self.fields.values())
        return out

    def children(self, kind: str, webhook_id: int) -> list[dict[str, Any]]:
        table = self.fields if kind == "fields" else self.exclusions
        return [dict(c) for c in table.values() if c["webhookID"] == webhook_id]

    def add_child(self, entity: str, kind: str, webhook_id: int, body: dict[str, Any]) -> int:
        with self._lock:
            if self.find(entity, webhook_id) is None:
                raise WebhookError(f"Unable to find the parent webhook with ID {webhook_id}.")
            if body.get("webhookid") not in (None, webhook_id):
                raise WebhookError("webhookID does not match the parent webhook in the URL.")
            child_id = next(self._child_ids)
            if kind == "fields":
                raw = body.get("fieldid")
                field_id = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None
                names = dict(ENTITIES[entity][1])
                if field_id not in names:
                    raise WebhookError(f"Value {raw} is not a valid value for field fieldID.")
                if any(f["webhookID"] == webhook_id and f["fieldID"] == field_id for f in self.fields.values()):
                    raise WebhookError(f"Field {field_id} is already attached to webhook {webhook_id}.")
                flags = {k: body.get(k.lower(), False) for k in ("isSubscribedField", "isDisplayAlwaysField")}
                if not all(isinstance(v, bool) for v in flags.values()):
                    raise WebhookError("isSubscribedField and isDisplayAlwaysField must be true or false.")
                self.fields[child_id] = {"id": child_id, "fieldID": field_id, **flags, "webhookID": webhook_id}
            else:
                rid = body.get("resourceid")
                if not isinstance(rid, int) or not self.resource_exists(rid):
                    raise WebhookError(f"Value {rid} is not a valid value for field resourceID.")
                if any(x["webhookID"] == webhook_id and x["resourceID"] == rid for x in self.exclusions.values()):
                    raise WebhookError(f"Resource {rid} is already excluded from webhook {webhook_id}.")
                self.exclusions[child_id] = {"id": child_id, "resourceID": rid, "webhookID": webhook_id}
            return child_id

    def delete_child(self, entity: str, kind: str, webhook_id: int, child_id: int) -> None:
        with self._lock:
            table = self.fields if kind == "fields" else self.exclusions
            child = table.get(child_id)
            if self.find(entity, webhook_id) is None or child is None or child["webhookID"] != webhook_id:
                raise WebhookError(f"Unable to find the child with ID {child_id} on webhook {webhook_id}.")
            del table[child_id]

    # ---- callouts ---------------------------------------------------------------------------
    def record_changed(self, entity: str, record: dict[str, Any], action: str, changed: set[str],
                       person_id: int | None) -> int:
        """Queue the callouts one create/update causes; returns how many were produced."""
        etype, picklist = ENTITIES[entity]
        names = dict(picklist)
        subscribed_to = {"Create": "isSubscribedToCreateEvents", "Update": "isSubscribedToUpdateEvents"}[action]
        produced = 0
        with self._lock:
            for hook in self.webhooks.values():
                if hook["_entity"] != entity or not hook["isActive"] or not hook[subscribed_to]:
                    continue
                fields = self.children("fields", hook["id"])
                if not fields:
                    continue  # not ready
                if person_id is not None and any(
                        x["resourceID"] == person_id for x in self.children("excluded", hook["id"])):
                    continue
                subscribed = {names[f["fieldID"]] for f in fields if f["isSubscribedField"]}
                always = {names[f["fieldID"]] for f in fields if f["isDisplayAlwaysField"]}
                fire = subscribed & changed if action == "Update" else subscribed
                if action == "Update" and not fire:
                    continue
                shown = [names[f["fieldID"]] for f in fields if names[f["fieldID"]] in fire | always]
                self.sequences[hook["id"]] += 1
                payload = {
                    "Action": action, "Guid": hook["webhookGUID"], "EntityType": etype, "Id": record["id"],
                    "Fields": {_pascal(n): record.get(n) for n in shown},
                    "EventTime": _event_time(), "SequenceNumber": self.sequences[hook["id"]],
                    "PersonID": person_id,
                }
                self.outbox.enqueue(hook["id"], hook["webhookUrl"], hook["secretKey"] or "",
                                    self.sequences[hook["id"]], payload)
                produced += 1
        return produced

    def _deactivated(self, hook: dict[str, Any]) -> None:
        hook["isActive"] = False
        self.outbox.discard(hook["id"])
        self.outbox.notify(hook["deactivationUrl"], {
            "Action": "Deactivated", "Guid": hook["webhookGUID"], "EntityType": ENTITIES[hook["_entity"]][0],
            "Id": hook["id"], "EventTime": _event_time()})

    def _exhausted(self, webhook_id: int) -> None:
        with self._lock:
            hook = self.webhooks.get(webhook_id)
            if hook is not None and hook["isActive"]:
                self._deactivated(hook)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            hooks = []
            for hook in self.webhooks.values():
                names = dict(ENTITIES[hook["_entity"]][1])
                hooks.append({
                    **self.public(hook), "entityType": ENTITIES[hook["_entity"]][0],
                    "fields": [{**f, "fieldName": names[f["fieldID"]]} for f in self.children("fields", hook["id"])],
                    "excludedResources": self.children("excluded", hook["id"]),
                    "lastSequenceNumber": self.sequences.get(hook["id"], 0),
                    "counters": self.outbox.counters(hook["id"]),
                })
            box = self.outbox
            return {"settings": dict(box.settings.__dict__), "drop_next": box.drop_next, "totals": box.totals(),
                    "webhooks": hooks, "error_log": list(box.error_log), "lost": list(box.lost),
                    "notices": list(box.notices), "recent": list(box.recent)}
