"""`/metrics` in Prometheus format, read from the audit database at scrape time.

The database is the one place every process writes to, so numbers are the same whichever ingress is
scraped, and nothing is lost when a worker restarts (no per-process counters to merge).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from pipelines.audit import InboundEvent, OutboundAttempt, PipelineRun
from pipelines.db import session_scope
from workers.settings import Settings
from workers.status import broker_queue_depth, quota_usage, state_counts

__all__ = ["LATENCY_BUCKETS", "AuditCollector"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
_ID = re.compile(r"/\d+(?=/|$)")


class AuditCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = settings.effective_database_url

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        events = CounterMetricFamily("atrelay_events", "Events received, by source, type and outcome",
                                     labels=["source", "type", "outcome"])
        calls = CounterMetricFamily("atrelay_autotask_calls", "Autotask HTTP calls by method, endpoint and status",
                                    labels=["method", "endpoint", "status"])
        with session_scope(self.db) as s:
            for source, etype, state, n in s.exec(
                    select(InboundEvent.source, InboundEvent.event_type, InboundEvent.state, func.count())
                    .group_by(InboundEvent.source, InboundEvent.event_type, InboundEvent.state)).all():
                events.add_metric([source, etype, state], float(n))
            by_call: dict[tuple[str, str, str], float] = {}
            for method, path, status, n in s.exec(
                    select(OutboundAttempt.method, OutboundAttempt.path, OutboundAttempt.status_code, func.count())
                    .group_by(col(OutboundAttempt.method), col(OutboundAttempt.path),
                              col(OutboundAttempt.status_code))).all():
                endpoint = _ID.sub("/{id}", path.rsplit("/V1.0/", 1)[-1].rsplit("/v1.0/", 1)[-1])
                key = (method, endpoint, str(status or "none"))
                by_call[key] = by_call.get(key, 0.0) + float(n)
            latencies = s.exec(
                select(InboundEvent.received_at, func.max(PipelineRun.finished_at))
                .join(PipelineRun, col(PipelineRun.event_id) == col(InboundEvent.id))
                .where(InboundEvent.state == "applied", PipelineRun.outcome == "applied")
                .group_by(col(InboundEvent.id), col(InboundEvent.received_at))).all()
        for key, total_calls in by_call.items():
            calls.add_metric(list(key), total_calls)
        yield events
        yield calls

        buckets = [0] * len(LATENCY_BUCKETS)
        total: float = 0.0
        count = 0
        for received, finished in latencies:
            if finished is None:
                continue
            seconds = max(0.0, (finished - received).total_seconds())
            total += seconds
            count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
        cumulative = [(str(b), float(n)) for b, n in zip(LATENCY_BUCKETS, buckets, strict=True)]
        cumulative.append(("+Inf", float(count)))
        yield HistogramMetricFamily("atrelay_accept_to_applied_seconds",
                                    "From ingress acceptance to the Autotask change", buckets=cumulative,
                                    sum_value=total)

        counts = state_counts(self.db)
        states = GaugeMetricFamily("atrelay_events_in_state", "Events now in each state", labels=["state"])
        for state, n in counts.items():
            states.add_metric([state], float(n))
        yield states
        yield GaugeMetricFamily("atrelay_dead_letters", "Dead-lettered events", value=float(counts.get("dead", 0)))
        yield GaugeMetricFamily("atrelay_parked", "Events parked until a later attempt",
                                value=float(counts.get("parked", 0) + counts.get("retrying", 0)))
        depth = broker_queue_depth(self.settings)
        if depth is not None:
            yield GaugeMetricFamily("atrelay_queue_depth", "Messages waiting on the broker queue", value=float(depth))
        usage = quota_usage(self.settings)
        if usage is None:
            return
        yield GaugeMetricFamily("atrelay_autotask_quota_used", "Autotask requests in the last rolling hour",
                                value=float(usage.used_last_hour))
        yield GaugeMetricFamily("atrelay_autotask_quota_budget", "Hourly Autotask request budget",
                                value=float(usage.budget))
        flight = GaugeMetricFamily("atrelay_autotask_in_flight", "Autotask requests in flight", labels=["endpoint"])
        for endpoint, n in usage.in_flight.items():
            flight.add_metric([endpoint], float(n))
        yield flight
        if usage.tenant_count is not None:
            yield GaugeMetricFamily("atrelay_autotask_tenant_requests", "Tenant-wide requests this hour",
                                    value=float(usage.tenant_count))
