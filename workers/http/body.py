"""Reading a webhook's body within its limit, and the refusal every ingress route answers with."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

__all__ = ["Refused", "check_declared_size", "declared_size", "read_body"]


class Refused(Exception):
    """A request answered with a 4xx and recorded in the rejections table with ``reason``."""

    def __init__(self, status: int, reason: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.extra = status, reason, extra or {}


def declared_size(request: Request) -> int:
    """The Content-Length a client claimed, for the rejection record (0 when absent or not a number)."""
    value = request.headers.get("content-length")
    return int(value) if value and value.isascii() and value.isdigit() and len(value) <= 18 else 0


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse a Content-Length over ``limit`` (or not a number) before a byte of the body is read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not (declared.isascii() and declared.isdigit()) or int(declared) > limit):
        raise Refused(413, f"body larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it passes ``limit`` bytes (chunked bodies carry no Content-Length)."""
    check_declared_size(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
