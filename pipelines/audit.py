"""The audit log: tables, not log lines.

One row per inbound request we accepted (raw bytes kept so any event can be replayed), one per
pipeline run with its decision and outcome, one per outbound Autotask call, plus the effect ledger
that makes status changes and notes happen once even when a worker dies half-way.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from pipelines.db import UTCDateTime, utcnow

__all__ = [
    "AlertDelivery",
    "AlertSender",
    "AuditAnchor",
    "AuditSeal",
    "DeadLetterAlerted",
    "DeploymentSecret",
    "EffectLedger",
    "EventState",
    "InboundEvent",
    "LivenessIncident",
    "OpsMark",
    "OpsSession",
    "OutboundAttempt",
    "PartnerSighting",
    "PipelineRun",
    "PollRun",
    "ProcessHeartbeat",
    "QuotaRequest",
    "QuotaSlot",
    "RejectedRequest",
    "ShadowPeriod",
    "ShadowWrite",
    "TenantUsage",
    "TicketNumber",
    "TicketState",
    "TicketStatusChange",
    "TimezestRequest",
]


class EventState(StrEnum):
    ACCEPTED = "accepted"  # recorded, queued, not yet picked up
    PROCESSING = "processing"  # a worker holds the lease
    RETRYING = "retrying"  # a transient error; a short retry is on the broker
    PARKED = "parked"  # waiting in the database until ``not_before`` (long backoff, quota); swept back
    APPLIED = "applied"  # Autotask changed (status and/or note)
    SKIPPED = "skipped"  # nothing to do, with a reason (already-set, stale, status-changed)
    IGNORED = "ignored"  # the rules say this event changes nothing
    DEAD = "dead"  # a permanent error or retries exhausted; replayable
    # A signed request whose body failed validation: kept whole (it is authenticated data), never
    # run; a replay re-validates it with the current code (pipelines/invalid.py).
    INVALID = "invalid"

    @property
    def final(self) -> bool:
        return self in {EventState.APPLIED, EventState.SKIPPED, EventState.IGNORED, EventState.DEAD,
                        EventState.INVALID}



class InboundEvent(SQLModel, table=True):
    __tablename__ = "inbound_events"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_inbound_source_external"),
        Index("ix_inbound_state_updated", "state", "updated_at"),
        Index("ix_inbound_ticket", "ticket_id"),
        Index("ix_inbound_ticket_number", "ticket_number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(sa_column=Column(String(32), nullable=False))
    external_id: str = Field(sa_column=Column(String(200), nullable=False))
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    ticket_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ticket_number: str | None = Field(default=None, sa_column=Column(String(50), nullable=True))
    occurred_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    caused_by_id: int | None = Field(
        default=None, sa_column=Column(ForeignKey("inbound_events.id"), nullable=True)
    )
    not_before: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    state: str = Field(default=EventState.ACCEPTED, sa_column=Column(String(16), nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = Field(default=0)
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # Which run holds the lease: renewals and every write check it, so a run that lost its lease
    # (it outlived it and another run took the event) writes nothing more.
    lease_owner: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # The retry horizon counts from here: the receipt, or the last replay.
    horizon_from: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    replays: int = Field(default=0)
    # Runs that ended in an unexpected exception (a bug, or data the database refuses): past
    # ATRELAY_MAX_CRASHES the event is dead-lettered with the exception instead of retried for ever.
    crashes: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class PipelineRun(SQLModel, table=True):
    __tablename__ = "pipeline_runs"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(sa_column=Column(ForeignKey("inbound_events.id"), nullable=False, index=True))
    task_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    worker: str | None = Field(default=None, sa_column=Column(String(128), nullable=True))
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    decision: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    from_status: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    to_status: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    outcome: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class OutboundAttempt(SQLModel, table=True):
    __tablename__ = "outbound_attempts"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int | None = Field(
        default=None, sa_column=Column(ForeignKey("inbound_events.id"), nullable=True, index=True)
    )
    run_id: int | None = Field(default=None, sa_column=Column(ForeignKey("pipeline_runs.id"), nullable=True))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    target: str = Field(default="autotask", sa_column=Column(String(16), nullable=False))
    method: str = Field(sa_column=Column(String(8), nullable=False))
    path: str = Field(sa_column=Column(String(300), nullable=False))
    status_code: int | None = None
    duration_ms: float = 0.0
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class EffectLedger(SQLModel, table=True):
    """What this event did to Autotask, written step by step so a re-run never repeats a write.

    ``patch_started_at`` is committed before the PATCH and ``note_started_at`` before the note POST:
    a re-run that finds a start mark without its completion knows the outcome is ambiguous and
    checks Autotask instead of writing again.
    """

    __tablename__ = "effects"
    __table_args__ = (Index("ix_effects_ticket", "ticket_id"),)

    event_id: int = Field(sa_column=Column(ForeignKey("inbound_events.id"), primary_key=True))
    ticket_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    from_status_id: int | None = None
    to_status_id: int | None = None
    patch_started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    patched_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    note_started_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    note_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # The title and body exactly as posted (kept when the POST starts): the dashboard shows them
    # without asking Autotask, and a re-render later could differ from what the technician saw.
    note_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The newest ticket_status_changes row on the ticket when this event decided to act: what the
    # ticket did after it (in recording order) tells a second report of the same escalation from a new one.
    seen_change_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Set on a second report of an escalation (it writes nothing): the report it is the echo of. A
    # report pairs with at most one from the other channel.
    duplicate_of: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class TicketState(SQLModel, table=True):
    """The last transition atrelay applied per ticket, for the never-regress ordering rule."""

    __tablename__ = "ticket_state"

    ticket_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    last_event_id: int | None = None
    last_occurred_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_status_id: int | None = None
    lease_event_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # The run holding the ticket (its owner token): released and renewed only by that run.
    lease_owner: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # What atrelay last knew of the ticket's status in Autotask (its own writes, callouts, reconciliation):
    # a callout or poll that reports this same status is not a change.
    observed_status_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    observed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # The ticket as atrelay last read it (or wrote it), shared by runs while fresh (pipelines.ticket_reads):
    # read_at is when that read was sent; read_dropped_at when a change atrelay did not make was heard.
    read_status_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    read_activity_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    read_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    read_dropped_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    reading_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    # The whole ticket as that read returned it (the fields atrelay asks for): a callout run acts on it,
    # and a guard needs its due date.
    read_item: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # atrelay's last status write whose gate found nobody else had changed the status since its event
    # (``quiet_since``): while the ticket still shows that status and its last activity is atrelay's own,
    # nothing but atrelay has acted on it since that write, and a later event needs no TicketHistory read
    # to know it (pipelines.gate). Cleared before any other write of atrelay's to the ticket, and before
    # the same event's note unless that note follows its PATCH at once (pipelines.store.QUIET_NOTE).
    quiet_since: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    quiet_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))  # the PATCH
    quiet_event_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    quiet_status_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class TicketStatusChange(SQLModel, table=True):
    """A status change seen in Autotask, by anyone: a person, a partner's API user, or atrelay itself.

    Fed by Autotask callouts, reconciliation and atrelay's own writes; the ordering rules read it to
    tell whether a status change happened after a partner event ("never overwrite a person").
    """

    __tablename__ = "ticket_status_changes"
    __table_args__ = (Index("ix_status_changes_ticket_changed", "ticket_id", "changed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    from_status_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    to_status_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    changed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    by_resource_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    by_atrelay: bool = False
    via: str = Field(sa_column=Column(String(16), nullable=False))  # callout | reconciliation | atrelay
    event_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class TicketNumber(SQLModel, table=True):
    """A ticket number and the ticket it names: asked of Autotask once (it never changes), in batches."""

    __tablename__ = "ticket_numbers"

    number: str = Field(sa_column=Column(String(50), primary_key=True))
    ticket_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # A run is asking Autotask for this number right now: others wait for its answer.
    resolving_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class RejectedRequest(SQLModel, table=True):
    """A request the ingress refused, with why. Capped (oldest pruned) so floods stay bounded."""

    __tablename__ = "rejected_requests"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    source: str = Field(sa_column=Column(String(32), nullable=False))
    status_code: int
    reason: str = Field(sa_column=Column(String(300), nullable=False))
    webhook_id: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    remote: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    body_size: int = 0


class TimezestRequest(SQLModel, table=True):
    """The last status (and booked time) the poller saw for each TimeZest scheduling request."""

    __tablename__ = "timezest_requests"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    # The booked start seen last: a scheduled request whose start moves was rescheduled.
    selected_start_time: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    ticket_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_seen_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    last_checked_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class PollRun(SQLModel, table=True):
    """One poll of a partner API: when, what it saw, what it emitted, or why it failed."""

    __tablename__ = "poll_runs"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    outcome: str = Field(default="running", sa_column=Column(String(16), nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    requests_seen: int = 0
    events_emitted: int = 0
    high_water: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class AuditSeal(SQLModel, table=True):
    """One link of the tamper-evident chain: a final event with its runs and attempts, hashed.

    ``hash = sha256(prev_hash + content_hash)``; ``content_hash`` covers the event's immutable fields
    and every run and attempt up to ``max_run_id``/``max_attempt_id``. A replay adds runs, which a
    later seal of the same event covers.
    """

    __tablename__ = "audit_seals"
    __table_args__ = (UniqueConstraint("event_id", "max_run_id", name="uq_seal_event_run"),)

    seq: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    max_run_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    max_attempt_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(sa_column=Column(String(64), nullable=False))
    sealed_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class AuditAnchor(SQLModel, table=True):
    """The chain's start after pruning: the last pruned seal's number and hash (one row, id 1)."""

    __tablename__ = "audit_anchor"

    id: int = Field(default=1, primary_key=True)
    last_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    last_hash: str = Field(default="0" * 64, sa_column=Column(String(64), nullable=False))
    pruned_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class QuotaSlot(SQLModel, table=True):
    """An Autotask request in flight (quota governor, database backend). Expires if its holder dies."""

    __tablename__ = "quota_slots"

    token: str = Field(sa_column=Column(String(64), primary_key=True))
    endpoint: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class QuotaRequest(SQLModel, table=True):
    """One Autotask request in the rolling hour (quota governor, database backend)."""

    __tablename__ = "quota_requests"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class TenantUsage(SQLModel, table=True):
    """The tenant's last ThresholdInformation reading (one row, id 1), shared by every worker."""

    __tablename__ = "tenant_usage"

    id: int = Field(default=1, primary_key=True)
    request_count: int = 0
    threshold: int = 10_000
    read_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class DeploymentSecret(SQLModel, table=True):
    """Random values one deployment shares across all its machines (created on first use).

    ``note-marker``: keys the tag in atrelay's note marker, so partner text cannot forge a marker
    that a retry would mistake for its own note.
    """

    __tablename__ = "deployment_secrets"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    value: str = Field(sa_column=Column(String(128), nullable=False))


class PartnerSighting(SQLModel, table=True):
    """The last time atrelay saw a partner write to the tenant's tickets through Autotask itself.

    ``timezest-psa``: TimeZest's own PSA actions (its API resource setting a status or writing a note),
    seen in a callout, TicketHistory or a note read. Once seen, atrelay reads TimeZest's note before
    writing its own for a link or booking it sets itself, so as to repeat none of it; a tenant where
    TimeZest never writes pays no such read.
    """

    __tablename__ = "partner_sightings"

    name: str = Field(sa_column=Column(String(32), primary_key=True))
    last_seen_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    ticket_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class OpsSession(SQLModel, table=True):
    """A dashboard sign-in, kept in the audit database so every ingress process and every restart agrees
    on it: sign-out (``ended_at``) and expiry hold wherever the next request lands.

    Only a digest of the cookie's random value is stored (the database does not hold a usable session),
    with the id of the key the admin token derives: a new token ends every session made under the old.
    """

    __tablename__ = "ops_sessions"

    digest: str = Field(sa_column=Column(String(64), primary_key=True))
    key_id: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class ProcessHeartbeat(SQLModel, table=True):
    """One atrelay process (worker, beat or ingress) saying it is alive, every ``ATRELAY_HEARTBEAT_SECONDS``.

    A row per process (``id`` = role, host, pid and a random suffix), so the dashboard, ``/readyz``,
    ``atrelay doctor`` and ``/metrics`` can tell "no worker alive" from "idle", whichever process asks.
    ``ready`` is false while the process cannot do its work (a worker whose Autotask credentials are
    refused); ``problem`` says why, in atrelay's words. Times are the database's clock.
    """

    __tablename__ = "process_heartbeats"
    __table_args__ = (Index("ix_heartbeats_role_beat", "role", "beat_at"),)

    id: str = Field(sa_column=Column(String(160), primary_key=True))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    host: str = Field(sa_column=Column(String(120), nullable=False))
    pid: int = Field(sa_column=Column(Integer, nullable=False))
    version: str = Field(sa_column=Column(String(32), nullable=False))
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    beat_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    stopped_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    ready: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    problem: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class LivenessIncident(SQLModel, table=True):
    """One condition ops must hear of (no worker alive, no beat, stuck events, an overdue poll): open
    from ``opened_at`` until ``cleared_at``. Every process checks the conditions; the one whose update
    opens (or clears) the row records the alert, so each incident is alerted once however many look."""

    __tablename__ = "liveness_incidents"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    opened_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    cleared_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class AlertDelivery(SQLModel, table=True):
    """One alert's delivery to one of ``ATRELAY_NOTIFY_URLS`` (``target``: a digest of the URL, which
    holds tokens and is never stored; ``label``: apprise's privacy-masked form of it). A partial failure
    is re-sent only to the URL that failed, after a growing pause, a bounded number of times."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "target", name="uq_alert_deliveries_alert_target"),)

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(sa_column=Column(ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False))
    target: str = Field(sa_column=Column(String(16), nullable=False))
    label: str = Field(sa_column=Column(String(200), nullable=False))
    state: str = Field(default="pending", sa_column=Column(String(16), nullable=False))  # pending|sent|failed
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_try_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class AlertSender(SQLModel, table=True):
    """Who is sending one kind of alert now (a lease): one sender at a time per kind, so four send
    tasks that start together send each message once."""

    __tablename__ = "alert_senders"

    kind: str = Field(sa_column=Column(String(32), primary_key=True))
    owner: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))


class DeadLetterAlerted(SQLModel, table=True):
    """A dead letter an alert has counted (``dead_at``: the event's ``updated_at`` when it died), so every
    dead letter is counted once, however many arrive between two checks; a replayed event that dies
    again is counted again. Rows of events no longer dead are dropped by the next check."""

    __tablename__ = "dead_letters_alerted"

    event_id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    dead_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class OpsMark(SQLModel, table=True):
    """Small named facts the alert checks keep between runs (the last webhook verification, its result)."""

    __tablename__ = "ops_marks"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    value: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ShadowPeriod(SQLModel, table=True):
    """A stretch of time the deployment ran with ``ATRELAY_MODE=shadow`` (``ended_at`` None: still does).

    Opened by the first process that starts in shadow mode, closed by the first that starts live.
    An event received inside a period was accepted in shadow mode and is never written to Autotask,
    whatever mode later runs it (pipelines/shadow.py).
    """

    __tablename__ = "shadow_periods"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    started_by: str = Field(sa_column=Column(String(160), nullable=False))
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    ended_by: str | None = Field(default=None, sa_column=Column(String(160), nullable=True))


class ShadowWrite(SQLModel, table=True):
    """An Autotask write atrelay would have made and did not (shadow mode): the PATCH or the note.

    One row per event and kind (``patch`` or ``note``), recorded at the moment of the write, after the
    write gate allowed it: what live mode would have done, to set beside what people then did.
    """

    __tablename__ = "shadow_writes"
    __table_args__ = (UniqueConstraint("event_id", "kind", name="uq_shadow_writes_event_kind"),
                      Index("ix_shadow_writes_ticket", "ticket_id"))

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(sa_column=Column(ForeignKey("inbound_events.id"), nullable=False))
    kind: str = Field(sa_column=Column(String(8), nullable=False))  # patch | note
    ticket_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    from_status_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    to_status_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    to_status: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    note_text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # Why it was not written: this process runs in shadow mode, or the event was accepted in shadow mode
    # and a live process reached its write afterwards.
    why: str = Field(sa_column=Column(String(16), nullable=False))  # mode | accepted
