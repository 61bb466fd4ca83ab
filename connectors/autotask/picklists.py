"""Status and note picklists: labels to the tenant's integer ids.

Status ids differ per tenant (only Complete = 5 is fixed), so nothing in atrelay hard-codes one.
Labels match case-insensitively and ignoring white space; only *active* values count.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from connectors.autotask.client import AutotaskClient
from connectors.autotask.models import FieldInfo, PicklistValue

__all__ = ["PicklistCache", "Picklists", "UnknownPicklistValue", "normalise_label"]


class UnknownPicklistValue(Exception):
    """A configured label is not an active value in the tenant; the message lists those that are."""


def normalise_label(label: str) -> str:
    return "".join(label.split()).casefold()


@dataclass(frozen=True)
class Picklist:
    name: str
    by_label: dict[str, int]
    labels: dict[int, str]
    default: int | None

    @classmethod
    def from_values(cls, name: str, values: list[PicklistValue]) -> Picklist:
        by_label: dict[str, int] = {}
        labels: dict[int, str] = {}
        default: int | None = None
        for v in sorted(values, key=lambda v: (v.sort_order is None, v.sort_order or 0)):
            if not v.is_active:
                continue
            vid = int(v.value)
            key = normalise_label(v.label)
            if key in by_label and by_label[key] != vid:
                raise UnknownPicklistValue(
                    f"{name}: two active values share the label {v.label!r} ({by_label[key]} and {vid}); "
                    "rename one in Autotask or configure the id"
                )
            by_label[key] = vid
            labels[vid] = v.label
            if v.is_default and default is None:
                default = vid
        return cls(name, by_label, labels, default)

    def resolve(self, label_or_id: str | int) -> int:
        """An id from a label, or from an id given as a number (checked to be active)."""
        text = str(label_or_id).strip()
        if text.isdigit() and int(text) in self.labels:
            return int(text)
        key = normalise_label(text)
        if key in self.by_label:
            return self.by_label[key]
        known = ", ".join(f"{lab!r}" for lab in self.labels.values())
        raise UnknownPicklistValue(f"{self.name} {text!r} is not an active value in this tenant; it has: {known}")

    def label(self, value: int | None) -> str | None:
        if value is None:
            return None
        return self.labels.get(value, f"#{value}")

    def default_or_first(self) -> int:
        if self.default is not None:
            return self.default
        if not self.labels:
            raise UnknownPicklistValue(f"{self.name} has no active values")
        return next(iter(self.labels))


def _picklist(fields: list[FieldInfo], name: str, entity: str) -> Picklist:
    for f in fields:
        if f.name.lower() == name.lower() and f.picklist_values is not None:
            return Picklist.from_values(f"{entity} {name}", f.picklist_values)
    raise UnknownPicklistValue(f"{entity} has no picklist field {name!r}")


@dataclass(frozen=True)
class Picklists:
    status: Picklist
    note_type: Picklist
    publish: Picklist
    loaded_at: float = field(default_factory=time.monotonic)

    @classmethod
    def load(cls, client: AutotaskClient) -> Picklists:
        ticket_fields = client.ticket_fields()
        note_fields = client.ticket_note_fields()
        return cls(
            status=_picklist(ticket_fields, "status", "Ticket"),
            note_type=_picklist(note_fields, "noteType", "TicketNote"),
            publish=_picklist(note_fields, "publish", "TicketNote"),
        )

    def status_id(self, label: str) -> int:
        return self.status.resolve(label)

    def note_settings(self, note_type: str | None, publish: str | None) -> tuple[int, int]:
        """Configured note type and publish (label or id); unset means the picklist's default."""
        nt = self.note_type.resolve(note_type) if note_type else self.note_type.default_or_first()
        pb = self.publish.resolve(publish) if publish else self.publish.default_or_first()
        return nt, pb


class PicklistCache:
    """Process-wide cache, reloaded after ``ttl`` seconds so renamed statuses are picked up."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._value: Picklists | None = None
        self._lock = threading.Lock()

    def get(self, client: AutotaskClient) -> Picklists:
        with self._lock:
            if self._value is None or time.monotonic() - self._value.loaded_at > self._ttl:
                self._value = Picklists.load(client)
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._value = None
