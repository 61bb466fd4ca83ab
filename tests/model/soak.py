"""`make soak`: the model test of tests/model at length, on SQLite and on PostgreSQL at once.

    python -m tests.model.soak [--examples 10000] [--steps 25]

Each database gets its own pytest process (fresh random examples, not the fixed set `make test`
runs); the report gives, per database, the examples run, the steps taken, the distinct interleavings
(sequences of actions) tried and the violations found, and the command exits non-zero on any
violation (Hypothesis prints the shrunk example: keep it in tests/model/test_regressions.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support import fresh_pg_database, require_service

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="examples per database (default 10000)")
    parser.add_argument("--steps", type=int, default=25, help="most steps per example (default 25)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], help="one database only")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="atrelay-soak-"))
    backends = [args.only] if args.only else ["sqlite", "postgresql"]
    procs: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    with _databases(backends) as urls:
        for name in backends:
            stats, log = folder / f"{name}.json", folder / f"{name}.log"
            env = {**os.environ, "ATRELAY_MODEL_RANDOM": "1", "ATRELAY_MODEL_EXAMPLES": str(args.examples),
                   "ATRELAY_MODEL_STEPS": str(args.steps), "ATRELAY_MODEL_STATS": str(stats),
                   "ATRELAY_MODEL_TIMEOUT": str(24 * 3600)}
            if urls.get(name):
                env["ATRELAY_MODEL_DB"] = urls[name]
            print(f"soak: {name}: {args.examples} examples (log {log})", flush=True)
            procs[name] = (subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:logging",
                 "tests/model/test_model.py"], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT),
                stats, log)
        _progress(args.examples, {name: stats for name, (_proc, stats, _log) in procs.items()},
                  [proc for proc, _stats, _log in procs.values()])
        failed = False
        print(f"{'database':<12}{'examples':>10}{'steps':>10}{'interleavings':>15}{'violations':>12}{'minutes':>9}")
        for name, (proc, stats, log) in procs.items():
            code = proc.wait()
            data = json.loads(stats.read_text()) if stats.exists() else {}
            print(f"{name:<12}{data.get('examples', 0):>10}{data.get('steps', 0):>10}"
                  f"{data.get('interleavings', 0):>15}{data.get('violations', '?'):>12}"
                  f"{data.get('seconds', 0) / 60:>9.1f}")
            if code != 0:
                failed = True
                print(f"soak: {name} failed (exit {code}); the shrunk example is in {log}", file=sys.stderr)
    return 1 if failed else 0


def _progress(goal: int, stats: dict[str, Path], procs: list[subprocess.Popen[bytes]],
              every: float = 60.0) -> None:
    """A line per database every ``every`` seconds until the runs end: examples so far, violations, an ETA."""
    while any(proc.poll() is None for proc in procs):
        deadline = time.monotonic() + every
        while time.monotonic() < deadline and any(proc.poll() is None for proc in procs):
            time.sleep(1)
        parts = []
        for name, path in stats.items():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                parts.append(f"{name}: starting")
                continue
            done, seconds = data.get("examples", 0), data.get("seconds", 0.0)
            eta = f", about {(goal - done) * seconds / done / 60:.0f} min left" if 0 < done < goal else ""
            parts.append(f"{name}: {done}/{goal} examples, {data.get('violations', 0)} violations{eta}")
        print("soak: " + "; ".join(parts), flush=True)


class _databases:
    """A fresh PostgreSQL database for the PostgreSQL run (dropped afterwards); SQLite needs none."""

    def __init__(self, backends: list[str]) -> None:
        self.backends, self._pg = backends, None

    def __enter__(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        if "postgresql" in self.backends:
            require_service("PostgreSQL", "127.0.0.1", 5432)
            self._pg = fresh_pg_database("atrelay_soak")
            urls["postgresql"] = self._pg.__enter__()
        return urls

    def __exit__(self, *exc: object) -> None:
        if self._pg is not None:
            self._pg.__exit__(None, None, None)


if __name__ == "__main__":
    raise SystemExit(main())
