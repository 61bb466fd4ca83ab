"""Typed shapes of the Autotask REST payloads atrelay reads. Unknown fields are ignored."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChecklistItem",
    "FieldInfo",
    "PicklistValue",
    "Resource",
    "ThresholdInfo",
    "Ticket",
    "TicketNote",
    "Webhook",
    "WebhookExcludedResource",
    "WebhookField",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Ticket(_Model):
    id: int
    ticket_number: str | None = Field(default=None, alias="ticketNumber")
    status: int
    title: str | None = None
    last_activity_date: datetime | None = Field(default=None, alias="lastActivityDate")
    last_activity_resource_id: int | None = Field(default=None, alias="lastActivityResourceID")
    due_date_time: datetime | None = Field(default=None, alias="dueDateTime")
    assigned_resource_id: int | None = Field(default=None, alias="assignedResourceID")
    create_date: datetime | None = Field(default=None, alias="createDate")
    company_id: int | None = Field(default=None, alias="companyID")


class TicketNote(_Model):
    id: int
    ticket_id: int = Field(alias="ticketID")
    title: str | None = None
    description: str | None = None
    note_type: int | None = Field(default=None, alias="noteType")
    creator_resource_id: int | None = Field(default=None, alias="creatorResourceID")
    created_by_contact_id: int | None = Field(default=None, alias="createdByContactID")
    create_date_time: datetime | None = Field(default=None, alias="createDateTime")

    @property
    def text(self) -> str:
        """Title and body together: what a reader of the note sees, searched as one."""
        return f"{self.title or ''}\n{self.description or ''}"


class ChecklistItem(_Model):
    id: int
    ticket_id: int = Field(alias="ticketID")
    item_name: str = Field(default="", alias="itemName")
    is_completed: bool = Field(default=False, alias="isCompleted")
    is_important: bool = Field(default=False, alias="isImportant")
    position: int | None = None


class Resource(_Model):
    id: int
    user_name: str | None = Field(default=None, alias="userName")
    first_name: str | None = Field(default=None, alias="firstName")
    last_name: str | None = Field(default=None, alias="lastName")
    email: str | None = None
    is_active: bool = Field(default=True, alias="isActive")
    title: str | None = None
    license_type: int | None = Field(default=None, alias="licenseType")

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.user_name or f"#{self.id}"


class Webhook(_Model):
    """A TicketWebhook or TicketNoteWebhook (the two share one shape)."""

    id: int
    name: str | None = None
    webhook_url: str | None = Field(default=None, alias="webhookUrl")
    deactivation_url: str | None = Field(default=None, alias="deactivationUrl")
    is_active: bool = Field(default=False, alias="isActive")
    is_ready: bool = Field(default=False, alias="isReady")
    webhook_guid: str | None = Field(default=None, alias="webhookGUID")
    is_subscribed_to_create_events: bool = Field(default=False, alias="isSubscribedToCreateEvents")
    is_subscribed_to_update_events: bool = Field(default=False, alias="isSubscribedToUpdateEvents")
    is_subscribed_to_delete_events: bool = Field(default=False, alias="isSubscribedToDeleteEvents")


class WebhookField(_Model):
    id: int
    field_id: int = Field(alias="fieldID")
    is_subscribed_field: bool = Field(default=False, alias="isSubscribedField")
    is_display_always_field: bool = Field(default=False, alias="isDisplayAlwaysField")


class WebhookExcludedResource(_Model):
    id: int
    resource_id: int = Field(alias="resourceID")


class PicklistValue(_Model):
    value: str
    label: str
    is_default: bool = Field(default=False, alias="isDefaultValue")
    sort_order: int | None = Field(default=None, alias="sortOrder")
    is_active: bool = Field(default=True, alias="isActive")
    is_system: bool = Field(default=False, alias="isSystem")


class FieldInfo(_Model):
    name: str
    data_type: str | None = Field(default=None, alias="dataType")
    is_picklist: bool = Field(default=False, alias="isPickList")
    picklist_values: list[PicklistValue] | None = Field(default=None, alias="picklistValues")


class ThresholdInfo(_Model):
    external_request_threshold: int = Field(alias="externalRequestThreshold")
    request_threshold_timeframe: int = Field(alias="requestThresholdTimeframe")
    current_timeframe_request_count: int = Field(alias="currentTimeframeRequestCount")
