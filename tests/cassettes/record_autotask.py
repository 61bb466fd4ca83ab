"""Re-record the Autotask cassettes from atrelay's bundled Autotask sandbox (not from Autotask).

    .venv/bin/python -m tests.cassettes.record_autotask

A recording says where it came from: the sandbox's ephemeral ``http://127.0.0.1:<port>`` becomes
``http://sandbox.atrelay.invalid`` (a reserved name that can never resolve, so nobody mistakes it for
an Autotask zone host), and every cassette starts with a comment naming its origin. These cassettes
check the client against atrelay's own emulator; the client is checked against Autotask's documented
examples in ``tests/contract/test_autotask_documented.py``. The credential headers and the zone
lookup's ``user`` parameter are filtered, so the cassettes hold no credentials. Tests only ever
replay them (record_mode "none").
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import vcr

from connectors.autotask.client import AutotaskClient
from connectors.autotask.errors import AutotaskError
from sandboxes.autotask.app import create_app
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS

HERE = Path(__file__).parent / "autotask"
#: The sandbox's stable name in recordings (RFC 2606 ``.invalid``: never a real host).
SANDBOX_HOST = "http://sandbox.atrelay.invalid"
ZONE_URL = f"{SANDBOX_HOST}/atservicesrest/v1.0/zoneInformation"
BASE_URL = f"{SANDBOX_HOST}/atservicesrest/V1.0/"
ORIGIN = ("# Recorded from atrelay's bundled Autotask sandbox (sandboxes/autotask/app.py), NOT from\n"
          "# Autotask: http://sandbox.atrelay.invalid stands for the sandbox's local address. Re-record with\n"
          "# .venv/bin/python -m tests.cassettes.record_autotask (see tests/cassettes/README.md).\n")
FILTERED_HEADERS = [("ApiIntegrationCode", "FILTERED"), ("UserName", "FILTERED"), ("Secret", "FILTERED"),
                    ("host", None)]


def cassette_vcr(record_mode: str = "none", sandbox: str | None = None) -> vcr.VCR:
    def rewrite_request(request: Any) -> Any:
        if sandbox:
            request.uri = request.uri.replace(sandbox, SANDBOX_HOST)
        return request

    def rewrite_response(response: dict[str, Any]) -> dict[str, Any]:
        if sandbox:
            body = response["body"]["string"]
            response["body"]["string"] = body.replace(sandbox.encode(), SANDBOX_HOST.encode())
            for noise in ("server", "date"):
                response["headers"].pop(noise, None)
        return response

    return vcr.VCR(
        cassette_library_dir=str(HERE), record_mode=record_mode, match_on=["method", "uri", "body"],
        filter_headers=FILTERED_HEADERS, filter_query_parameters=[("user", "FILTERED")],
        before_record_request=rewrite_request, before_record_response=rewrite_response,
        decode_compressed_response=True,
    )


def client(zone_url: str, secret: str | None = None, **kw: Any) -> AutotaskClient:
    creds = SANDBOX_AUTOTASK_CREDENTIALS
    return AutotaskClient(username=creds["username"], secret=secret or creds["secret"],
                          integration_code=creds["integration_code"], zone_url=zone_url,
                          sleep=lambda _s: None, **kw)


def mark_origin(directory: Path, origin: str) -> None:
    """Start every cassette with the comment that names where it was recorded (YAML ignores it)."""
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        if not text.startswith(origin):
            path.write_text(origin + text)


def main() -> None:
    state = SandboxState()
    server = ThreadedServer(create_app(state)).start()
    url = server.url
    rec = cassette_vcr("all", sandbox=url)
    zone = f"{url}/atservicesrest/v1.0/zoneInformation"
    base = f"{url}/atservicesrest/V1.0/"
    try:
        with rec.use_cassette("happy_path.yaml"):
            c = client(zone)
            t = c.find_ticket_by_number("T20261126.0001")
            c.get_ticket(t.id)
            c.ticket_fields()
            c.ticket_note_fields()
            c.set_ticket_status(t.id, 29682844)
            c.add_ticket_note(t.id, title="Status set to Received Form Response (webform)",
                              description="atrelay changed the ticket status. [atrelay:event:1]", note_type=2, publish=1)
            c.find_ticket_notes(t.id, containing="[atrelay:event:1]")
            c.threshold_information()
        for name, call in {
            "not_found_by_id.yaml": lambda c: c.get_ticket(1),
            "not_found_by_number.yaml": lambda c: c.find_ticket_by_number("T19990101.0001"),
            "validation_500.yaml": lambda c: c.set_ticket_status(50001, 424242),
        }.items():
            with rec.use_cassette(name), contextlib.suppress(AutotaskError):
                call(client(zone, base_url=base, max_attempts=1))
        with rec.use_cassette("auth_401.yaml"), contextlib.suppress(AutotaskError):
            client(zone, secret="wrong", base_url=base).get_ticket(50001)
        scripted = {
            "thread_threshold.yaml": [{"status": 500, "errors": [
                "Thread Threshold Exceeded - The Autotask API thread threshold of 3 threads has been exceeded. "
                "(Itgenatr005)"]}],
            "rate_limited_retry_after.yaml": [{"status": 429, "retry_after": 7, "errors": ["Rate limit"]}],
            "rate_limited_no_retry_after.yaml": [{"status": 429, "errors": [
                "API request threshold exceeded: 10000 requests per 60 minutes for this database."]}],
            "lock_500.yaml": [{"status": 500, "errors": [
                "Transaction (Process ID 71) was deadlocked on lock resources with another process."]}],
            "outage_503.yaml": [{"status": 503, "text": "Service Unavailable"}],
        }
        for name, script in scripted.items():
            state.script = [dict(s) for s in script]
            with rec.use_cassette(name):
                # Two attempts: the failure, then the sandbox's normal answer (the retry path).
                client(zone, base_url=base, max_attempts=2).get_ticket(50001)
    finally:
        server.stop()
    mark_origin(HERE, ORIGIN)


if __name__ == "__main__":
    main()
