"""Logging: one event per line with a stable dotted name and its ids bound.

Distributed mode writes JSON (for a log shipper); the embedded default writes readable lines. The
Celery task id is added to every record logged while a task runs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["CeleryChatterFilter", "JsonFormatter", "KeyValueFormatter", "configure_logging"]

# Celery attaches its whole message as ``data``; the text already says what matters.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName", "data"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class TaskIdFilter(logging.Filter):
    """Bind the running Celery task's id, when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "task_id" not in record.__dict__:
            try:
                from celery import current_task

                task_id = current_task.request.id if current_task else None
            except Exception:  # logging must never fail
                task_id = None
            if task_id:
                record.task_id = task_id
        return True


class CeleryChatterFilter(logging.Filter):
    """Celery's per-task "received" and "succeeded" lines for atrelay's own tasks, demoted to DEBUG.

    Beat runs a sweep every few seconds and polls on timers: at INFO an idle atrelay wrote ~140 such
    lines in six minutes, burying what matters. Our own lines (``pipeline.run.finished``, dead letters
    at WARNING, poll failures) say what happened; failures and retries keep Celery's own level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        name = args.get("name") if isinstance(args, dict) else None
        text = str(record.msg)
        if record.levelno == logging.INFO and isinstance(name, str) and name.startswith("atrelay.") and (
                text.endswith(" received") or " succeeded in " in text):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else
                         KeyValueFormatter("%(asctime)s %(levelname)-7s %(name)s %(message)s"))
    handler.addFilter(TaskIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; our own attempt records say the same without noise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    chatter = CeleryChatterFilter()
    for name in ("celery.app.trace", "celery.worker.strategy"):
        target = logging.getLogger(name)
        if not any(isinstance(f, CeleryChatterFilter) for f in target.filters):
            target.addFilter(chatter)
