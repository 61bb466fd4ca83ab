"""The systemd recipe works as written (issue 22): infra/systemd/install.sh runs in a throwaway root (a temp
folder as its --prefix), then ingress, worker and beat start with the installed units' own command lines,
as the `atrelay` user with the unit's environment (as systemd would run them), and relay a sample event.
The guide's admin commands go through the installed `atrelay` wrapper."""

from __future__ import annotations

import configparser
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer, free_port
from sandboxes.timezest.app import TimezestSandboxState
from tests.conftest import autotask_env
from tests.stacks import _own_redis_db, _redis_in_use
from tests.support import AUTOTASK_HOOK_SECRET, MC_SECRET, ROOT, WEBFORM_SECRET, fresh_pg_database, wait_for
from workers.settings import SANDBOX_TIMEZEST_API_KEY

USER = "atrelay"
UNITS = ("atrelay-ingress.service", "atrelay-worker@.service", "atrelay-beat.service")


def _need_root() -> None:
    if os.geteuid() == 0 and shutil.which("runuser") and shutil.which("useradd"):
        return
    message = "the systemd recipe test needs root, runuser and useradd (it creates the atrelay user)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true)")
    pytest.skip(message)


@pytest.fixture
def prefix() -> Iterator[Path]:
    """A throwaway root the atrelay user can walk into (pytest's own temp folders are 0700 root)."""
    _need_root()
    existed = subprocess.run(["id", "-u", USER], capture_output=True, check=False).returncode == 0
    root = Path(tempfile.mkdtemp(prefix="atrelay-root-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    if not existed:  # leave the machine as it was
        subprocess.run(["userdel", USER], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


def _readable_by_all(path: Path) -> bool:
    """Every folder on the way to ``path`` is searchable by others, and the file is theirs to run."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o005)


def _service_venv(prefix: Path) -> tuple[Path, bool]:
    """The venv the services run: this checkout's, when any user can run it; else one made with the system's
    Python of the same version over the checkout's installed packages: what `make install
    PYTHON=/usr/bin/python3.X` gives, without installing everything again. (scripts/check-install-as-shipped
    proves the plain pip install.) Returns (venv, whether it is this checkout's own)."""
    ours = ROOT / ".venv"
    if _readable_by_all(ours / "bin" / "python"):
        return ours, True
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None or not _readable_by_all(Path(system)):
        pytest.skip(f"no {version} every user can run, to make a venv the atrelay user can start")
    venv = prefix / "opt" / "venv"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    packages = ours / "lib" / version / "site-packages"
    (venv / "lib" / version / "site-packages" / "atrelay-checkout.pth").write_text(
        f"import site; site.addsitedir({str(packages)!r})\n")
    missing = _missing_under(system)
    if missing:  # dependencies only that Python's version needs (redis wants async-timeout below 3.11.3)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                        "-c", str(ROOT / "constraints.txt"), "--target",
                        str(venv / "lib" / version / "site-packages"), *missing], check=True, timeout=300)
    script = venv / "bin" / "atrelay"
    script.write_text(f"#!{venv}/bin/python\nimport sys\nfrom workers.cli.main import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return venv, False


_MARKER_ENV = """import json, os, platform, sys
print(json.dumps({"implementation_name": sys.implementation.name, "os_name": os.name, "sys_platform": sys.platform,
                  "implementation_version": platform.python_version(), "platform_machine": platform.machine(),
                  "platform_python_implementation": platform.python_implementation(),
                  "platform_release": platform.release(), "platform_system": platform.system(),
                  "platform_version": platform.version(), "python_full_version": platform.python_version(),
                  "python_version": ".".join(platform.python_version_tuple()[:2]), "extra": ""}))"""


def _missing_under(python: str) -> list[str]:
    """Requirements of the installed distributions that ``python``'s markers call for and nobody installed."""
    from importlib.metadata import distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = json.loads(subprocess.run([python, "-c", _MARKER_ENV], capture_output=True, text=True, check=True).stdout)
    dists = list(distributions())
    installed = {canonicalize_name(d.metadata["Name"]) for d in dists}
    wanted = {Requirement(raw) for d in dists for raw in d.requires or []}
    return sorted({r.name for r in wanted if r.marker is not None and "extra" not in str(r.marker)
                   and r.marker.evaluate(env) and canonicalize_name(r.name) not in installed})


def _service(unit: Path) -> dict[str, list[str]]:
    """A unit's [Service] settings, each key with all its values (Environment= may repeat)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    out: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _argv(command: str) -> list[str]:
    """An Exec line with the template's specifiers as systemd expands them for atrelay-worker@1."""
    return command.replace("%i", "1").replace("%H", socket.gethostname()).split()


def _environment(service: dict[str, list[str]]) -> dict[str, str]:
    """The process environment systemd gives: Environment=, then EnvironmentFile= (which wins)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for assignment in service.get("Environment", []):
        key, value = assignment.split("=", 1)
        env[key] = value
    for path in service.get("EnvironmentFile", []):
        env.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    return env


def _as_service(service: dict[str, list[str]], command: str, log: Path) -> subprocess.Popen[bytes]:
    argv = ["runuser", "-u", service["User"][0], "--", *_argv(command)]
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=_environment(service), cwd=service["WorkingDirectory"][0], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def test_install_script_then_the_units_relay_an_event(
        prefix: Path, autotask: tuple[str, SandboxState], timezest_server: tuple[ThreadedServer, TimezestSandboxState],
        redis_url: str, pg_database: str) -> None:
    at_url, sandbox = autotask
    script = str(ROOT / "infra" / "systemd" / "install.sh")
    venv, own = _service_venv(prefix)
    if not own:
        # This checkout's venv runs a Python the atrelay user cannot (root's pyenv): the script says so.
        refused = subprocess.run([script, "--prefix", str(prefix)], capture_output=True, text=True, timeout=120,
                                 check=False)
        assert refused.returncode == 1 and "cannot run" in refused.stderr and "PYTHON=" in refused.stderr, (
            refused.stdout + refused.stderr)
    install = subprocess.run([script, "--prefix", str(prefix), "--venv", str(venv)], capture_output=True, text=True,
                             timeout=120, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    again = subprocess.run([script, "--prefix", str(prefix), "--venv", str(venv)], capture_output=True, text=True,
                           timeout=120, check=False)
    assert again.returncode == 0 and "exists; kept" in again.stdout, again.stdout + again.stderr  # run it any time
    etc, state = prefix / "etc" / "atrelay", prefix / "var" / "lib" / "atrelay"
    user = pwd.getpwnam(USER)
    # What the guide promises: a user whose home is the state folder, owned by it; the settings 0600 root.
    assert state.is_dir() and state.stat().st_uid == user.pw_uid and stat.S_IMODE(state.stat().st_mode) == 0o750
    env_file = etc / "env"
    assert env_file.stat().st_uid == 0 and stat.S_IMODE(env_file.stat().st_mode) == 0o600
    units = {name: _service(prefix / "etc" / "systemd" / "system" / name) for name in UNITS}
    for service in units.values():
        assert service["User"] == [USER] and service["WorkingDirectory"] == [str(state)]
        assert service["EnvironmentFile"] == [str(env_file)] and f"ATRELAY_VAR_DIR={state}" in service["Environment"]
        assert not any(str(ROOT) in v for v in service["Environment"])  # state outside the checkout
    # The operator edits the settings (here: the test's PostgreSQL, Redis, sandboxes and a free port).
    redis_db_url, held = _own_redis_db(redis_url)
    port = free_port()
    try:
        with fresh_pg_database("atrelay_systemd") as db:
            settings = {**autotask_env(at_url), "ATRELAY_DATABASE_URL": db, "ATRELAY_BROKER_URL": redis_db_url,
                        "ATRELAY_TIMEZEST_API_KEY": SANDBOX_TIMEZEST_API_KEY,
                        "ATRELAY_TIMEZEST_BASE_URL": f"{timezest_server[0].url}/v1",
                        "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET, "ATRELAY_MC_WEBHOOK_SECRET": MC_SECRET,
                        "ATRELAY_AUTOTASK_WEBHOOK_SECRET": AUTOTASK_HOOK_SECRET, "ATRELAY_INGRESS_PORT": str(port)}
            env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in settings.items()))
            _run_the_units(prefix, units, port, sandbox)
    finally:
        _redis_in_use.discard(held)


def _run_the_units(prefix: Path, units: dict[str, dict[str, list[str]]], port: int, sandbox: SandboxState) -> None:
    ingress, worker, beat = (units[name] for name in UNITS)
    logs = prefix / "logs"
    logs.mkdir()
    (pre,) = ingress["ExecStartPre"]
    migrated = subprocess.run(["runuser", "-u", USER, "--", *_argv(pre)], env=_environment(ingress),
                              cwd=ingress["WorkingDirectory"][0], capture_output=True, text=True, timeout=120,
                              check=False)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    procs = {name: _as_service(service, service["ExecStart"][0], logs / f"{name}.log")
             for name, service in (("worker", worker), ("beat", beat), ("ingress", ingress))}
    admin = prefix / "usr" / "local" / "bin" / "atrelay"  # the guide's `sudo atrelay ...`

    def log(name: str) -> str:
        return (logs / f"{name}.log").read_text(errors="replace")

    def alive(name: str, needle: str) -> bool:
        if procs[name].poll() is not None:
            raise AssertionError(f"{name} exited {procs[name].returncode}:\n{log(name)[-3000:]}")
        return needle in log(name)

    try:
        wait_for(lambda: alive("worker", " ready."), timeout=90, what="the worker unit")
        wait_for(lambda: alive("beat", "beat: Starting"), timeout=60, what="the beat unit")

        def up() -> bool:
            alive("ingress", "")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=60, what="the ingress unit on ATRELAY_INGRESS_PORT")
        for name, proc in procs.items():  # each runs as the atrelay user, not root
            assert pwd.getpwuid(Path(f"/proc/{_child(proc.pid)}").stat().st_uid).pw_name == USER, name
        sent = subprocess.run([str(admin), "send", str(ROOT / "samples" / "webform-new-user.json"), "--url",
                               f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0 and "accepted" in sent.stdout, sent.stdout + sent.stderr
        wait_for(lambda: sandbox.tickets[50001]["status"] == 29682844, timeout=60,
                 what=f"the event relayed to the sandbox\n{log('worker')[-3000:]}")
        # The guide's next steps, through the same wrapper: webhooks, then a clean bill of health.
        hooks = subprocess.run([str(admin), "autotask", "webhooks", "install", "--url", f"http://127.0.0.1:{port}"],
                               capture_output=True, text=True, timeout=60, check=False)
        assert hooks.returncode == 0, hooks.stdout + hooks.stderr
        status = subprocess.run([str(admin), "autotask", "webhooks", "status"], capture_output=True, text=True,
                                timeout=60, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        doctor = subprocess.run([str(admin), "doctor"], capture_output=True, text=True, timeout=120, check=False)
        assert doctor.returncode == 0 and "0 problem(s)" in doctor.stdout, doctor.stdout + doctor.stderr
        # Beat keeps its schedule in the state folder, as the atrelay user (the checkout is root's, read-only to it).
        state = prefix / "var" / "lib" / "atrelay"
        schedule = list(state.glob("celerybeat-schedule*"))
        assert schedule and all(p.stat().st_uid == pwd.getpwnam(USER).pw_uid for p in schedule), schedule
        assert not (state / "atrelay.db").exists()  # the audit database is PostgreSQL, as configured
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _child(pid: int) -> int:
    """runuser's child: the atrelay process itself (runuser stays as its parent)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid
