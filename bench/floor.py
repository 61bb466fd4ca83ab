"""The verify-and-commit floor: the least a signed-webhook intake can do, to measure atrelay against.

    python -m bench.floor --db sqlite:////tmp/floor.db --secret whsec_... --port 8300
    python -m bench.floor --db postgresql://postgres@127.0.0.1/bench --secret whsec_... --port 8300

A Starlette app, uvicorn with uvloop and httptools, one process: read the body, verify the Standard
Webhooks signature (the same verifier atrelay uses), INSERT one row and COMMIT it in its own
transaction (on Starlette's thread pool, one connection per thread), answer 202 with the row id. No
validation, no audit of refusals, no broker, no duplicate handling beyond the unique index: what
atrelay's intake does on top of this is what the ratio in docs/benchmarks.md prices.
"""

from __future__ import annotations

import argparse
import sqlite3
import threading
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.common.standard_webhooks import VerificationFailed, verify

__all__ = ["create_app", "main"]


def _connector(db: str) -> tuple[Any, str]:
    """A connect() for the URL and the INSERT in its driver's parameter style."""
    if db.startswith("sqlite"):
        path = db.split("///", 1)[1]

        def connect_sqlite() -> Any:
            conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            # The same durability settings as atrelay's embedded database (WAL, synchronous=NORMAL).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS floor_events (id INTEGER PRIMARY KEY, "
                         "webhook_id TEXT UNIQUE NOT NULL, body BLOB NOT NULL)")
            return conn

        return connect_sqlite, "INSERT INTO floor_events (webhook_id, body) VALUES (?, ?) RETURNING id"
    import psycopg

    url = db.replace("postgresql+psycopg://", "postgresql://")

    def connect_pg() -> Any:
        conn = psycopg.connect(url)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS floor_events (id BIGSERIAL PRIMARY KEY, "
                        "webhook_id TEXT UNIQUE NOT NULL, body BYTEA NOT NULL)")
        conn.commit()
        return conn

    return connect_pg, "INSERT INTO floor_events (webhook_id, body) VALUES (%s, %s) RETURNING id"


def create_app(db: str, secret: str) -> Starlette:
    connect, insert = _connector(db)
    local = threading.local()
    connect().close()  # create the table once, before any request

    def commit_one(webhook_id: str, body: bytes) -> int:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect()
        cur = conn.cursor()
        cur.execute(insert, (webhook_id, body))
        row_id = int(cur.fetchone()[0])
        conn.commit()
        return row_id

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            webhook_id = verify(body, request.headers, [secret])
        except VerificationFailed as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        row_id = await run_in_threadpool(commit_one, webhook_id, body)
        return JSONResponse({"id": row_id, "status": "accepted"}, status_code=202)

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhooks/webform", receive, methods=["POST"]),
                             Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--port", type=int, default=8300)
    args = parser.parse_args()
    uvicorn.run(create_app(args.db, args.secret), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
