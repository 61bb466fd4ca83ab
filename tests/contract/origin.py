"""The check every cassette folder passes: a recording names where it really came from."""

from __future__ import annotations

from pathlib import Path

__all__ = ["assert_recorded_from_sandbox"]


def assert_recorded_from_sandbox(folder: str | Path, *, origin: str, sandbox_host: str, real_host: str) -> None:
    """Each cassette starts with ``origin``, talks only to ``sandbox_host`` and never names ``real_host``."""
    paths = sorted(Path(folder).glob("*.yaml"))
    assert paths, f"no cassettes in {folder}"
    for path in paths:
        text = path.read_text()
        assert text.startswith(origin), f"{path.name} does not say where it was recorded"
        assert real_host not in text, f"{path.name} names a host ({real_host}) it never talked to"
        uris = [line.split("uri: ", 1)[1] for line in text.splitlines() if line.strip().startswith("uri: ")]
        assert uris and all(u.startswith(sandbox_host + "/") for u in uris), path.name
