"""`/docs`: the API reference as plain server-rendered HTML, with no script and nothing from a CDN.

FastAPI's Swagger UI page loads its JavaScript and CSS from a CDN. On the ingress that is the
dashboard's origin, so a compromised or hijacked CDN file would run with a signed-in admin's
session (and see the CSRF token). The reference needs no interactivity: each operation, its
parameters, request body schema and answers, escaped, under a CSP that forbids scripts and any
outside resource. The machine-readable schema stays at `/openapi.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["CSP", "docs_html", "make_docs_router"]

#: Nothing but this page's own inline style: no scripts, images, fonts, frames or outside fetches.
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
_STYLE = ("body{font:14px/1.45 system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
          "h2{font-size:1.05em;margin-top:2em;border-top:1px solid #ccc;padding-top:1em}"
          "code,pre{background:#f4f4f4;padding:.1em .3em}pre{padding:.6em;overflow-x:auto;font-size:12px}"
          "td,th{text-align:left;padding:.15em .8em .15em 0;vertical-align:top}")


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    out = [f"<h2><code>{escape(method.upper())} {escape(path)}</code></h2>",
           f"<p><strong>{escape(op.get('summary', ''))}</strong></p>"]
    if op.get("description"):
        out.append(f"<p>{escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>")
        out += [f"<tr><td><code>{escape(p.get('name', ''))}</code></td><td>{escape(p.get('in', ''))}</td>"
                f"<td>{'yes' if p.get('required') else 'no'}</td><td>{escape(p.get('description', ''))}</td></tr>"
                for p in params]
        out.append("</table>")
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        schema = json.dumps(content.get("schema", {}), indent=2, sort_keys=True)
        out.append(f"<p>Request body <code>{escape(media)}</code>:</p><pre>{escape(schema)}</pre>")
    answers = op.get("responses", {})
    if answers:
        out.append("<table><tr><th>answer</th><th>meaning</th></tr>")
        out += [f"<tr><td><code>{escape(code)}</code></td><td>{escape(r.get('description', ''))}</td></tr>"
                for code, r in answers.items()]
        out.append("</table>")
    return out


def docs_html(schema: dict[str, Any]) -> str:
    info = schema.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>",
             "<p>Machine-readable schema: <a href='/openapi.json'>/openapi.json</a>.</p>"]
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            parts += _operation(path, method, op)
    parts.append("</body></html>")
    return "\n".join(parts)


def make_docs_router(openapi: Callable[[], dict[str, Any]]) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_html(openapi()), headers={"Content-Security-Policy": CSP,
                                                          "X-Content-Type-Options": "nosniff"})

    return router
