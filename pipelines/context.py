"""Everything a pipeline run needs, built once per worker process from the settings."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from connectors.autotask.client import AutotaskClient
from connectors.autotask.picklists import PicklistCache, Picklists, UnknownPicklistValue
from pipelines.events import EventType
from pipelines.governor import Governor, governor_for
from pipelines.rules import Rule, load_rules
from workers.settings import Settings, get_settings

__all__ = ["Context", "build_client", "check_rule_statuses", "get_context", "get_governor"]


def build_client(settings: Settings, **kwargs: object) -> AutotaskClient:
    if not settings.autotask_configured:
        raise RuntimeError(
            "Autotask is not configured: set ATRELAY_AUTOTASK_USERNAME, ATRELAY_AUTOTASK_SECRET and "
            "ATRELAY_AUTOTASK_INTEGRATION_CODE (`atrelay run` starts the sandbox when none are set)"
        )
    assert settings.autotask_username and settings.autotask_secret and settings.autotask_integration_code
    return AutotaskClient(
        username=settings.autotask_username,
        secret=settings.autotask_secret.get_secret_value(),
        integration_code=settings.autotask_integration_code.get_secret_value(),
        base_url=settings.autotask_base_url,
        zone_url=settings.autotask_zone_url,
        timeout=settings.autotask_timeout_seconds,
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass
class Context:
    db: str
    client: AutotaskClient
    picklists: PicklistCache
    rules: dict[EventType, Rule]
    note_type: str | None
    note_publish: str | None
    follow_up_delay_seconds: int
    retry_horizon_hours: int
    enqueue: Callable[[int, float], None]
    lease_seconds: float = 120.0

    def lists(self) -> Picklists:
        return self.picklists.get(self.client)


def check_rule_statuses(rules: dict[EventType, Rule], lists: Picklists) -> dict[str, int]:
    """Every status the rules name must exist in the tenant; return label -> id for display."""
    resolved: dict[str, int] = {}
    problems: list[str] = []
    for rule in rules.values():
        if rule.status is None:
            continue
        try:
            resolved[rule.status] = lists.status_id(rule.status)
        except UnknownPicklistValue as exc:
            problems.append(str(exc))
    if problems:
        raise UnknownPicklistValue(problems[0])
    return resolved


def _enqueue(event_id: int, countdown: float) -> None:
    from pipelines.tasks import enqueue_event

    enqueue_event(event_id, countdown)


@functools.lru_cache(maxsize=1)
def get_governor() -> Governor:
    settings = get_settings()
    return governor_for(broker_url=settings.effective_broker_url, db=settings.effective_database_url,
                        max_in_flight=settings.autotask_max_in_flight,
                        hourly_budget=settings.autotask_hourly_budget)


@functools.lru_cache(maxsize=1)
def get_context() -> Context:
    settings = get_settings()
    return Context(
        db=settings.effective_database_url,
        client=build_client(settings, gate=get_governor().slot),
        picklists=PicklistCache(settings.autotask_picklist_ttl_seconds),
        rules=load_rules(settings.rules_file),
        note_type=settings.autotask_note_type,
        note_publish=settings.autotask_note_publish,
        follow_up_delay_seconds=settings.mc_no_contact_delay_seconds,
        retry_horizon_hours=settings.retry_horizon_hours,
        enqueue=_enqueue,
        lease_seconds=float(settings.lease_seconds),
    )
