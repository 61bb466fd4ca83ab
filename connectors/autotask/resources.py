"""Which of a tenant's resources are API users, and whose: atrelay's own, TimeZest's, Mission Control's.

Settings name resources by id (``ATRELAY_TIMEZEST_RESOURCE_ID``), and ids are the tenant's own, so
they are found, not guessed: an API user is a resource whose ``licenseType`` picklist label says API
(labels are read from ``Resources/entityInformation/fields``, never assumed from a number), and an
integration's resource is told by its name, user name or e-mail: TimeZest's set-up guide has its API
user named for TimeZest, and Mission Control's bridge is named for Mission Control. atrelay's own is
the resource whose user name is ``ATRELAY_AUTOTASK_USERNAME``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from connectors.autotask.models import FieldInfo, Resource

__all__ = ["ApiResource", "classify", "license_labels"]

_OWNERS = (("timezest", re.compile(r"time\s*zest", re.I)),
           ("mission-control", re.compile(r"mission\s*control", re.I)))


@dataclass(frozen=True)
class ApiResource:
    resource: Resource
    license: str | None  # the licenseType label, when the tenant's picklist names it
    api_user: bool
    owner: str | None  # "atrelay", "timezest", "mission-control" or None

    @property
    def id(self) -> int:
        return self.resource.id


def license_labels(fields: Iterable[FieldInfo]) -> dict[int, str]:
    """licenseType value -> label, from the Resources entity's field information."""
    for field in fields:
        if field.name.lower() == "licensetype" and field.picklist_values:
            return {int(v.value): v.label for v in field.picklist_values if str(v.value).lstrip("-").isdigit()}
    return {}


def _owner(resource: Resource, own_username: str | None) -> str | None:
    if own_username and (resource.user_name or "").casefold() == own_username.casefold():
        return "atrelay"
    text = " ".join(p or "" for p in (resource.first_name, resource.last_name, resource.user_name, resource.email,
                                      resource.title))
    return next((name for name, pattern in _OWNERS if pattern.search(text)), None)


def classify(resources: Iterable[Resource], labels: dict[int, str], *, own_username: str | None) -> list[ApiResource]:
    """Every resource with its license label, whether it is an API user, and whose it is."""
    out = []
    for r in resources:
        label = labels.get(r.license_type) if r.license_type is not None else None
        owner = _owner(r, own_username)
        # An integration's resource, or atrelay's own, is an API user even where the label is unreadable.
        api = bool(label and "api" in label.casefold()) or owner is not None
        out.append(ApiResource(r, label, api, owner))
    return sorted(out, key=lambda a: (not a.api_user, a.owner is None, a.resource.name.casefold()))
