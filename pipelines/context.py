"""Everything a pipeline run needs, as plain typed values (``workers.celery.runtime`` builds it from the settings)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from connectors.autotask.client import AutotaskClient
from connectors.autotask.errors import AuthError, PermanentError
from connectors.autotask.picklists import PicklistCache, Picklists, UnknownPicklistValue
from connectors.common.events import EventType
from pipelines.rules import DEFAULT_WATCH_RULES, Rule, WatchRule

__all__ = ["Context", "check_rule_statuses"]

log = logging.getLogger("atrelay.pipeline")


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
    enqueue: Callable[[int, float], None]  # (event id, countdown seconds), after commit
    lease_seconds: float = 20.0
    note_key: str = ""  # keys the tag in atrelay's note marker (a deployment secret, see pipelines.notes)
    watch_rules: dict[str, WatchRule] = field(default_factory=lambda: dict(DEFAULT_WATCH_RULES))
    form_note_title: str = "(?i)new user form"  # ATRELAY_WEBFORM_NOTE_TITLE
    # Knowledge-base guards (docs/rules.md).
    timezest_resource_id: int | None = None  # ATRELAY_TIMEZEST_RESOURCE_ID: its notes carry links by design
    checklist_all_items: bool = False  # ATRELAY_GUARD_CHECKLIST_ALL: not only important items count
    clobber_window_seconds: int = 120  # ATRELAY_CLOBBER_WINDOW_SECONDS
    # Shared ticket reads (pipelines.ticket_reads): how many tickets one query may read, and how long a
    # read may be acted on. 0 s: every run reads its ticket itself, right before writing.
    read_batch: int = 1  # ATRELAY_AUTOTASK_READ_BATCH
    read_max_age_seconds: float = 0.0  # ATRELAY_AUTOTASK_READ_MAX_AGE_SECONDS
    max_crashes: int = 3  # ATRELAY_MAX_CRASHES: runs ending in an unexpected exception before a dead letter
    shadow: bool = False  # ATRELAY_MODE=shadow: record the writes the gate allows instead of making them
    _own_resource: list[int | None] = field(default_factory=list, repr=False)

    def lists(self) -> Picklists:
        return self.picklists.get(self.client)

    def own_resource_id(self) -> int | None:
        """atrelay's own resource in the tenant (its API user), looked up once per process.

        A change or note by this resource is atrelay's own and never triggers a rule, so atrelay's
        writes cannot call back into it even when the webhook exclusion is missing.
        """
        if not self._own_resource:
            try:
                found = self.client.find_resource_by_username(self.client.username)
            except AuthError:
                raise  # atrelay's credentials refused: nothing to remember; the run is held, not guessed on
            except PermanentError as exc:
                # An API user without read access to Resources: the other loop checks (webhook
                # exclusion, the observed status, the effect ledger) still hold; say so once.
                log.warning("autotask.own_resource.unknown", extra={"error": exc.reason})
                found = None
            self._own_resource.append(found.id if found is not None else None)
        return self._own_resource[0]


def check_rule_statuses(rules: dict[EventType, Rule], lists: Picklists) -> dict[str, int]:
    """Every status the rules name must exist in the tenant; return label -> id for display."""
    resolved: dict[str, int] = {}
    problems: list[str] = []
    for rule in rules.values():
        if rule.status is None:  # note only, or guard.clobbered (re-applies whatever atrelay had set)
            continue
        try:
            resolved[rule.status] = lists.status_id(rule.status)
        except UnknownPicklistValue as exc:
            problems.append(str(exc))
    if problems:
        raise UnknownPicklistValue(problems[0])
    return resolved
