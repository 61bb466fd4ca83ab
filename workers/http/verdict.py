"""The dashboard's one-line answer: is atrelay healthy, or what needs attention (most urgent first)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import col, select

from pipelines.audit import OutboundAttempt
from pipelines.autotask_status import AutotaskIntake
from pipelines.db import session_scope
from pipelines.liveness import Liveness
from pipelines.webhook_check import WebhookCheck
from workers.settings import Settings
from workers.status import Health, picklists_fresh

__all__ = ["Verdict", "autotask_failing", "verdict"]

#: How many of the newest Autotask calls decide "Autotask is failing": a bounded read, and recent
#: enough that the verdict turns healthy again soon after calls succeed.
_RECENT_CALLS = 10


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reasons: list[str] = field(default_factory=list)


def autotask_failing(db: str) -> str | None:
    """Why Autotask looks unhealthy, from the newest calls: None when the latest one succeeded."""
    with session_scope(db) as s:
        recent = s.exec(select(OutboundAttempt).where(OutboundAttempt.target == "autotask")
                        .order_by(col(OutboundAttempt.id).desc()).limit(_RECENT_CALLS)).all()
    if not recent:
        return None
    latest = recent[0]
    if latest.status_code is not None and latest.status_code < 400:
        return None
    failed = sum(1 for a in recent if a.status_code is None or a.status_code >= 400)
    what = f"HTTP {latest.status_code}" if latest.status_code is not None else (latest.error or "no answer")[:120]
    return f"Autotask calls are failing ({failed} of the last {len(recent)}; latest: {what})"


def verdict(settings: Settings, health: Health, intake: AutotaskIntake | None, autotask: str | None,
            *, live: Liveness | None = None, webhooks: WebhookCheck | None = None, failed_alerts: int = 0) -> Verdict:
    """Most urgent first: nothing is working (no worker, no beat, workers that cannot work), then what
    waits too long, then Autotask and the rest. Only atrelay's own words and what Autotask itself
    confirmed; never a request's text (an unsigned deactivation notice says nothing here until Autotask
    shows the webhook inactive)."""
    reasons: list[str] = []
    if live is not None:
        reasons.extend(f"{c.title}: {c.summary}. {c.todo}" for c in live.conditions)
    if autotask:
        reasons.append(autotask)
    dead = health.counts.get("dead", 0)
    if dead:
        reasons.append(f"{dead} dead letter(s) need a decision (see Dead letters below)")
    if not picklists_fresh(settings, health.picklists_loaded_at):
        reasons.append("Autotask picklists not loaded recently: is a worker running?")
    if health.last_poll is not None and health.last_poll.outcome not in ("ok", "running"):
        reasons.append(f"the last TimeZest poll {health.last_poll.outcome}")
    if health.queue_depth is None:
        reasons.append("the broker cannot be asked for its queue depth")
    if webhooks is not None:
        reasons.extend(webhooks.problems)
    if intake is not None and intake.last_reconcile_outcome == "failed":
        reasons.append("the last Autotask reconciliation failed")
    if failed_alerts:
        reasons.append(f"{failed_alerts} alert(s) could not be sent to one of ATRELAY_NOTIFY_URLS after every "
                       "try (see Alerts below: which URL, and why)")
    return Verdict(healthy=not reasons, reasons=reasons)
