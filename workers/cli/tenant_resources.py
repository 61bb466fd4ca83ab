"""The tenant's API resources for `atrelay autotask resources`, and doctor's check of
``ATRELAY_TIMEZEST_RESOURCE_ID`` against them (issue 25: TimeZest's resource is known, not guessed)."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.autotask.client import AutotaskClient
from connectors.autotask.errors import AutotaskError
from connectors.autotask.resources import ApiResource, classify, license_labels

__all__ = ["TimezestCheck", "check_timezest_resource", "list_resources"]

SETTING = "ATRELAY_TIMEZEST_RESOURCE_ID"


def list_resources(client: AutotaskClient) -> list[ApiResource]:
    """Every active resource, classified. The license labels are optional: an API user without read
    access to the Resources entity information still gets the list (integrations found by name)."""
    try:
        labels = license_labels(client.resource_fields())
    except AutotaskError:
        labels = {}
    return classify(client.resources(), labels, own_username=client.username)


@dataclass(frozen=True)
class TimezestCheck:
    level: str  # ok | warning | problem
    message: str


def check_timezest_resource(configured: int | None, rows: list[ApiResource]) -> TimezestCheck:
    """Is ``ATRELAY_TIMEZEST_RESOURCE_ID`` (``configured``: the value in force) TimeZest's resource?

    Unset: atrelay works as before (it cannot tell TimeZest's writes from anyone's, so it writes its
    own note beside TimeZest's): a warning naming the value to set when TimeZest's resource is found.
    Set to a resource that does not exist, is not active, or is not TimeZest's while TimeZest's is
    found: a problem, with the value to set.
    """
    found = [r for r in rows if r.owner == "timezest"]
    named = ", ".join(f"#{r.id} ({r.resource.name})" for r in found)
    if configured is None:
        if len(found) == 1:
            return TimezestCheck("warning", f"{SETTING} is unset; TimeZest's API resource is #{found[0].id} "
                                            f"({found[0].resource.name}): set {SETTING}={found[0].id} so atrelay "
                                            "verifies TimeZest's own status updates instead of repeating them")
        if found:
            return TimezestCheck("warning", f"{SETTING} is unset; resources named for TimeZest: {named}. Set it to "
                                            "the one TimeZest's Autotask integration signs in as")
        return TimezestCheck("warning", f"{SETTING} is unset and no resource is named for TimeZest; if TimeZest's "
                                        "own status updates are on, set it to TimeZest's API user (`atrelay "
                                        "autotask resources --all` lists every resource)")
    by_id = {r.id: r for r in rows}
    mine = by_id.get(configured)
    if mine is None:
        hint = f"; TimeZest's is {named}: set {SETTING}={found[0].id}" if len(found) == 1 else (
            f"; named for TimeZest: {named}" if found else "")
        return TimezestCheck("problem", f"{SETTING}={configured} is not an active resource in the tenant{hint}")
    if mine.owner == "timezest" or not found:
        return TimezestCheck("ok", f"TimeZest's resource: {SETTING}={configured} is #{mine.id} ({mine.resource.name})")
    if len(found) == 1:
        return TimezestCheck("problem", f"{SETTING}={configured} is #{mine.id} ({mine.resource.name}), not TimeZest's "
                                        f"API resource #{found[0].id} ({found[0].resource.name}): set "
                                        f"{SETTING}={found[0].id}")
    return TimezestCheck("problem", f"{SETTING}={configured} is #{mine.id} ({mine.resource.name}); resources named "
                                    f"for TimeZest: {named}")
