"""Re-record the TimeZest cassettes from atrelay's bundled TimeZest sandbox (not from TimeZest).

    .venv/bin/python -m tests.cassettes.record_timezest

A recording says where it came from: the sandbox's ``http://127.0.0.1:<port>`` becomes
``http://sandbox.atrelay.invalid`` (a reserved name that never resolves) and every cassette starts
with a comment naming its origin. The client is checked against TimeZest's documented examples in
``tests/contract/test_timezest_documented.py``. The ``Authorization`` header is filtered, so the
cassettes hold no key.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import vcr

from connectors.timezest.client import TimezestClient, TimezestError
from sandboxes.common.server import ThreadedServer
from sandboxes.timezest.app import TimezestSandboxState, create_app
from tests.cassettes.record_autotask import SANDBOX_HOST, mark_origin
from workers.settings import SANDBOX_TIMEZEST_API_KEY

HERE = Path(__file__).parent / "timezest"
HOST = SANDBOX_HOST
BASE_URL = f"{HOST}/v1"
ORIGIN = ("# Recorded from atrelay's bundled TimeZest sandbox (sandboxes/timezest/app.py), NOT from\n"
          "# TimeZest: http://sandbox.atrelay.invalid stands for the sandbox's local address. Re-record with\n"
          "# .venv/bin/python -m tests.cassettes.record_timezest (see tests/cassettes/README.md).\n")


def cassette_vcr(record_mode: str = "none", sandbox: str | None = None) -> vcr.VCR:
    def rewrite_request(request: Any) -> Any:
        if sandbox:
            request.uri = request.uri.replace(sandbox, HOST)
        return request

    def rewrite_response(response: dict[str, Any]) -> dict[str, Any]:
        if sandbox:
            response["body"]["string"] = response["body"]["string"].replace(sandbox.encode(), HOST.encode())
            for noise in ("server", "date"):
                response["headers"].pop(noise, None)
        return response

    return vcr.VCR(cassette_library_dir=str(HERE), record_mode=record_mode, match_on=["method", "uri"],
                   filter_headers=[("Authorization", "FILTERED"), ("host", None)],
                   before_record_request=rewrite_request, before_record_response=rewrite_response)


def main() -> None:
    state = TimezestSandboxState()
    server = ThreadedServer(create_app(state)).start()
    rec = cassette_vcr("all", sandbox=server.url)

    def client(key: str = SANDBOX_TIMEZEST_API_KEY, attempts: int = 1) -> TimezestClient:
        return TimezestClient(api_key=key, base_url=f"{server.url}/v1", max_attempts=attempts, sleep=lambda _s: None)

    try:
        ids = [state.create({"ticket_id": 50001 + i % 6})["id"] for i in range(45)]
        state.clock = 1795690000  # fixed times, so re-recording changes only what changed
        for i, rid in enumerate(ids):
            state.requests[rid]["created_at"] = state.requests[rid]["updated_at"] = 1795690000 + i
        state.transition(ids[0], "sent")
        state.transition(ids[1], "sent")
        state.transition(ids[1], "scheduled")
        state.requests[ids[1]]["associated_entities"].append({"type": "autotask/company", "id": 29683500})
        with rec.use_cassette("list_paged.yaml"):
            list(client().scheduling_requests())
        with rec.use_cassette("get_one.yaml"):
            client().scheduling_request(ids[1])
        with rec.use_cassette("unauthorized.yaml"), contextlib.suppress(TimezestError):
            list(client(key="wrong").scheduling_requests())
        state.script = [{"status": 429, "retry_after": 5, "error": "Too Many Requests"}]
        with rec.use_cassette("rate_limited.yaml"):
            client(attempts=2).scheduling_request(ids[0])
    finally:
        server.stop()
    mark_origin(HERE, ORIGIN)


if __name__ == "__main__":
    main()
