"""The generated secrets in var/dev-secrets.json are created once, whoever asks first.

The ingress, the worker and two requests at once may all ask for a secret that does not exist yet. A
clean clone's suite saw it: two bogus callouts arriving together at a fresh ingress, one answered 500
(two writers of one temporary file). Here threads and processes ask at once, many times over.
"""

from __future__ import annotations

import json
import multiprocessing
import stat
import threading
from pathlib import Path

from workers.settings import Settings, webhook_secrets

SOURCES = ("autotask", "webform", "mission-control")


def _ask(var: str, out: list[str] | None = None) -> list[str]:
    settings = Settings(_env_file=None, var_dir=Path(var))  # type: ignore[call-arg]
    got = [webhook_secrets(settings, source)[0][0] for source in SOURCES]
    if out is not None:
        out.extend(got)
    return got


def test_threads_and_processes_asking_at_once_get_one_secret_each(tmp_path: Path) -> None:
    for round_ in range(10):
        var = tmp_path / f"var{round_}"
        seen: list[str] = []
        errors: list[BaseException] = []

        def thread(var: Path = var, seen: list[str] = seen, errors: list[BaseException] = errors) -> None:
            try:
                _ask(str(var), seen)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=thread) for _ in range(6)]
        with multiprocessing.get_context("fork").Pool(3) as pool:
            pending = pool.map_async(_ask, [str(var)] * 6)
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for got in pending.get(timeout=60):
                seen.extend(got)
        assert errors == []
        stored = json.loads((var / "dev-secrets.json").read_text())
        assert set(seen) == {stored[s] for s in SOURCES}  # everyone got what the file keeps
        assert len(set(seen)) == len(SOURCES)
        assert stat.S_IMODE((var / "dev-secrets.json").stat().st_mode) == 0o600
