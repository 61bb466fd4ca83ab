"""Status labels map to the tenant's ids from *active* picklist values only."""

from __future__ import annotations

import pytest

from connectors.autotask.models import PicklistValue
from connectors.autotask.picklists import Picklist, UnknownPicklistValue


def _pv(value: int, label: str, active: bool = True, default: bool = False) -> PicklistValue:
    return PicklistValue.model_validate(
        {"value": str(value), "label": label, "isActive": active, "isDefaultValue": default, "sortOrder": value}
    )


STATUS = Picklist.from_values("Ticket status", [
    _pv(1, "New", default=True), _pv(5, "Complete"), _pv(17, "Scheduled", active=False),
    _pv(29682839, "Scheduled"), _pv(29682834, "Follow Up Needed:Resource"),
])


@pytest.mark.parametrize(
    ("label", "expected"),
    [("Scheduled", 29682839), ("scheduled", 29682839), ("  SCHEDULED ", 29682839),
     ("follow up needed : resource", 29682834), ("FollowUpNeeded:Resource", 29682834), ("Complete", 5),
     ("5", 5), (29682839, 29682839)],
)
def test_resolve(label: str | int, expected: int) -> None:
    assert STATUS.resolve(label) == expected


def test_inactive_values_are_never_chosen() -> None:
    with pytest.raises(UnknownPicklistValue):
        STATUS.resolve("17")


def test_unknown_label_lists_what_exists() -> None:
    with pytest.raises(UnknownPicklistValue) as exc:
        STATUS.resolve("Waiting Customer")
    text = str(exc.value)
    assert "'Waiting Customer'" in text
    for label in ("'New'", "'Complete'", "'Scheduled'", "'Follow Up Needed:Resource'"):
        assert label in text


def test_duplicate_active_labels_fail_loudly() -> None:
    with pytest.raises(UnknownPicklistValue, match="two active values share the label"):
        Picklist.from_values("Ticket status", [_pv(3, "Done"), _pv(4, "done")])


def test_default_and_labels() -> None:
    assert STATUS.default_or_first() == 1
    assert STATUS.label(29682839) == "Scheduled"
    assert STATUS.label(999) == "#999"
    assert STATUS.label(None) is None
    no_default = Picklist.from_values("publish", [_pv(2, "Internal"), _pv(1, "All")])
    assert no_default.default_or_first() == 1  # first by sort order
