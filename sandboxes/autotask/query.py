"""Shared pieces of the Autotask sandbox's modules: the query filter grammar, error bodies, timestamps.

Sandbox-only: nothing here is, or may become, atrelay's client code (the sandbox is the test oracle).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["errors", "lowered", "matches", "now", "run_query"]


def now() -> str:
    """UTC with milliseconds and a Z, as Autotask writes datetimes."""
    at = datetime.now(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def errors(status: int, *messages: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status, headers=headers)


def lowered(body: Any) -> dict[str, Any]:
    """Autotask accepts property names in any case (PM sends PascalCase, the Swagger camelCase)."""
    return {str(k).lower(): v for k, v in body.items()} if isinstance(body, dict) else {}


def matches(record: dict[str, Any], cond: dict[str, Any]) -> bool:
    op = str(cond.get("op", "")).lower()
    if op in ("and", "or"):
        results = [matches(record, c) for c in cond.get("items") or []]
        return all(results) if op == "and" else any(results)
    key = str(cond.get("field", "")).lower()
    actual = next((v for k, v in record.items() if k.lower() == key), None)
    want = cond.get("value")
    text, wtext = str(actual if actual is not None else "").lower(), str(want if want is not None else "").lower()
    checks: dict[str, Callable[[], bool]] = {
        "eq": lambda: actual == want or text == wtext,
        "noteq": lambda: not (actual == want or text == wtext),
        "contains": lambda: wtext in text,
        "beginswith": lambda: text.startswith(wtext),
        "endswith": lambda: text.endswith(wtext),
        "exist": lambda: actual not in (None, ""),
        "notexist": lambda: actual in (None, ""),
        # String comparisons ignore case, as eq's do (Autotask's database collation is case-insensitive).
        "in": lambda: actual in (want or []) or text in {str(w).lower() for w in want or []},
        "notin": lambda: not (actual in (want or []) or text in {str(w).lower() for w in want or []}),
        "gt": lambda: actual is not None and actual > want,
        "gte": lambda: actual is not None and actual >= want,
        "lt": lambda: actual is not None and actual < want,
        "lte": lambda: actual is not None and actual <= want,
    }
    if op not in checks:
        raise ValueError(f"Unsupported operator {cond.get('op')!r}")
    return bool(checks[op]())


def run_query(records: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    lower = lowered(body)
    max_records = int(lower.get("maxrecords") or 500)
    if not 1 <= max_records <= 500:
        raise ValueError("MaxRecords must be between 1 and 500")
    conditions = lower.get("filter") or []
    if not conditions:
        raise ValueError("A query requires at least one filter condition")
    hits = [r for r in records if all(matches(r, c) for c in conditions)][:max_records]
    include = [f.lower() for f in lower.get("includefields") or []]
    if include:
        hits = [{k: v for k, v in r.items() if k.lower() in include} for r in hits]
    return {"items": hits, "pageDetails": {"count": len(hits), "requestCount": max_records,
                                           "prevPageUrl": None, "nextPageUrl": None}}
