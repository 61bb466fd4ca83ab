"""Typed shapes of the Autotask REST payloads atrelay reads. Unknown fields are ignored."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FieldInfo", "PicklistValue", "ThresholdInfo", "Ticket", "TicketNote"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Ticket(_Model):
    id: int
    ticket_number: str | None = Field(default=None, alias="ticketNumber")
    status: int
    title: str | None = None
    last_activity_date: datetime | None = Field(default=None, alias="lastActivityDate")


class TicketNote(_Model):
    id: int
    ticket_id: int = Field(alias="ticketID")
    title: str | None = None
    description: str | None = None


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
