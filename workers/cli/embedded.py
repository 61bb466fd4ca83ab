"""What `atrelay run` started, written to ``var/embedded.json`` so the other commands can use it.

With no credentials, `atrelay run` starts the bundled Autotask and TimeZest sandboxes on ports of
its choosing and hands their endpoints to its own children only. `atrelay doctor`, `atrelay rules`
and the other commands, run from another terminal, would then see "not configured" and fail on a
fresh `make run`. The supervisor writes the sandbox settings it used here (0600: it holds the
sandbox credentials) and removes the file when it stops; a command with no Autotask (or TimeZest)
settings of its own uses them while that `atrelay run` is alive, and says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from workers.settings import Settings

__all__ = ["EMBEDDED_FILE", "EmbeddedUse", "forget_embedded", "use_embedded", "write_embedded"]

EMBEDDED_FILE = "embedded.json"
_AUTOTASK = ("ATRELAY_AUTOTASK_USERNAME", "ATRELAY_AUTOTASK_SECRET", "ATRELAY_AUTOTASK_INTEGRATION_CODE",
             "ATRELAY_AUTOTASK_ZONE_URL")
_TIMEZEST = ("ATRELAY_TIMEZEST_API_KEY", "ATRELAY_TIMEZEST_BASE_URL")


@dataclass(frozen=True)
class EmbeddedUse:
    settings: Settings
    note: str | None  # what was taken from the running `atrelay run`, for the user; None = nothing


def write_embedded(var_path: Path, env: dict[str, str], *, autotask: bool, timezest: bool) -> Path:
    """Record the sandbox settings this `atrelay run` (this pid) gave its children."""
    names = (_AUTOTASK if autotask else ()) + (_TIMEZEST if timezest else ())
    data = {"pid": os.getpid(), "env": {name: env[name] for name in names if name in env}}
    var_path.mkdir(parents=True, exist_ok=True)
    path = var_path / EMBEDDED_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    tmp.replace(path)
    return path


def forget_embedded(var_path: Path) -> None:
    path = var_path / EMBEDDED_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def use_embedded(settings: Settings) -> EmbeddedUse:
    """``settings`` completed with the running `atrelay run`'s sandboxes where it has none of its own.

    Configured values always win: only a command with no Autotask credentials at all (or no TimeZest
    key) takes the sandbox's, and only while the `atrelay run` that wrote them is alive.
    """
    path = settings.var_path / EMBEDDED_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return EmbeddedUse(settings, None)
    if not isinstance(data, dict) or not _alive(data.get("pid")) or not isinstance(data.get("env"), dict):
        return EmbeddedUse(settings, None)
    env: dict[str, str] = {str(k): str(v) for k, v in data["env"].items()}
    update: dict[str, object] = {}
    used = []
    no_autotask = not (settings.autotask_username or settings.autotask_secret or settings.autotask_integration_code)
    if no_autotask and all(name in env for name in _AUTOTASK):
        update |= {"autotask_username": env[_AUTOTASK[0]], "autotask_secret": SecretStr(env[_AUTOTASK[1]]),
                   "autotask_integration_code": SecretStr(env[_AUTOTASK[2]]), "autotask_zone_url": env[_AUTOTASK[3]],
                   "autotask_base_url": None}
        used.append(f"Autotask sandbox ({env[_AUTOTASK[3]].split('/atservicesrest')[0]})")
    if settings.timezest_api_key is None and all(name in env for name in _TIMEZEST):
        update |= {"timezest_api_key": SecretStr(env[_TIMEZEST[0]]), "timezest_base_url": env[_TIMEZEST[1]]}
        used.append(f"TimeZest sandbox ({env[_TIMEZEST[1]]})")
    if not update:
        return EmbeddedUse(settings, None)
    note = (f"using the {' and the '.join(used)} started by `atrelay run` (pid {data['pid']}, from {path}); "
            "set ATRELAY_AUTOTASK_* / ATRELAY_TIMEZEST_API_KEY to check a real tenant instead")
    return EmbeddedUse(settings.model_copy(update=update), note)
