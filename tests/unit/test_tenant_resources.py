"""doctor's check of ATRELAY_TIMEZEST_RESOURCE_ID against the tenant's resources (workers/cli/tenant_resources.py),
on the sandbox tenant's own resources: unset, wrong, right, and a tenant without TimeZest."""

from __future__ import annotations

from connectors.autotask.models import Resource
from connectors.autotask.resources import ApiResource, classify
from sandboxes.autotask.data import LICENSE_TYPES, SANDBOX_AUTOTASK_CREDENTIALS, SANDBOX_RESOURCES, seed_resources
from workers.cli.tenant_resources import check_timezest_resource

TZ, TECH = SANDBOX_RESOURCES["timezest"], SANDBOX_RESOURCES["technician"]


def tenant(without_timezest: bool = False) -> list[ApiResource]:
    people = [Resource.model_validate(r) for r in seed_resources()
              if not (without_timezest and r["id"] == TZ)]
    return classify(people, {v: label for v, label, _ in LICENSE_TYPES},
                    own_username=SANDBOX_AUTOTASK_CREDENTIALS["username"])


def test_the_tenant_s_api_users_are_atrelay_s_timezest_s_and_mission_control_s() -> None:
    owners = {r.id: r.owner for r in tenant() if r.api_user}
    assert owners == {SANDBOX_RESOURCES["atrelay"]: "atrelay", TZ: "timezest",
                      SANDBOX_RESOURCES["mission_control"]: "mission-control"}


def test_unset_is_a_warning_naming_the_value_to_set() -> None:
    check = check_timezest_resource(None, tenant())
    assert check.level == "warning"
    assert check.message.startswith("ATRELAY_TIMEZEST_RESOURCE_ID is unset")
    assert f"set ATRELAY_TIMEZEST_RESOURCE_ID={TZ}" in check.message


def test_unset_without_a_timezest_resource_is_a_warning_pointing_at_the_full_list() -> None:
    check = check_timezest_resource(None, tenant(without_timezest=True))
    assert check.level == "warning" and "atrelay autotask resources --all" in check.message


def test_another_resource_is_a_problem_naming_the_value_to_set() -> None:
    check = check_timezest_resource(TECH, tenant())
    assert check.level == "problem"
    assert check.message.endswith(f"set ATRELAY_TIMEZEST_RESOURCE_ID={TZ}"), check.message


def test_a_resource_the_tenant_lacks_is_a_problem_naming_the_value_to_set() -> None:
    check = check_timezest_resource(12345, tenant())
    assert check.level == "problem" and "is not an active resource" in check.message
    assert check.message.endswith(f"set ATRELAY_TIMEZEST_RESOURCE_ID={TZ}"), check.message


def test_timezest_s_own_resource_is_ok() -> None:
    check = check_timezest_resource(TZ, tenant())
    assert check.level == "ok" and f"={TZ}" in check.message
