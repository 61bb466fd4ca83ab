"""Intake over a real socket (issue 19, points 1 and 2): no valid request is dropped, every refusal recorded.

A real `atrelay ingress` process (uvicorn with atrelay's guarded httptools protocol), on each audit
database; requests written by hand on raw sockets, so how the bytes are split into writes is the
test's choice, not a client library's.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from pipelines.audit import InboundEvent, RejectedRequest
from pipelines.db import session_scope
from tests.support import MC_SECRET, WEBFORM_SECRET, Proc, signed, wait_for

ADMIN = "wire-suite-admin-token-0123456789"
BODY_LIMIT = 256 * 1024  # ATRELAY_MAX_BODY_BYTES's default


@pytest.fixture
def ingress(tmp_path: Path, db_url: str) -> Iterator[tuple[int, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    (tmp_path / "var").mkdir(exist_ok=True)
    env.update({"ATRELAY_VAR_DIR": str(tmp_path / "var"), "ATRELAY_DATABASE_URL": db_url,
                "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET, "ATRELAY_MC_WEBHOOK_SECRET": MC_SECRET,
                "ATRELAY_ADMIN_TOKEN": ADMIN, "ATRELAY_REQUEST_TIMEOUT_SECONDS": "2",
                "ATRELAY_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'var' / 'broker.db'}"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = Proc("ingress-wire", ["ingress", "--port", str(port)], env, tmp_path)
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield port, db_url
    finally:
        proc.stop()


def _form_of_size(size: int, n: int) -> bytes:
    """A signed-able web form body of exactly ``size`` bytes (a long answer fills it)."""
    doc = {"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
           "data": {"form": "new-user", "ticket_id": 50001, "answers": {"n": str(n), "Notes": ""}}}
    bare = len(json.dumps(doc).encode())
    doc["data"]["answers"]["Notes"] = "x" * (size - bare)  # type: ignore[index]
    body = json.dumps(doc).encode()
    assert len(body) == size
    return body


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
            "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), rest


SIZES = [1024, 8 * 1024, 33 * 1024, 40 * 1024, 60 * 1024, 100 * 1024, 130 * 1024, 200 * 1024, BODY_LIMIT]


@pytest.mark.parametrize("writes", ["one-write", "many-writes"])
def test_signed_bodies_up_to_the_limit_are_accepted_however_written(ingress: tuple[int, str], writes: str) -> None:
    """curl and httpx send a small POST's headers and body in one write: 40 and 60 KB forms got 431."""
    port, db = ingress
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # one keep-alive connection
        for n, size in enumerate(SIZES):
            body = _form_of_size(size, n)
            request = _request("/webhooks/webform", body, signed(body, WEBFORM_SECRET))
            if writes == "one-write":
                sock.sendall(request)
            else:
                for i in range(0, len(request), 4096):
                    sock.sendall(request[i:i + 4096])
            answers.append(_read_response(sock))
    assert [status for status, _ in answers] == [202] * len(SIZES), answers
    with session_scope(db) as s:
        stored = sorted(len(b) for b in s.exec(select(InboundEvent.body)).all())
    assert stored == SIZES


def _rejections(db: str) -> list[RejectedRequest]:
    with session_scope(db) as s:
        return list(s.exec(select(RejectedRequest).order_by(col(RejectedRequest.id))).all())


def test_refusals_by_the_protocol_are_recorded_with_their_reason(ingress: tuple[int, str]) -> None:
    port, db = ingress
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /webhooks/webform HTTP/1.1\r\nHost: x\r\nX-Big: " + b"x" * 40_000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 431")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /webhooks/mission-control HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert sock.recv(100).startswith(b"HTTP/1.1 408")  # the 2 s request timeout
    rows = wait_for(lambda: (r := _rejections(db)) and len(r) >= 2 and r, timeout=10, what="two rejection records")
    assert [(r.status_code, r.source) for r in rows] == [(431, "webform"), (408, "mission-control")]
    assert "headers over 32768 bytes" in rows[0].reason and "not received within 2 s" in rows[1].reason


def test_a_request_the_parser_refuses_is_recorded(ingress: tuple[int, str]) -> None:
    port, db = ingress
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /webhooks/webform HTTP/1.1\r\nHost: x\r\nwebhook-id: a\x00b\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    [row] = wait_for(lambda: _rejections(db), timeout=10, what="the rejection record")
    assert (row.status_code, row.source) == (400, "webform") and "malformed HTTP request" in row.reason


@pytest.mark.parametrize("request_line", [
    b"GET /ops?state=%00 HTTP/1.1", b"GET /ops?source=%00 HTTP/1.1", b"GET /ops?ticket=%00 HTTP/1.1",
    b"GET /ops/events/%00 HTTP/1.1",
])
def test_nul_in_the_query_or_path_is_400_and_recorded(ingress: tuple[int, str], request_line: bytes) -> None:
    port, db = ingress
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_line + f"\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n".encode())
        status, body = _read_response(sock)
    assert status == 400 and b"NUL character" in body, body
    [row] = wait_for(lambda: _rejections(db), timeout=10, what="the rejection record")
    assert row.status_code == 400 and "NUL" in row.reason


def test_signed_callouts_stay_fast_while_large_bogus_bodies_flood_in(ingress: tuple[int, str]) -> None:
    """Issue 19.3 in small: two clients post 256 KiB of '&' with a bogus signature back to back; /healthz
    and a small signed request keep answering in well under a second (before: 1.5 s per bogus body,
    spent on the event loop)."""
    import threading

    port, _ = ingress
    stop = threading.Event()
    bogus = _request("/webhooks/autotask/tickets", b"&" * (BODY_LIMIT - 64),
                     {"X-Hook-Signature": "sha1=AAAAAAAAAAAAAAAAAAAAAAAAAAA="})
    refused = []

    def attack() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    while not stop.is_set():
                        sock.sendall(bogus)
                        refused.append(_read_response(sock)[0])
            except (OSError, AssertionError):
                continue  # cut (the 2 s request timeout of this fixture, on a busy machine): dial again

    attackers = [threading.Thread(target=attack) for _ in range(2)]
    for t in attackers:
        t.start()
    try:
        time.sleep(1)
        took = []
        for n in range(15):
            body = _form_of_size(2048, 1000 + n)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                started = time.monotonic()
                sock.sendall(_request("/webhooks/webform", body, signed(body, WEBFORM_SECRET)))
                status, _ = _read_response(sock)
                took.append(time.monotonic() - started)
            assert status == 202
            time.sleep(0.1)
    finally:
        stop.set()
        for t in attackers:
            t.join(timeout=30)
    assert refused and set(refused) == {401}
    # The bench (section 8) holds p99 under 1 s at four attackers; here, on a test machine shared with
    # other work, the median and the worst are bounded with room to spare (before: 1.5 s per bogus body
    # on the event loop, signed requests waited seconds).
    took.sort()
    assert took[len(took) // 2] < 0.5 and took[-1] < 3.0, [round(t, 2) for t in took]
