"""Builds, once per worker process, what the lower layers take as plain arguments.

``pipelines`` never reads the environment: the Autotask client, the governor and the run
:class:`~pipelines.context.Context` are assembled here from :class:`workers.settings.Settings`.
"""

from __future__ import annotations

import functools
import threading

from connectors.autotask.client import AutotaskClient
from connectors.autotask.picklists import PicklistCache
from pipelines import store
from pipelines.context import Context
from pipelines.governor import Governor, governor_for
from pipelines.rules import load_rules, load_watch_rules
from sandboxes.autotask.data import SANDBOX_AUTOTASK_CREDENTIALS, SANDBOX_RESOURCES
from workers.celery.queue import enqueue_event
from workers.settings import Settings, get_settings

__all__ = ["build_client", "get_context", "get_governor", "reset_runtime", "timezest_resource_id"]


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
        thread_groups=settings.autotask_thread_groups,
        **kwargs,  # type: ignore[arg-type]
    )


@functools.lru_cache(maxsize=1)
def get_governor() -> Governor:
    settings = get_settings()
    return governor_for(broker_url=settings.effective_broker_url, db=settings.effective_database_url,
                        max_in_flight=settings.autotask_max_in_flight,
                        hourly_budget=settings.autotask_hourly_budget,
                        write_reserve_percent=settings.autotask_write_reserve_percent)


@functools.lru_cache(maxsize=1)
def _picklists() -> PicklistCache:
    return PicklistCache(get_settings().autotask_picklist_ttl_seconds)


class _PerThread(threading.local):
    context: Context | None = None


_local = _PerThread()


def get_context() -> Context:
    """This thread's run context, built on first use.

    Per thread because a run installs its attempt hook on the Autotask client and the worker's
    pool may be threads (ATRELAY_WORKER_POOL): each thread gets its own client and connections.
    The picklist cache and the quota governor are the process's, shared by its threads.
    """
    ctx = _local.context
    if ctx is None:
        ctx = _local.context = _build_context()
    return ctx


def _build_context() -> Context:
    settings = get_settings()
    return Context(
        db=settings.effective_database_url,
        client=build_client(settings, gate=get_governor().slot),
        picklists=_picklists(),
        rules=load_rules(settings.rules_file),
        note_type=settings.autotask_note_type,
        note_publish=settings.autotask_note_publish,
        follow_up_delay_seconds=settings.mc_no_contact_delay_seconds,
        retry_horizon_hours=settings.retry_horizon_hours,
        enqueue=enqueue_event,
        lease_seconds=float(settings.lease_seconds),
        note_key=store.deployment_secret(settings.effective_database_url, "note-marker"),
        watch_rules=load_watch_rules(settings.rules_file),
        form_note_title=settings.webform_note_title,
        timezest_resource_id=timezest_resource_id(settings),
        checklist_all_items=settings.guard_checklist_all,
        clobber_window_seconds=settings.clobber_window_seconds,
        read_batch=settings.autotask_read_batch,
        read_max_age_seconds=settings.autotask_read_max_age_seconds,
        max_crashes=settings.max_crashes,
        shadow=settings.mode == "shadow",
    )


def timezest_resource_id(settings: Settings) -> int | None:
    """TimeZest's API resource: the setting, or with the sandbox tenant the sandbox's TimeZest resource."""
    if settings.timezest_resource_id is not None:
        return settings.timezest_resource_id
    if settings.autotask_username == SANDBOX_AUTOTASK_CREDENTIALS["username"]:
        return SANDBOX_RESOURCES["timezest"]
    return None


def reset_runtime() -> None:
    """Forget the per-process objects (after a fork: sockets must not be shared)."""
    _local.context = None  # after a fork only the forking thread exists: its context is the one to drop
    _picklists.cache_clear()
    get_governor.cache_clear()
