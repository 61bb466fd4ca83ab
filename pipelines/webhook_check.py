"""Deactivation notices are claims, not facts: atrelay asks Autotask before it tells anyone.

Autotask calls a webhook's deactivation URL without a signature, so anyone can post such a notice. The
ingress only records it (in the capped rejections table) and counts it. This check, run by the alert
task, sees notices that arrived since the last check and then reads the real state of atrelay's
webhooks (``GET TicketWebhooks/{id}``, ``GET TicketNoteWebhooks/{id}``), at most once per
``min_interval`` however many notices arrive:

* a webhook Autotask shows inactive, or no longer has, is alerted (once a day while it stays so), with
  the command that installs it again;
* otherwise the notices were not true: one alert a day says how many such *unverified* notices came,
  and nothing of what they said (their text is the sender's, and the sender is unknown).

While a problem stands, the check runs again each interval without a new notice, so the dashboard
turns healthy once the webhook is installed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from connectors.autotask.client import AutotaskClient
from connectors.autotask.errors import AutotaskError, TicketNotFound
from connectors.autotask.models import Webhook
from connectors.autotask.webhooks import SPECS, WebhookSpec, find_webhook
from pipelines.alert_text import Message
from pipelines.alerts import record_alert
from pipelines.audit import OpsMark, RejectedRequest
from pipelines.autotask_status import DEACTIVATION_SOURCE
from pipelines.db import session_scope, utcnow

__all__ = ["MARK", "WebhookCheck", "check_webhooks", "last_check"]

MARK = "webhook_check"


@dataclass(frozen=True)
class WebhookCheck:
    """The last check: when, through which notice, and each webhook's state (active|inactive|missing)."""

    at: datetime | None
    notice_id: int
    states: dict[str, dict[str, Any]]
    unverified_today: int = 0

    @property
    def problems(self) -> list[str]:
        """One line per webhook Autotask really shows inactive or missing (atrelay's words only)."""
        out = []
        for entity, st in sorted(self.states.items()):
            if st.get("state") == "inactive":
                out.append(f"Autotask shows atrelay's {entity} webhook #{st.get('id')} inactive: "
                           f"run `{st.get('command')}`")
            elif st.get("state") == "missing":
                out.append(f"atrelay's {entity} webhook is missing in Autotask: run `{st.get('command')}`")
        return out


def last_check(db: str) -> WebhookCheck:
    with session_scope(db) as s:
        mark = s.get(OpsMark, MARK)
    if mark is None:
        return WebhookCheck(None, 0, {})
    v = mark.value
    return WebhookCheck(mark.at, int(v.get("notice_id", 0)), dict(v.get("states") or {}),
                        int(v.get("unverified_today", 0)))


def _notices_after(db: str, notice_id: int) -> tuple[int, int]:
    """(how many deactivation notices arrived after ``notice_id``, the newest one's id)."""
    with session_scope(db) as s:
        count, newest = s.exec(select(func.count(), func.max(RejectedRequest.id)).where(
            RejectedRequest.source == DEACTIVATION_SOURCE, col(RejectedRequest.id) > notice_id)).one()
    return int(count or 0), int(newest or notice_id)


def _reinstall(base: str | None) -> str:
    return f"atrelay autotask webhooks install --url {base or '<atrelay public URL>'}"


def _state(client: AutotaskClient, spec: WebhookSpec, known_id: int | None) -> tuple[Webhook | None, str]:
    """atrelay's webhook of this kind as Autotask shows it now: read by id (found by name the first time)."""
    hook: Webhook | None = None
    if known_id is not None:
        try:
            hook = Webhook.model_validate(client.call("GET", f"{spec.entity}/{known_id}")["item"])
        except TicketNotFound:
            hook = None  # deleted: perhaps installed again under a new id
    if hook is None:
        found = find_webhook(client, spec)
        if found is not None:
            hook = Webhook.model_validate(client.call("GET", f"{spec.entity}/{found.id}")["item"])
    if hook is None:
        return None, "missing"
    return hook, "active" if hook.is_active else "inactive"


def check_webhooks(db: str, client: AutotaskClient, *, min_interval: timedelta = timedelta(seconds=60),
                   now: datetime | None = None) -> list[int]:
    """Verify new deactivation notices against Autotask (rate-limited); return the alerts recorded."""
    now = now or utcnow()
    before = last_check(db)
    count, newest = _notices_after(db, before.notice_id)
    standing = bool(before.problems)
    if not count and not standing:
        return []
    if before.at is not None and now - before.at < min_interval:
        return []  # a flood of notices is one check a minute, never one per notice
    states: dict[str, dict[str, Any]] = {}
    try:
        for spec in SPECS:
            known = before.states.get(spec.entity, {}).get("id")
            hook, state = _state(client, spec, int(known) if known else None)
            base = (hook.webhook_url or "").removesuffix(spec.path) if hook is not None else None
            base = base or before.states.get(spec.entity, {}).get("base")
            states[spec.entity] = {"state": state, "id": hook.id if hook else known, "base": base,
                                   "command": _reinstall(base)}
    except AutotaskError:
        return []  # Autotask cannot say now: the notices wait for the next check, nothing is claimed
    day = now.strftime("%Y-%m-%d")
    made: list[int | None] = []
    for entity, st in states.items():
        if st["state"] == "active":
            continue
        what = ("shows it inactive" if st["state"] == "inactive" else "no longer has it")
        made.append(record_alert(db, kind="webhook", key=f"webhook:{st['state']}:{entity}:{st['id']}:{day}",
                                 message=Message(
            title=f"Autotask {'deactivated' if st['state'] == 'inactive' else 'lost'} atrelay's {entity} webhook",
            severity="warning",
            happened=f"Checked in Autotask after a deactivation notice: Autotask {what} "
                     f"({entity} #{st['id'] or '-'}). Its changes now reach atrelay only through "
                     "reconciliation, minutes later.",
            todo=f"Install it again: `{st['command']}` (then `atrelay autotask webhooks status`)."),
            fields={"kind": "webhook", "problem": st["state"], "entity": entity, "webhook_id": st["id"]}))
    unverified = before.unverified_today if before.at is not None and before.at.strftime("%Y-%m-%d") == day else 0
    if count and all(st["state"] == "active" for st in states.values()):
        unverified += count
        made.append(record_alert(db, kind="webhook", key=f"webhook:unverified:{day}", message=Message(
            title="Unverified webhook deactivation notices received", severity="info",
            happened=f"{count} deactivation notice(s) arrived at atrelay's deactivation URL, but Autotask shows "
                     "both of atrelay's webhooks active. The notices are unsigned (anyone can send them) and "
                     "were not acted on; their text is not repeated here.",
            todo="Nothing, unless they keep coming: then look at who posts to /webhooks/autotask/deactivated "
                 "(`atrelay rejections`) and block them at the proxy. At most one such alert a day."),
            fields={"kind": "webhook", "problem": "unverified", "count": count}))
    with session_scope(db) as s:
        mark = s.get(OpsMark, MARK) or OpsMark(name=MARK, at=now)
        mark.value = {"notice_id": newest, "states": states, "unverified_today": unverified}
        mark.at = now
        s.add(mark)
    return [m for m in made if m is not None]
