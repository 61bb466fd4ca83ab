"""Seed data for the Autotask sandbox: a tenant as the knowledge base describes it.

Status ids are tenant-specific on purpose (custom statuses get large ids, not 1..N in the order the
knowledge base lists them); only New = 1 and Complete = 5 are the fixed system values. An inactive
old "Scheduled" value is kept so the client's active-only mapping is exercised.

Resources and contacts carry tenant-style ids (large, not 1..N). Four of the resources are API-only
users (atrelay's own, Mission Control's bridge, TimeZest's integration): Autotask lets them create and
change records but never be assigned to a ticket (Autotask help, "Define API user"), so
``API_ONLY_RESOURCES`` lists them.
Webhook field ids (the ``fieldID`` picklist of ``TicketWebhookFields``/``TicketNoteWebhookFields``) are
tenant-specific too; a client must look them up by label, never assume them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "ACT_AS",
    "API_ONLY_RESOURCES",
    "COMPANIES",
    "LICENSE_TYPES",
    "NOTE_TYPES",
    "NOTE_WEBHOOK_FIELDS",
    "PUBLISH",
    "SANDBOX_AUTOTASK_CREDENTIALS",
    "SANDBOX_CONTACT_ID",
    "SANDBOX_RESOURCES",
    "SEED_DUE_AHEAD",
    "STATUSES",
    "TICKET_WEBHOOK_FIELDS",
    "seed_contacts",
    "seed_resources",
    "seed_tickets",
]

#: Credentials the bundled Autotask sandbox accepts. Not secrets: they only open the emulator.
SANDBOX_AUTOTASK_CREDENTIALS = {
    "username": "sandbox-api@atrelay.invalid",
    "secret": "sandbox-secret",
    "integration_code": "ATRELAY-SANDBOX",
}

#: The tenant's one customer company (every seeded ticket and contact belongs to it): ``GET Companies/{id}``.
COMPANIES: dict[int, dict[str, Any]] = {
    29683500: {"id": 29683500, "companyName": "Northwind Dental Group", "isActive": True, "companyType": 1},
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


#: Who can act in the sandbox tenant, by role: resource ids as Autotask would report them.
SANDBOX_RESOURCES: dict[str, int] = {
    "atrelay": 29683077,  # the API user whose credentials are SANDBOX_AUTOTASK_CREDENTIALS
    "technician": 29682885,  # "Taylor Tech", a licensed technician
    "help_desk": 29683012,  # "Help Desk Support", the resource a ticket handed to Mission Control gets
    "mission_control": 30691780,  # "Mission Control Bridge", MC's Autotask-to-Autotask API user
    "timezest": 29683155,  # "TimeZest Integration", TimeZest's API user
}
API_ONLY_RESOURCES: frozenset[int] = frozenset(
    SANDBOX_RESOURCES[k] for k in ("atrelay", "mission_control", "timezest")
)
#: (value, label, is_default) of the Resources ``licenseType`` picklist. Real tenants' values are their own:
#: atrelay tells an API user by the label (``atrelay autotask resources``), never by the number.
LICENSE_TYPES: list[tuple[int, str, bool]] = [
    (1, "Professional", True),
    (7, "API User", False),
]
#: Names a test may act as (``"as"`` on the sandbox control endpoints) -> resource id.
ACT_AS: dict[str, int] = {
    "atrelay": SANDBOX_RESOURCES["atrelay"],
    "technician": SANDBOX_RESOURCES["technician"],
    "help-desk": SANDBOX_RESOURCES["help_desk"],
    "mission-control": SANDBOX_RESOURCES["mission_control"],
    "timezest": SANDBOX_RESOURCES["timezest"],
}
#: The end user whose e-mailed form replies become "Note Emailed In" notes.
SANDBOX_CONTACT_ID = 30685812

#: (fieldID, field name) of the ticket fields a ticket webhook can subscribe to.
TICKET_WEBHOOK_FIELDS: list[tuple[int, str]] = [
    (72014, "status"),
    (72031, "dueDateTime"),
    (72002, "ticketNumber"),
    (72019, "assignedResourceID"),
    (72008, "title"),
    (72011, "priority"),
    (72026, "queueID"),
    (72044, "lastActivityDate"),
    (72047, "lastActivityResourceID"),
    (72005, "companyID"),
    (72009, "description"),
]
#: (fieldID, field name) of the note fields a note webhook can subscribe to.
NOTE_WEBHOOK_FIELDS: list[tuple[int, str]] = [
    (81003, "ticketID"),
    (81007, "title"),
    (81006, "description"),
    (81012, "noteType"),
    (81015, "creatorResourceID"),
    (81018, "createdByContactID"),
    (81013, "publish"),
]


def seed_resources() -> list[dict[str, Any]]:
    """Resources in ResourceModel shape (camelCase on the wire); userType/licenseType values are illustrative."""
    people = [
        ("atrelay", "atrelay", "API", SANDBOX_AUTOTASK_CREDENTIALS["username"], "API User"),
        ("technician", "Taylor", "Tech", "ttech@msp.invalid", "Service Technician"),
        ("help_desk", "Help Desk", "Support", "helpdesk@msp.invalid", "Help Desk"),
        ("mission_control", "Mission Control", "Bridge", "bridge@missioncontrolnoc.invalid", "API User"),
        ("timezest", "TimeZest", "Integration", "timezest-api@msp.invalid", "API User"),
    ]
    return [
        {
            "id": SANDBOX_RESOURCES[key], "firstName": first, "lastName": last, "userName": user,
            "email": user, "title": title, "isActive": True,
            "resourceType": "Employee", "userType": 17 if SANDBOX_RESOURCES[key] in API_ONLY_RESOURCES else 1,
            "licenseType": 7 if SANDBOX_RESOURCES[key] in API_ONLY_RESOURCES else 1,
            "defaultServiceDeskRoleID": None if SANDBOX_RESOURCES[key] in API_ONLY_RESOURCES else 29683461,
        }
        for key, first, last, user, title in people
    ]


def seed_contacts() -> list[dict[str, Any]]:
    return [{"id": SANDBOX_CONTACT_ID, "firstName": "Jane", "lastName": "Example",
             "emailAddress": "jane@example.com", "companyID": 29683500, "isActive": 1}]


#: Seed tickets are due this long after the sandbox (re)starts: "ahead" whatever the calendar says.
SEED_DUE_AHEAD = timedelta(days=2)


def _autotask_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def seed_tickets(now: datetime | None = None) -> list[dict[str, Any]]:
    """The seed tickets. Their activity is a fixed moment in the past (tests date partner events after
    it); their due date is relative to ``now`` (the sandbox's clock), so it is ahead on any day."""
    due = _autotask_time((now or datetime.now(UTC)) + SEED_DUE_AHEAD)
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
            "creatorResourceID": SANDBOX_RESOURCES["technician"],
            "dueDateTime": due,
            "assignedResourceID": None,
            "lastActivityDate": "2026-11-26T08:00:00.000Z",
            "lastActivityResourceID": SANDBOX_RESOURCES["technician"],
            "lastActivityPersonType": 1,
        }
        for i, title in enumerate(titles)
    ]
