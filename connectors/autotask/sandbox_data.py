"""Seed data for the Autotask sandbox: a tenant as the knowledge base describes it.

Status ids are tenant-specific on purpose (custom statuses get large ids, not 1..N in the order the
knowledge base lists them); only New = 1 and Complete = 5 are the fixed system values. An inactive
old "Scheduled" value is kept so the client's active-only mapping is exercised.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NOTE_TYPES", "PUBLISH", "SANDBOX_AUTOTASK_CREDENTIALS", "STATUSES", "seed_tickets"]

#: Credentials the bundled Autotask sandbox accepts. Not secrets: they only open the emulator.
SANDBOX_AUTOTASK_CREDENTIALS = {
    "username": "sandbox-api@atrelay.invalid",
    "secret": "sandbox-secret",
    "integration_code": "ATRELAY-SANDBOX",
}

# (value, label, is_active, is_system)
STATUSES: list[tuple[int, str, bool, bool]] = [
    (1, "New", True, True),
    (5, "Complete", True, True),
    (8, "In Progress", True, True),
    (7, "Waiting Customer", True, True),
    (12, "Waiting Vendor", True, False),
    (17, "Scheduled", False, False),  # retired duplicate: must never be chosen
    (29682833, "Follow Up Needed: Admin", True, False),
    (29682834, "Follow Up Needed:Resource", True, False),
    (29682835, "Scheduling Link Sent", True, False),
    (29682836, "Deferred", True, False),
    (29682837, "Pending Payment", True, False),
    (29682838, "No Appt Needed - To Do", True, False),
    (29682839, "Scheduled", True, False),
    (29682840, "NO-SHOW: remote customer", True, False),
    (29682841, "Note Emailed In", True, False),
    (29682842, "Incomplete - Re-opened", True, False),
    (29682843, "Customer or tech says close", True, False),
    (29682844, "Received Form Response", True, False),
    (29682845, "Sent from MC", True, False),
    (29682846, "Out of Scope", True, False),
    (29682847, "MC No Contact", True, False),
    (29682848, "Returned to MC", True, False),
]

# (value, label, is_default)
NOTE_TYPES: list[tuple[int, str, bool]] = [
    (1, "Task Summary", False),
    (2, "Task Detail", True),
    (3, "Task Notes", False),
    (13, "Note Emailed In", False),
    (18, "MC Email Notes", False),
]
PUBLISH: list[tuple[int, str, bool]] = [
    (1, "All Autotask Users", True),
    (2, "Internal Only", False),
    (4, "Internal & Co-managed", False),
]


def seed_tickets() -> list[dict[str, Any]]:
    titles = [
        "New user setup: J. Example",
        "Printer offline in reception",
        "Outlook keeps asking for password",
        "Laptop replacement for finance",
        "VPN drops every hour",
        "Backup check - workstation",
    ]
    return [
        {
            "id": 50001 + i,
            "ticketNumber": f"T20261126.{i + 1:04d}",
            "title": title,
            "status": 1,
            "companyID": 29683500,
            "queueID": 8,
            "priority": 2,
            "createDate": "2026-11-26T08:00:00.000Z",
            "lastActivityDate": "2026-11-26T08:00:00.000Z",
        }
        for i, title in enumerate(titles)
    ]
