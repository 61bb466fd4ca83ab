"""`/docs` is served from atrelay itself: no CDN script on the dashboard's origin (issue 13, item 8)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from workers.http.ingress import create_app
from workers.settings import load_settings


def test_docs_load_nothing_from_elsewhere(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None)) as c:
        page = c.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    # The reference is there: every webhook, its signature headers and its answers.
    for text in ("POST /webhooks/webform", "POST /webhooks/autotask/tickets", "webhook-signature", "413"):
        assert text in html
    # Nothing is fetched from anywhere: no script at all, no absolute URL in src/href, and a CSP that
    # would block one if it were ever added.
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE)
    assert "cdn" not in html.lower()
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
