"""What a worker finds at start-up about Autotask, said so an operator can act on it.

A worker whose credentials Autotask refuses keeps running (so it is seen, and starts working the moment
the credentials do) but is *not ready*: its heartbeat says why, and every screen shows it. The message
names the setting and the Autotask screen where the API user is made. An Autotask that cannot be
reached is named with its host and the error.
"""

from __future__ import annotations

from connectors.autotask.errors import AuthError, AutotaskError, TransportError
from workers.settings import Settings

__all__ = ["CREDENTIALS_HINT", "autotask_problem", "probe_autotask", "set_startup_problem", "startup_problem"]

#: Autotask answers 401 for a wrong user, a wrong secret and a wrong integration code alike: say how to
#: tell which one it is, and where the API user lives.
CREDENTIALS_HINT = (
    "Check, in Autotask Admin > Resources (Users) > the API user: ATRELAY_AUTOTASK_USERNAME is its "
    "Username (an email, e.g. api@example.com; the zone is looked up from it), ATRELAY_AUTOTASK_SECRET is "
    "its Secret (re-generate it there if unsure), ATRELAY_AUTOTASK_INTEGRATION_CODE is the Tracking "
    "Identifier under API Tracking Identifier (vendor 'Custom'); the user must be API-only, active, and "
    "have a security level that can edit tickets")

_state: dict[str, str | None] = {"problem": None}


def autotask_problem(exc: AutotaskError) -> str:
    """One line naming what is wrong and what to change."""
    if isinstance(exc, AuthError):
        return (f"Autotask refused atrelay's credentials (HTTP {exc.status_code or '401/403'}): events are held "
                f"(retrying, not dead) until they work. {CREDENTIALS_HINT}")
    if isinstance(exc, TransportError):
        return f"cannot reach Autotask: {exc} (check ATRELAY_AUTOTASK_BASE_URL / ATRELAY_AUTOTASK_ZONE_URL, DNS, " \
               "the firewall)"
    return f"Autotask: {exc.reason}"


def probe_autotask(settings: Settings) -> str | None:
    """Load the picklists as a run would (recorded like any Autotask call); None when that works."""
    from pipelines import store
    from workers.celery.runtime import get_context

    ctx = get_context()
    db = settings.effective_database_url
    ctx.client.set_attempt_hook(lambda attempt: store.record_attempt(db, None, None, attempt))
    try:
        ctx.lists()
    except AutotaskError as exc:
        return autotask_problem(exc)
    finally:
        ctx.client.set_attempt_hook(None)
    return None


def set_startup_problem(problem: str | None) -> None:
    """What the worker's start-up check found; its heartbeat reports it until a later check passes."""
    _state["problem"] = problem


def startup_problem() -> str | None:
    return _state["problem"]
