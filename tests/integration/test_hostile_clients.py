"""Hostile clients (issue 13): each probe that once cost memory, a 500 or a leak, now refused with a reason.

In-process cases run on both audit databases; the memory and slow-client cases run a real
`atrelay ingress` process and watch its resident memory while it is flooded over loopback.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlmodel import col, select

from pipelines import store
from pipelines.audit import InboundEvent, RejectedRequest
from pipelines.db import session_scope
from pipelines.schema import upgrade
from tests.integration.helpers import webform_body
from tests.support import MC_SECRET, WEBFORM_SECRET, Proc, signed
from workers.cli.reports import print_event, print_rejections
from workers.http.ingress import create_app
from workers.settings import load_settings

ADMIN = "hostile-suite-admin-token-0123456789"


@pytest.fixture
def client_and_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, str]]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_WEBFORM_WEBHOOK_SECRET", WEBFORM_SECRET)
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", MC_SECRET)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", ADMIN)
    with TestClient(create_app(load_settings(), enqueue=lambda _id: None)) as client:
        yield client, db_url


def _rejections(db: str) -> list[RejectedRequest]:
    with session_scope(db) as s:
        return list(s.exec(select(RejectedRequest).order_by(col(RejectedRequest.id))).all())


def _events(db: str) -> list[InboundEvent]:
    with session_scope(db) as s:
        return list(s.exec(select(InboundEvent)).all())


# ---- 2. Content-Length overflow --------------------------------------------------------------------
@pytest.mark.parametrize("declared", ["2147483648", str(2**63), str(2**64 - 1), "9" * 40])
def test_huge_content_length_is_413_and_recorded(client_and_db: tuple[TestClient, str], declared: str) -> None:
    client, db = client_and_db
    body = webform_body()
    headers = {**signed(body, WEBFORM_SECRET), "content-length": declared}
    response = client.post("/webhooks/webform", content=body, headers=headers)
    assert response.status_code == 413, response.text
    [rej] = _rejections(db)
    assert rej.status_code == 413 and rej.source == "webform" and 0 <= rej.body_size < 2**31


@pytest.mark.parametrize("declared", [b"\xc2\xb2", b"12a", b"-1", b"1e9"])
def test_malformed_content_length_is_400_and_recorded(client_and_db: tuple[TestClient, str], declared: bytes) -> None:
    client, db = client_and_db
    body = webform_body()
    headers = [(k.encode(), v.encode()) for k, v in signed(body, WEBFORM_SECRET).items()]
    response = client.post("/webhooks/webform", content=body, headers=[*headers, (b"content-length", declared)])
    assert response.status_code == 400, response.text
    assert [r.status_code for r in _rejections(db)] == [400]


# ---- 3. Other 500s -----------------------------------------------------------------------------------
def _signed_post(client: TestClient, body: bytes, **sign: Any) -> httpx.Response:
    return client.post("/webhooks/webform", content=body, headers=signed(body, WEBFORM_SECRET, **sign))


def test_deeply_nested_json_is_400(client_and_db: tuple[TestClient, str]) -> None:
    client, db = client_and_db
    for depth in (1_100, 50_000):
        body = b'{"type": "form.submitted", "x": ' + b"[" * depth + b"]" * depth + b"}"
        response = _signed_post(client, body)
        assert response.status_code == 400 and "nested" in response.json()["error"], response.text
    assert _events(db) == [] and len(_rejections(db)) == 2


def test_integer_over_4300_digits_is_400(client_and_db: tuple[TestClient, str]) -> None:
    client, _ = client_and_db
    payload = json.loads(webform_body())
    body = json.dumps(payload).encode()[:-1] + b', "n": ' + b"7" * 5000 + b"}"
    response = _signed_post(client, body)
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"], response.text


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_timestamp_at_the_date_limits_is_4xx(client_and_db: tuple[TestClient, str], when: str) -> None:
    client, _ = client_and_db
    response = _signed_post(client, webform_body(when=when))
    assert 400 <= response.status_code < 500 and response.json()["error"], response.text


def test_long_webhook_id_is_400_and_recorded(client_and_db: tuple[TestClient, str]) -> None:
    client, db = client_and_db
    response = _signed_post(client, webform_body(), msg_id="m" * 300)
    assert response.status_code == 400 and "webhook-id" in response.json()["error"]
    assert _events(db) == [] and [r.status_code for r in _rejections(db)] == [400]


def test_dashboard_odd_ids_are_4xx(client_and_db: tuple[TestClient, str]) -> None:
    client, _ = client_and_db
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for ticket in ("²", "12345678901234567890", "٣٤", "-1", "x" * 500):
        response = client.get("/ops", params={"ticket": ticket}, headers=auth)
        assert response.status_code == 200, (ticket, response.status_code)
    for event_id in ("12345678901234567890", "2147483648"):
        assert client.get(f"/ops/events/{event_id}", headers=auth).status_code == 404
        assert client.post(f"/api/events/{event_id}/replay", headers=auth).status_code in (404, 422)
    assert client.get("/ops/events/²", headers=auth).status_code == 422


# ---- 7. Duplicate Standard Webhooks headers ----------------------------------------------------------
@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_duplicated_webhook_headers_are_400(client_and_db: tuple[TestClient, str], name: str) -> None:
    client, db = client_and_db
    body = webform_body()
    good = signed(body, WEBFORM_SECRET)
    other = signed(body, WEBFORM_SECRET)  # a second, also valid, set: which one would be audited?
    headers = [(k, v) for k, v in good.items()] + [(name, other[name])]
    response = client.post("/webhooks/webform", content=body, headers=headers)
    assert response.status_code == 400 and f"duplicated {name}" in response.json()["error"]
    assert _events(db) == [] and [r.status_code for r in _rejections(db)] == [400]


# ---- 8. Small leaks ----------------------------------------------------------------------------------
def test_credential_like_headers_are_not_stored(client_and_db: tuple[TestClient, str]) -> None:
    client, db = client_and_db
    body = webform_body()
    # Distinctive values: two-letter ones turned up by chance inside the base64 signature.
    extra = {"api-key": "cred-value-one", "x-auth": "cred-value-two", "x-access-key": "cred-value-three",
             "x-session": "cred-value-four", "apikey": "cred-value-five"}
    response = client.post("/webhooks/webform", content=body, headers={**signed(body, WEBFORM_SECRET), **extra})
    assert response.status_code == 202, response.text
    [event] = _events(db)
    assert not set(extra) & set(event.headers) and "webhook-id" in event.headers
    assert not any(v in json.dumps(event.headers) for v in extra.values())


def test_readyz_is_terse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(db)
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db)
    monkeypatch.setenv("ATRELAY_BROKER_URL", "redis://secret-broker-host.invalid:6390/0")
    with TestClient(create_app(load_settings(), enqueue=lambda _id: None)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    text = response.text
    assert response.json()["problems"]["broker"] == "unreachable"
    assert "secret-broker-host" not in text and "6390" not in text and "Error" not in text


def test_var_files_are_private(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env["ATRELAY_VAR_DIR"] = str(tmp_path / "var")
    proc = Proc("migrate", ["migrate"], env, tmp_path)
    assert proc.proc.wait(timeout=60) == 0, proc.log()
    proc.stop()
    db = tmp_path / "var" / "atrelay.db"
    assert db.exists() and db.stat().st_mode & 0o077 == 0, oct(db.stat().st_mode)


# ---- 6. Markup injection into the CLI ----------------------------------------------------------------
def test_partner_strings_are_not_rich_markup(sqlite_url: str) -> None:
    db = sqlite_url
    for wid in ("[/]", "[link=https://evil.example]x[/link]", "[bold red]boom"):
        store.record_rejection(db, source="webform", status_code=401, reason=f"signature rejected {wid}",
                               webhook_id=wid, remote="127.0.0.1", body_size=3, keep=100)
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="webform", external_id="[/]", event_type="form.submitted", body=b'{"a": "[/] [link=https://e.x]"}',
        headers={"x-note": "[/]"}))
    out = StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system="truecolor")
    print_rejections(db, console, limit=10)
    assert print_event(db, console, event_id)
    text = out.getvalue()
    assert "[/]" in text and "[link=https://evil.example]" in text
    assert "\x1b]8;" not in text  # no OSC 8 hyperlink was rendered


# ---- 1. Memory, slow clients and connection cap, against a real process -------------------------------
def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[tuple[str, Proc]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    db = f"sqlite:///{tmp_path / 'var' / 'atrelay.db'}"
    (tmp_path / "var").mkdir()
    upgrade(db)
    env.update({"ATRELAY_VAR_DIR": str(tmp_path / "var"), "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET,
                "ATRELAY_MC_WEBHOOK_SECRET": MC_SECRET, "ATRELAY_ADMIN_TOKEN": ADMIN,
                "ATRELAY_REQUEST_TIMEOUT_SECONDS": "2", "ATRELAY_MAX_CONNECTIONS": "150",
                "ATRELAY_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'var' / 'broker.db'}"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = Proc("ingress-hostile", ["ingress", "--port", str(port)], env, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(f"{url}/healthz", timeout=60)
        yield url, proc
    finally:
        proc.stop()


def _flood(port: int, head: bytes, filler: bytes, total: int, results: list[str]) -> None:
    """Send ``head`` then ``filler`` until ``total`` bytes or the server hangs up; record what it said."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sent = 0
        try:
            sock.sendall(head)
            while sent < total:
                sock.sendall(filler)
                sent += len(filler)
        except OSError:
            pass
        try:
            results.append(sock.recv(200).decode("latin-1"))
        except OSError as exc:
            results.append(f"error {exc}")


def _watch_rss(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak.append(_rss_mb(pid))
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["headers", "login-body", "chunked-webhook-body"])
def test_floods_keep_memory_bounded(ingress: tuple[str, Proc], kind: str) -> None:
    url, proc = ingress
    port = int(url.rsplit(":", 1)[1])
    pid = proc.proc.pid
    before = _rss_mb(pid)
    chunk = b"x" * 65536
    if kind == "headers":
        head, filler = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ", chunk
    elif kind == "login-body":
        head = (b"POST /ops/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 300000000\r\n\r\ntoken=")
        filler = chunk
    else:
        head = b"POST /webhooks/webform HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        filler = b"10000\r\n" + chunk + b"\r\n"
    stop, peak, results = threading.Event(), [before], []
    watcher = threading.Thread(target=_watch_rss, args=(pid, stop, peak))
    watcher.start()
    floods = [threading.Thread(target=_flood, args=(port, head, filler, 60 * 1024 * 1024, results)) for _ in range(4)]
    for t in floods:
        t.start()
    for t in floods:
        t.join(timeout=30)
    stop.set()
    watcher.join()
    assert len(results) == 4
    expected = {"headers": "431", "login-body": "413", "chunked-webhook-body": "413"}[kind]
    assert all(expected in r for r in results), results
    # Four clients offered 240 MB; the process may grow by the bounded buffers only.
    assert max(peak) - before < 60, f"RSS {before:.0f} -> {max(peak):.0f} MB"
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_too_many_headers_is_431(ingress: tuple[str, Proc]) -> None:
    url, _ = ingress
    headers = {f"x-h{i}": "v" for i in range(150)}
    assert httpx.get(f"{url}/healthz", headers=headers).status_code == 431


def test_slow_clients_are_cut_within_the_timeout(ingress: tuple[str, Proc]) -> None:
    url, _ = ingress
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        # Half never finish their headers, half never finish a declared body.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                  b"POST /webhooks/webform HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        socks.append(s)
    start = time.monotonic()
    closed_at: list[float] = []
    answers: list[bytes] = []
    for s in socks:
        s.settimeout(max(0.1, 8 - (time.monotonic() - start)))
        data = b""
        try:
            while chunk := s.recv(4096):  # trickle is pointless: the server cuts on its own deadline
                data += chunk
        except OSError:
            pass
        closed_at.append(time.monotonic() - start)
        answers.append(data)
        s.close()
    assert max(closed_at) < 5, f"slowest cut after {max(closed_at):.1f}s (timeout 2s)"
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:20] for a in answers}
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_trickling_client_is_cut(ingress: tuple[str, Proc]) -> None:
    url, _ = ingress
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        start = time.monotonic()
        cut = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n":
            try:
                s.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            time.sleep(0.25)
            if time.monotonic() - start > 6:
                break
        s.settimeout(3)
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        assert cut or data.startswith(b"HTTP/1.1 408") or data == b"", data
        assert time.monotonic() - start < 7


def test_connections_are_capped(ingress: tuple[str, Proc]) -> None:
    url, _ = ingress
    port = int(url.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(160)]
    try:
        time.sleep(0.3)
        response = httpx.get(f"{url}/healthz", timeout=5)
        assert response.status_code == 503
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    assert httpx.get(f"{url}/healthz").status_code == 200
