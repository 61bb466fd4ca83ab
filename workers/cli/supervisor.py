"""`atrelay run`: the embedded mode, every process in one command, with sandboxes when unconfigured."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from workers.cli.embedded import forget_embedded, write_embedded
from workers.cli.mode import mode_line
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS, SANDBOX_TIMEZEST_API_KEY, Settings, dev_admin_token

__all__ = ["Supervisor"]


@dataclass
class Supervisor:
    settings: Settings
    console: Console
    host: str = "127.0.0.1"
    port: int = 8000
    autotask_sandbox_port: int = 8101
    timezest_sandbox_port: int = 8102
    verbose: bool = False  # Celery's banner and info lines in the terminal too
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def _spawn(self, name: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "workers.cli", *args]
        self.procs[name] = subprocess.Popen(cmd, env=self.env)  # noqa: S603 (our own module)

    def _wait_http(self, name: str, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} while starting")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (our own localhost URL)
                    if response.status < 500:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer at {url} within {timeout:.0f}s")

    def _check_ports(self) -> None:
        """Name a taken port (and the flag that moves it) before anything starts or any banner shows."""
        s = self.settings
        wanted = [(self.host, self.port, "--port")]
        if not s.autotask_configured:
            wanted.append(("127.0.0.1", self.autotask_sandbox_port, "--autotask-sandbox-port"))
        if s.timezest_api_key is None:
            wanted.append(("127.0.0.1", self.timezest_sandbox_port, "--timezest-sandbox-port"))
        for host, port, flag in wanted:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
                # As the servers bind (uvicorn sets SO_REUSEADDR): a port whose last connections are only in
                # TCP's wait after close (a restart right after Ctrl-C) is free; only a listener holds it.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    raise RuntimeError(f"port {port} on {host} is not free ({exc.strerror}); is another atrelay "
                                       f"running? Choose another with {flag} N") from None

    def _child(self, *args: str) -> subprocess.Popen[str]:
        """A short-lived `atrelay` command, started now and read with :meth:`_finish` (so others overlap it)."""
        return subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=dict(self.env),  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def _finish(child: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
        out, err = child.communicate()
        return subprocess.CompletedProcess(child.args, child.returncode, out, err)

    def _check_rules(self, child: subprocess.Popen[str]) -> None:
        """A rule naming a status the tenant lacks stops start-up here, before the banner (not in the worker)."""
        done = self._finish(child)
        if done.returncode != 0:
            problems = [line.removeprefix("problem").strip() for line in (done.stdout + done.stderr).splitlines()
                        if "missing in the tenant" in line or line.startswith(("rules:", "error:"))]
            if problems:
                raise RuntimeError("the rules cannot run against this tenant: " + "; ".join(problems))

    def _sandboxes_ready(self) -> list[str]:
        """Wait for the sandboxes started for what is not configured; point the children's settings at them."""
        s = self.settings
        lines: list[str] = []
        if not s.autotask_configured:
            url = f"http://127.0.0.1:{self.autotask_sandbox_port}"
            self._wait_http("autotask-sandbox", f"{url}/_sandbox/calls")
            self.env.update({
                "ATRELAY_AUTOTASK_USERNAME": SANDBOX_AUTOTASK_CREDENTIALS["username"],
                "ATRELAY_AUTOTASK_SECRET": SANDBOX_AUTOTASK_CREDENTIALS["secret"],
                "ATRELAY_AUTOTASK_INTEGRATION_CODE": SANDBOX_AUTOTASK_CREDENTIALS["integration_code"],
                "ATRELAY_AUTOTASK_ZONE_URL": f"{url}/atservicesrest/v1.0/zoneInformation",
            })
            self.env.pop("ATRELAY_AUTOTASK_BASE_URL", None)
            lines.append(f"[yellow]No Autotask credentials set: using the bundled Autotask sandbox at {url}[/]")
            lines.append(f"  sandbox tickets: {url}/_sandbox/tickets/50001 (T20261126.0001 ... .0006)")
            # Not secrets (they open only the emulator): for a script or a client of one's own against it.
            lines.append(f"  its credentials: username {SANDBOX_AUTOTASK_CREDENTIALS['username']}  secret "
                         f"{SANDBOX_AUTOTASK_CREDENTIALS['secret']}  integration code "
                         f"{SANDBOX_AUTOTASK_CREDENTIALS['integration_code']}")
        else:
            lines.append(f"Autotask: {s.autotask_base_url or 'zone lookup for ' + str(s.autotask_username)}")
        if s.timezest_api_key is None:
            url = f"http://127.0.0.1:{self.timezest_sandbox_port}"
            self._wait_http("timezest-sandbox", f"{url}/_sandbox/calls")
            self.env.update({"ATRELAY_TIMEZEST_API_KEY": SANDBOX_TIMEZEST_API_KEY,
                             "ATRELAY_TIMEZEST_BASE_URL": f"{url}/v1"})
            lines.append(f"[yellow]No TimeZest API key set: polling the bundled TimeZest sandbox at {url}[/]")
            lines.append(f"  its API key: {SANDBOX_TIMEZEST_API_KEY}")
        else:
            lines.append(f"TimeZest: {s.timezest_base_url}")
        if not s.autotask_configured or s.timezest_api_key is None:
            # For `atrelay doctor`/`rules`/... in another terminal (workers/cli/embedded.py); removed on stop.
            where = write_embedded(s.var_path, self.env, autotask=not s.autotask_configured,
                                   timezest=s.timezest_api_key is None)
            lines.append(f"  (sandbox settings for other atrelay commands: {where})")
        return lines

    def start(self) -> list[str]:
        """Start everything; return lines describing what runs where (raise before the banner on a problem)."""
        lines: list[str] = []
        s = self.settings
        self.env["ATRELAY_VAR_DIR"] = str(s.var_path)
        self._check_ports()
        # What does not depend on another step starts at once and overlaps (each is a Python start-up of a
        # second or more, several on a loaded machine): the sandboxes, the migrations, later the rules check
        # beside the worker's and the ingress's start.
        if not s.autotask_configured:
            self._spawn("autotask-sandbox", "sandbox", "autotask", "--port", str(self.autotask_sandbox_port))
        if s.timezest_api_key is None:
            self._spawn("timezest-sandbox", "sandbox", "timezest", "--port", str(self.timezest_sandbox_port))
        # Migrations in a child process: the long-lived supervisor stays small (no SQLAlchemy/Alembic).
        migrate = self._finish(self._child("migrate"))
        if migrate.returncode != 0:
            # The child printed one line saying why (e.g. the database is unreachable): pass it on.
            why = (migrate.stderr or migrate.stdout).strip().splitlines()[-1:] or [f"exit {migrate.returncode}"]
            raise RuntimeError(f"`atrelay migrate` failed: {why[0].removeprefix('error: ')}")
        lines += self._sandboxes_ready()
        rules = self._child("rules")
        base = f"http://{self.host}:{self.port}"
        if s.admin_token is None:
            self.env["ATRELAY_ADMIN_TOKEN"] = dev_admin_token(s)
            # The exact value that signs in, on a line of its own so no wrapping splits it.
            token_lines = [f"Dashboard: {base}/ops", "  sign in with this token (kept in var/dev-secrets.json):",
                           f"  {self.env['ATRELAY_ADMIN_TOKEN']}"]
        else:
            token_lines = [f"Dashboard: {base}/ops  (sign in with ATRELAY_ADMIN_TOKEN)"]
        # Beat runs inside the worker process here (one process fewer); `atrelay beat` is for deployments.
        self._spawn("worker", "worker", "--beat", *(() if self.verbose else ("--quiet",)))
        self._spawn("ingress", "ingress", "--host", self.host, "--port", str(self.port))
        self._check_rules(rules)  # (a problem: the caller stops what started)
        self._wait_http("ingress", f"http://{self.host}:{self.port}/healthz")
        if not s.autotask_configured:
            lines += self._register_sandbox_webhooks()
        lines += self._wait_ready(f"http://{self.host}:{self.port}/readyz")
        lines += [
            f"Mode:     {mode_line(s)}",
            f"Ingress: {base}  (POST {base}/webhooks/webform, {base}/webhooks/mission-control)",
            *token_lines,
            f"Metrics: {base}/metrics   API docs: {base}/docs   health: {base}/healthz   ready: {base}/readyz",
            f"Audit DB: {s.effective_database_url}",
            f"Broker:   {s.effective_broker_url}",
            "Try:      atrelay send samples/webform-new-user.json   then   atrelay events",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0 and not self.verbose:
            # Celery warns about superuser privileges on every start; said once here instead, with why.
            lines.append("[yellow]Running as root:[/] fine for a trial; Celery's warning about it is left out (atrelay "
                         "accepts JSON messages only, never pickle). In production run atrelay as its own user "
                         "(docs/deploy.md).")
        return lines

    def _wait_ready(self, url: str, timeout: float = 30.0) -> list[str]:
        """Wait until the ingress says an event accepted now would be applied (a worker and the beat alive and
        ready): the banner then means it, and `atrelay doctor` run right after it finds them. Not ready in
        time: the banner says why rather than hide it."""
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs.values()):
                return []  # a child died: watch() says which
            try:
                with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (our own localhost URL)
                    if response.status == 200:
                        return []
            except urllib.error.HTTPError as exc:
                why = exc.read().decode("utf-8", "replace")[:300]
            except OSError as exc:
                why = str(exc)
            time.sleep(0.2)
        return [f"[yellow]Not ready after {timeout:.0f} s:[/] {escape(why)} (`atrelay doctor` says more)"]

    def _register_sandbox_webhooks(self) -> list[str]:
        """Point the Autotask sandbox's ticket and note webhooks at this ingress, as an operator would."""
        local = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        base = f"http://{local}:{self.port}"
        done = subprocess.run(  # noqa: S603 (our own module)
            [sys.executable, "-m", "workers.cli", "autotask", "webhooks", "install", "--url", base],
            env=self.env, capture_output=True, text=True, check=False)
        sandbox = f"http://127.0.0.1:{self.autotask_sandbox_port}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            return [f"[red]Could not register the sandbox's Autotask webhooks: {tail[0]}[/]"]
        return [
            f"Autotask sandbox webhooks call {base}/webhooks/autotask/{{tickets,notes}} (reconciliation as well)",
            "  act as Mission Control: curl -X POST "
            f"{sandbox}/_sandbox/tickets/50002/status -H 'content-type: application/json' "
            "-d '{\"status\": \"MC No Contact\", \"as\": \"mission-control\"}'",
        ]

    def watch(self) -> int:
        """Block until a signal or a child's death; stop everything; return the exit code."""
        stopping = {"signal": 0}

        def _on_signal(signum: int, _frame: object) -> None:
            stopping["signal"] = signum

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        code = 0
        while not stopping["signal"]:
            dead = [(n, p.returncode) for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                name, rc = dead[0]
                self.console.print(f"[red]{name} exited with code {rc}; stopping atrelay[/]")
                code = 1
                break
            time.sleep(0.5)
        self.stop()
        return code

    def stop(self) -> None:
        forget_embedded(self.settings.var_path)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def banner(self, lines: list[str]) -> Panel:
        return Panel("\n".join(lines), title="atrelay is running (Ctrl-C stops it)", expand=False)
