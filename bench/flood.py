"""An attacker, run as its own process: one keep-alive connection posting one bogus-signature body, as fast
as the server answers, for a number of seconds; prints what it sent and what it got back as JSON.

    python -m bench.flood --url http://127.0.0.1:8000/webhooks/autotask/tickets --seconds 30 --size 262080

The body is ``&`` repeated (the character Autotask's signature escaping rewrites most expensively before
issue 19) and the ``X-Hook-Signature`` a well-formed but wrong one, so every request is refused 401 after
the verifier has done whatever it does for a bad signature.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx

from bench.loadgen import _read_response, _request

__all__ = ["bogus_body", "main"]

#: A well-formed ``sha1=<base64 of 20 bytes>`` that no secret produces for these bodies.
BOGUS_SIGNATURE = "sha1=AAAAAAAAAAAAAAAAAAAAAAAAAAA="


def bogus_body(size: int) -> bytes:
    return b"&" * size


async def run(url: str, seconds: float, size: int) -> dict[str, object]:
    target = httpx.URL(url)
    host, port = target.host, target.port or 80
    request = _request(f"{host}:{port}", target.raw_path.decode(), bogus_body(size),
                       {"X-Hook-Signature": BOGUS_SIGNATURE, "Content-Type": "application/json"})
    codes: dict[int, int] = {}
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            try:
                writer.write(request)
                status = await asyncio.wait_for(_read_response(reader), timeout=60)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                writer.close()  # the server hung up (a refusal may close the connection): dial again
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append(time.perf_counter() - sent)
            codes[status] = codes.get(status, 0) + 1
    finally:
        writer.close()
    latencies.sort()
    return {"requests": len(latencies), "codes": codes, "bytes": len(latencies) * size,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=256 * 1024 - 64)
    args = parser.parse_args()
    json.dump(asyncio.run(run(args.url, args.seconds, args.size)), sys.stdout)


if __name__ == "__main__":
    main()
