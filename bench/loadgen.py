"""Load generator, run as its own process: sends signed webhooks and reports what it saw as JSON.

    python -m bench.loadgen --url http://127.0.0.1:8000/webhooks/webform --secret whsec_... \
        --count 2000 --concurrency 32 [--rate 20] [--first-ticket 50001] [--kind form|mc|autotask] \
        [--by number|id] [--bodies FILE]

Forms and Mission Control webhooks name their ticket by **number** (``T20261130.50001``, what
``bench.common.add_tickets`` gives ticket 50001), as the real senders do: a person filling in a form
sees the number, not Autotask's id. ``--by id`` sends the easier input (no number to resolve).
``--kind autotask`` sends Autotask ticket callouts signed with ``X-Hook-Signature`` (the secret is then
the Autotask webhook secretKey, not a ``whsec_`` one); with ``--bodies`` it sends the callouts in that
file (a JSON list of documents, built by the benchmark from the sandbox's own tickets and notes) instead
of made-up ones.

Requests are signed before the clock starts (signing is the partner's cost, not atrelay's).
``--rate`` sends open-loop at a fixed rate (for latency at a given load); without it, as fast as
``--concurrency`` allows (for throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from connectors.common.standard_webhooks import sign


def ticket_number(ticket_id: int) -> str:
    """The number ``bench.common.add_tickets`` gives sandbox ticket ``ticket_id``."""
    return f"T20261130.{ticket_id % 100000:05d}"


def _bodies(count: int, first_ticket: int, kind: str, by: str = "number") -> list[bytes]:
    # Stamped now, as a sender stamps what just happened (an old stamp would make every event older
    # than its ticket's last activity, and each would cost a TicketHistory read a real one does not).
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = []
    for i in range(count):
        ticket = first_ticket + i
        ref: dict[str, object] = {"ticket_number": ticket_number(ticket)} if by == "number" else {"ticket_id": ticket}
        if kind == "autotask":
            # An Autotask ticket-webhook callout (tests/connectors/autotask/callouts/*.json): one webhook
            # Guid, a distinct ticket and SequenceNumber each, so every callout is a new event.
            doc = {"Action": "Update", "Guid": "b3c7a0a4-2c49-40a8-8183-69994ce5b3eb", "EntityType": "Ticket",
                   "Id": ticket, "Fields": {"TicketNumber": f"T20261126.{ticket % 100000:05d}", "Status": 5},
                   "EventTime": now, "SequenceNumber": i + 1, "PersonID": 30691780}
        elif kind == "mc":
            # The three escalation kinds in turn; mc.no_contact brings its follow-up with it.
            doc = {"type": ("mc.escalated", "mc.out_of_scope", "mc.no_contact")[i % 3], "timestamp": now,
                   "data": {**ref, "summary": "bench", "technician": "bench", "contact_attempts": 1}}
        else:
            doc = {"type": "form.submitted", "timestamp": now,
                   "data": {"form": "bench", **ref, "answers": {"q1": "a", "q2": "b"}}}
        out.append(json.dumps(doc).encode())
    return out


def _autotask_sign(body: bytes, secret: str) -> dict[str, str]:
    """``X-Hook-Signature: sha1=<base64 HMAC-SHA1 of the body>``, as Autotask signs its callouts."""
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha1).digest()).decode()
    return {"X-Hook-Signature": f"sha1={digest}", "Content-Type": "application/json"}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Keep-alive HTTP/1.1 over raw asyncio streams: the client's own cost stays far below the server's,
    so on one machine the numbers describe atrelay, not the load generator."""
    url = httpx.URL(args.url)
    host, port = url.host, url.port or 80
    if args.bodies:
        bodies = [json.dumps(doc).encode() for doc in json.loads(Path(args.bodies).read_text())]
        args.count = len(bodies)
    else:
        bodies = _bodies(args.count, args.first_ticket, args.kind, args.by)
    sign_one = _autotask_sign if args.kind == "autotask" else (
        lambda b, secret: sign(b, secret, msg_id=f"msg_{uuid.uuid4().hex}"))
    requests = [_request(f"{host}:{port}", url.raw_path.decode(), b, sign_one(b, args.secret)) for b in bodies]
    latencies: list[float] = []
    codes: dict[int, int] = {}
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    started = time.perf_counter()

    async def producer() -> None:
        for i, request in enumerate(requests):
            if args.rate:
                delay = started + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            queue.put_nowait((i, request))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                _i, request = await queue.get()
                if not request:
                    return
                sent = time.perf_counter()
                for attempt in range(3):
                    try:
                        writer.write(request)
                        status = await asyncio.wait_for(_read_response(reader), timeout=60)
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        # The server closed an idle keep-alive connection: reconnect and send again, as a
                        # partner would (same webhook-id, so a repeat can only be a duplicate).
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
                        if attempt == 2:
                            raise
                latencies.append((time.perf_counter() - sent) * 1000)
                codes[status] = codes.get(status, 0) + 1
                queue.task_done()
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(args.concurrency)]
    await producer()
    await queue.join()
    elapsed = time.perf_counter() - started
    for _ in workers:
        queue.put_nowait((-1, b""))
    await asyncio.gather(*workers)
    return {"count": args.count, "concurrency": args.concurrency, "rate": args.rate, "seconds": elapsed,
            "rps": args.count / elapsed, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
            "max_ms": max(latencies, default=float("nan")),
            "over_10s": sum(1 for ms in latencies if ms > 10_000),  # Autotask's callout timeout
            "codes": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--first-ticket", type=int, default=50001)
    parser.add_argument("--kind", choices=["form", "mc", "autotask"], default="form")
    parser.add_argument("--by", choices=["number", "id"], default="number",
                        help="how forms and Mission Control webhooks name their ticket")
    parser.add_argument("--bodies", help="a JSON list of documents to send instead of generated ones")
    result = asyncio.run(run(parser.parse_args()))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
