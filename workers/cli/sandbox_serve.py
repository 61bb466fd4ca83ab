"""`atrelay sandbox autotask|timezest`: serve an emulator whose state survives a restart.

The audit DB in var/ remembers tickets, notes and TimeZest request ids; a sandbox that started from
its seed data on every `atrelay run` would contradict it (and hand out ids atrelay already knows for
other records). So the state lives next to the audit DB: ``var/sandbox-autotask.json`` and
``var/sandbox-timezest.json``, loaded at start, saved shortly after each change and on shutdown.
``--fresh`` (or deleting the file together with var/atrelay.db) starts over from the seed data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.text import Text

__all__ = ["SANDBOX_STATE_FILES", "serve_sandbox"]

SANDBOX_STATE_FILES: dict[str, str] = {"autotask": "sandbox-autotask.json", "timezest": "sandbox-timezest.json"}


def serve_sandbox(kind: Literal["autotask", "timezest"], host: str, port: int, var_path: Path, *,
                  fresh: bool, console: Console, err: Console) -> None:
    """Load the saved state (unless ``fresh``), serve until a signal, save once more on the way out."""
    import uvicorn

    from sandboxes.common.state_file import PersistOnChange, StateFile

    def report(message: str) -> None:
        err.print(Text(f"warning: {message}", style="yellow"))  # paths and exception text are not markup

    state: Any
    app: Any
    close: Callable[[], None] = lambda: None  # noqa: E731 (a no-op default)
    if kind == "autotask":
        from sandboxes.autotask.app import create_app as autotask_app
        from sandboxes.autotask.state import SandboxState

        state = SandboxState()
        app, close = autotask_app(state), state.close
    else:
        from sandboxes.timezest.app import TimezestSandboxState
        from sandboxes.timezest.app import create_app as timezest_app

        state = TimezestSandboxState()
        app = timezest_app(state)
    store = StateFile(var_path / SANDBOX_STATE_FILES[kind], report)
    if not fresh and store.load_into(state.restore, state.reset):
        console.print(Text(f"restored sandbox state from {store.path}"))

    def save() -> None:
        store.save(state.dump())

    save()  # the file exists from the start (and `--fresh` really replaces the old one)
    try:
        # lifespan "on" reaches only PersistOnChange, which saves at shutdown (see there why not below).
        uvicorn.run(PersistOnChange(app, save, report), host=host, port=port, log_level="warning", lifespan="on")
    finally:
        close()
