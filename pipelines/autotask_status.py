"""What the audit database knows about Autotask as an event source (for doctor, status, dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select

from connectors.common.events import Source
from pipelines.audit import InboundEvent, PollRun, RejectedRequest
from pipelines.db import session_scope

__all__ = ["DEACTIVATION_SOURCE", "AutotaskIntake", "autotask_intake"]

#: How deactivation notices are filed in the (capped) rejections table: recorded, never acted on.
DEACTIVATION_SOURCE = "autotask-deactivation"


@dataclass(frozen=True)
class AutotaskIntake:
    last_callout_at: datetime | None
    callouts_total: int
    last_reconcile_at: datetime | None
    last_reconcile_outcome: str | None
    last_reconcile_error: str | None
    recovered_total: int
    deactivation_notices: int
    last_deactivation_at: datetime | None
    last_deactivation: str | None


def autotask_intake(db: str) -> AutotaskIntake:
    with session_scope(db) as s:
        callouts = (col(InboundEvent.source) == Source.AUTOTASK.value) & ~col(InboundEvent.external_id).startswith(
            "reconcile:") & col(InboundEvent.caused_by_id).is_(None)
        last_callout, total = s.exec(select(func.max(InboundEvent.received_at), func.count())
                                     .where(callouts)).one()
        recovered = s.exec(select(func.count()).where(
            col(InboundEvent.external_id).startswith("reconcile:"))).one()
        run = s.exec(select(PollRun).where(PollRun.source == "autotask", PollRun.outcome != "running")
                     .order_by(col(PollRun.id).desc())).first()
        notices = s.exec(select(RejectedRequest).where(RejectedRequest.source == DEACTIVATION_SOURCE)
                         .order_by(col(RejectedRequest.id).desc())).all()
        return AutotaskIntake(
            last_callout_at=last_callout, callouts_total=int(total or 0),
            last_reconcile_at=run.finished_at if run else None, last_reconcile_outcome=run.outcome if run else None,
            last_reconcile_error=run.error if run else None, recovered_total=int(recovered or 0),
            deactivation_notices=len(notices), last_deactivation_at=notices[0].at if notices else None,
            last_deactivation=notices[0].reason if notices else None,
        )
