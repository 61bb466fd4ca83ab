"""The one place that reads configuration.

Every ``ATRELAY_*`` variable is read here, once, into a typed :class:`Settings`. A malformed value
stops start-up with one line that names the variable and what is wrong with it, because an operator
reading a traceback at 3 a.m. should not have to guess which of twenty variables broke.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import functools
import ipaddress
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandboxes.autotask.data import SANDBOX_AUTOTASK_CREDENTIALS
from sandboxes.timezest.data import SANDBOX_TIMEZEST_API_KEY

__all__ = [
    "DEFAULT_AUTOTASK_ZONE_URL",
    "SANDBOX_AUTOTASK_CREDENTIALS",
    "SANDBOX_TIMEZEST_API_KEY",
    "Settings",
    "SettingsError",
    "dev_admin_token",
    "get_settings",
    "load_settings",
    "partial_autotask_credentials",
    "reset_settings_cache",
    "unknown_variables",
    "webhook_secrets",
]

DEFAULT_AUTOTASK_ZONE_URL = "https://webservices2.autotask.net/atservicesrest/v1.0/zoneInformation"
DEFAULT_TIMEZEST_BASE_URL = "https://api.timezest.com/v1"
MIN_ADMIN_TOKEN_CHARS = 20



def _default_var_dir() -> Path:
    """``var`` of the source checkout atrelay runs from (``make run``), else ``./var``.

    Relative to the current folder, `atrelay events` run elsewhere would open a fresh, empty
    database and `atrelay send` would mint a new secret (and get 401): anchored to the checkout,
    every command finds the var/ that `atrelay run` uses. An installed package (site-packages, the
    Docker image) has no checkout and keeps ``./var`` (the image's working directory).
    """
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        if 'name = "atrelay"' in pyproject.read_text(encoding="utf-8"):
            return root / "var"
    except OSError:
        pass
    return Path("var")


class SettingsError(Exception):
    """A configuration problem, phrased for the operator in one line."""


def _split_secrets(raw: str) -> list[str]:
    return [part for part in raw.split() if part]


def _rotation(value: SecretStr | None) -> list[str]:
    """The one or two secrets a rotating setting holds (new first); more than two is refused."""
    parts = _split_secrets(value.get_secret_value()) if value is not None else []
    if len(parts) > 2:
        raise ValueError("holds more than two secrets; during rotation give the new and the old one only")
    return parts


def _check_whsec(value: SecretStr | None) -> SecretStr | None:
    parts = _rotation(value)
    if not parts:
        return None
    for part in parts:
        if not part.startswith("whsec_"):
            raise ValueError("each secret must start with 'whsec_' (Standard Webhooks format; `atrelay secret new` "
                             "makes one)")
        try:
            raw = base64.b64decode(part[len("whsec_") :] + "==", validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a secret is not valid base64 after 'whsec_'") from exc
        if len(raw) < 16:
            raise ValueError("a secret decodes to fewer than 16 bytes; use 24-64 random bytes")
    return value


class Settings(BaseSettings):
    """All configuration, from ``ATRELAY_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(
        env_prefix="ATRELAY_", env_file=".env", extra="ignore", case_sensitive=False
    )

    var_dir: Path = Field(default_factory=_default_var_dir, description="Folder for embedded-mode files.")
    # shadow: everything runs except Autotask writes, which are recorded for `atrelay shadow report`
    # (pipelines/shadow.py); events accepted in shadow mode are never written, even after going live.
    mode: Literal["live", "shadow"] = "live"
    # The shadow report counts a person's status change this soon after atrelay's would-be write.
    shadow_agree_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    # `atrelay ingress` listens here unless --host/--port say otherwise (the systemd unit sets neither).
    ingress_host: str = "127.0.0.1"
    ingress_port: int = Field(default=8000, ge=1, le=65535)
    database_url: str | None = None
    broker_url: str | None = None
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"  # auto: JSON in distributed mode

    autotask_username: str | None = None
    autotask_secret: SecretStr | None = None
    autotask_integration_code: SecretStr | None = None
    autotask_base_url: str | None = None
    autotask_zone_url: str = DEFAULT_AUTOTASK_ZONE_URL
    autotask_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    autotask_note_type: str | None = None
    autotask_note_publish: str | None = None
    autotask_picklist_ttl_seconds: int = Field(default=3600, ge=10)
    autotask_max_in_flight: int = Field(default=3, ge=1, le=10)
    # "tenant": every call shares the 3-thread limit (safe); "entity": one limit per entity path.
    autotask_thread_groups: Literal["tenant", "entity"] = "tenant"
    autotask_hourly_budget: int = Field(default=5000, ge=1)
    # The share of that budget kept for status writes: callout runs and reconciliation stop at the rest.
    autotask_write_reserve_percent: int = Field(default=30, ge=0, le=90)
    # One Tickets/query reads the tickets of up to this many waiting events (pipelines.ticket_reads) ...
    autotask_read_batch: int = Field(default=50, ge=1, le=500)
    # ... and a run acts on such a read for this long at most; 0: each run reads its own ticket (a GET).
    # Short: a person's change Autotask has not reported yet is invisible to a shared read for this long.
    autotask_read_max_age_seconds: float = Field(default=3.0, ge=0, le=60)

    timezest_api_key: SecretStr | None = None
    timezest_base_url: str = DEFAULT_TIMEZEST_BASE_URL
    timezest_poll_seconds: int = Field(default=60, ge=5)

    mc_webhook_secret: SecretStr | None = None
    webform_webhook_secret: SecretStr | None = None
    # Autotask's own webhooks (ticket and note callouts) sign with this; see docs/connectors/autotask.md.
    autotask_webhook_secret: SecretStr | None = None
    autotask_reconcile_seconds: int = Field(default=300, ge=30, le=24 * 3600)
    webform_note_title: str = "(?i)new user form"
    admin_token: SecretStr | None = None
    ops_session_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    # Addresses (or networks) of the reverse proxies in front of the ingress: only their X-Forwarded-For
    # names the client (uvicorn's forwarded_allow_ips). None by default: the ingress is published directly,
    # and believing the header from anyone let a guesser pose as a new client with every sign-in.
    trusted_proxies: str = ""

    rules_file: Path | None = None
    # Knowledge-base guards (docs/rules.md). TimeZest's API resource writes notes with booking links
    # by design; unset with the sandbox tenant, the sandbox's TimeZest resource is meant.
    timezest_resource_id: int | None = Field(default=None, ge=1)
    guard_checklist_all: bool = False  # Complete with open checklist items: count every item, not only important
    clobber_window_seconds: int = Field(default=120, ge=1, le=24 * 3600)
    # Alerts: space-separated apprise URLs (Slack, Teams, mailto, json://...); none = dashboard only.
    notify_urls: str = ""
    escalation_idle_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    alert_digest_seconds: int = Field(default=60, ge=1, le=3600)  # at most one alert per kind this often
    webhook_silence_minutes: int = Field(default=0, ge=0)  # 0 = do not alert on a silent Autotask webhook
    budget_alert_percent: int = Field(default=90, ge=1, le=100)
    # A failed alert send is tried again after this, doubling each time, up to this many tries; then it
    # is recorded as failed (shown on the dashboard), never retried for ever.
    alert_retry_seconds: float = Field(default=30.0, ge=0, le=3600)
    alert_max_attempts: int = Field(default=5, ge=1, le=50)
    # Liveness: every worker and beat (and ingress) records a heartbeat this often; one with none for
    # the timeout is not alive. Defaults: a stopped worker is seen within 30 s and alerted within the
    # next check (every heartbeat), well inside a minute.
    heartbeat_seconds: float = Field(default=10.0, ge=0.2, le=300)
    heartbeat_timeout_seconds: float = Field(default=30.0, ge=1, le=3600)
    # An event waiting (accepted, or a retry that is due) longer than this is "stuck": shown and alerted.
    stuck_after_seconds: int = Field(default=120, ge=1, le=24 * 3600)
    mc_no_contact_delay_seconds: int = Field(default=0, ge=0, le=7 * 24 * 3600)
    retry_horizon_hours: int = Field(default=72, ge=1)
    # Runs of one event that end in an unexpected exception before it is dead-lettered with it.
    max_crashes: int = Field(default=3, ge=1, le=100)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # The ingress faces the network directly (compose publishes it): it bounds what one client can hold.
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    request_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    max_connections: int = Field(default=1000, ge=1)
    rejections_keep: int = Field(default=10_000, ge=100)
    # A partner time further ahead of receipt than this is clamped to the receipt (one bad clock must
    # not make every later event on its ticket look older, i.e. "stale").
    max_clock_skew_seconds: int = Field(default=300, ge=0, le=7 * 24 * 3600)
    # Four runs at once keep Autotask's 3-request thread limit busy at real latencies (a run spends about
    # a tenth of its time on the database, between calls); the governor holds the fourth back when needed.
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # Threads: a run waits on Autotask and the database nearly all the time, so four threads cost about
    # one process's memory; prefork isolates runs in processes at about 30 MB each (docs/benchmarks.md).
    worker_pool: Literal["threads", "prefork"] = "threads"
    # Renewed every third of itself while a run works, so it can be short: a killed worker's events
    # run again within lease + one sweep (about 25 s by default).
    lease_seconds: int = Field(default=20, ge=3, le=3600)
    beat_lock_seconds: int = Field(default=30, ge=2, le=600)
    sweep_seconds: float = Field(default=5.0, ge=1.0, le=600.0)

    @model_validator(mode="after")
    def _heartbeat_timeout(self) -> Settings:
        if self.heartbeat_timeout_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("ATRELAY_HEARTBEAT_TIMEOUT_SECONDS must be at least twice ATRELAY_HEARTBEAT_SECONDS "
                             "(one late heartbeat must not make a live process look dead)")
        return self

    @field_validator("mc_webhook_secret", "webform_webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_whsec(value)

    @field_validator("autotask_webhook_secret")
    @classmethod
    def _autotask_secret(cls, value: SecretStr | None) -> SecretStr | None:
        parts = _rotation(value)
        if not parts:
            return None
        if any(len(part) > 64 for part in parts):
            raise ValueError("Autotask accepts a webhook secretKey of at most 64 characters")
        if any(len(part) < 16 for part in parts):
            raise ValueError("use at least 16 random characters (`atrelay secret new --kind autotask` makes one)")
        return value

    @field_validator("notify_urls")
    @classmethod
    def _notify(cls, value: str) -> str:
        from workers.notify_urls import notify_url_problems  # apprise only when URLs are set

        problems = notify_url_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for part in value.replace(",", " ").split():
            if part == "*":
                continue
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
        return value

    @field_validator("webform_note_title")
    @classmethod
    def _note_title(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        # It opens the dashboard and the replay API to whoever guesses it: refuse guessable ones.
        if value is not None and len(value.get_secret_value().strip()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters (`atrelay secret new --kind "
                             "admin-token` makes one)")
        return value

    @field_validator("rules_file")
    @classmethod
    def _rules_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if value and value.startswith("postgresql://"):
            # SQLAlchemy would pick psycopg2, which we do not ship; psycopg 3 is the driver.
            return "postgresql+psycopg://" + value[len("postgresql://") :]
        return value

    # ---- derived values -------------------------------------------------------------------
    @property
    def var_path(self) -> Path:
        return self.var_dir.resolve()

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_path / 'atrelay.db'}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.var_path / 'broker.db'}"

    @property
    def embedded(self) -> bool:
        """True when running on the no-servers default (SQLite audit DB and file broker)."""
        return self.effective_broker_url.startswith("sqla+")

    @property
    def json_logs(self) -> bool:
        return self.log_format == "json" or (self.log_format == "auto" and not self.embedded)

    @property
    def forwarded_allow_ips(self) -> list[str]:
        """``ATRELAY_TRUSTED_PROXIES`` as uvicorn's ``forwarded_allow_ips`` (empty: no proxy is trusted)."""
        return self.trusted_proxies.replace(",", " ").split()

    @property
    def autotask_configured(self) -> bool:
        return bool(self.autotask_username and self.autotask_secret and self.autotask_integration_code)


def _format_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if not loc:  # a check across settings: its message names the variables itself
            parts.append(msg)
            continue
        name = "ATRELAY_" + str(loc[0]).upper()
        raw = err.get("input")
        # Secrets, and alert URLs (they carry webhook tokens), are never echoed back.
        shown = "" if name.endswith(("SECRET", "KEY", "TOKEN", "NOTIFY_URLS")) or raw is None else f" (got {raw!r})"
        parts.append(f"{name}: {msg}{shown}")
    return "; ".join(parts)


def _dotenv_names(env_file: Path) -> list[str]:
    """The variable names a ``.env`` file sets (the file Settings reads, relative to the working folder)."""
    if not env_file.is_file():
        return []
    from dotenv import dotenv_values  # pydantic-settings reads .env with it too

    return [name for name in dotenv_values(env_file) if name]


def unknown_variables(environ: dict[str, str] | None = None, env_file: Path | None = Path(".env")) -> list[str]:
    """``ATRELAY_*`` names in the environment or in ``.env`` that no setting reads, each with its likely
    intended name.

    A typo (``ATRELAY_AUTOTASK_USER``) would otherwise be ignored and atrelay would quietly fall back
    to the sandbox; in ``.env`` just as in the environment (Settings ignores unknown names in both).
    """
    import difflib

    known = {"ATRELAY_" + name.upper() for name in Settings.model_fields}
    names = [(name, "") for name in sorted(environ if environ is not None else os.environ)]
    if env_file is not None:
        names += [(name, f" in {env_file}") for name in _dotenv_names(env_file)]
    problems = []
    for name, where in names:
        upper = name.upper()
        # ATRELAY_TEST_* belong to the test suite (e.g. ATRELAY_TEST_PG), not to atrelay.
        if upper.startswith("ATRELAY_") and not upper.startswith("ATRELAY_TEST_") and upper not in known:
            close = difflib.get_close_matches(upper, sorted(known), n=1)
            problems.append(f"{name}{where} (did you mean {close[0]}?)" if close else f"{name}{where}")
    return problems


def partial_autotask_credentials(settings: Settings) -> list[str]:
    """The Autotask credential variables missing when some but not all three are set."""
    given = {"ATRELAY_AUTOTASK_USERNAME": settings.autotask_username,
             "ATRELAY_AUTOTASK_SECRET": settings.autotask_secret,
             "ATRELAY_AUTOTASK_INTEGRATION_CODE": settings.autotask_integration_code}
    missing = [name for name, value in given.items() if not value]
    return missing if 0 < len(missing) < len(given) else []


def load_settings(**overrides: Any) -> Settings:
    """Read the environment once; raise :class:`SettingsError` with a one-line message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError("configuration error: " + _format_error(exc)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()


def _dev_secret(var_path: Path, name: str, rewrite: Callable[[str], str] | None = None) -> str:
    """A generated secret kept in the var folder, so embedded mode works with no configuration.

    Only used when no secret is configured; ``atrelay send`` reads the same file to sign. Created under
    a lock on the folder's ``dev-secrets.lock``: the ingress, the worker and two requests at once may
    all ask first, and before the lock two of them could write at once (one answered 500 as the other's
    temporary file moved away beneath it; a process could keep a secret another had overwritten).
    ``rewrite``: a change to a stored value, made under the same lock.
    """
    var_path.mkdir(parents=True, exist_ok=True)
    path = var_path / "dev-secrets.json"
    with (var_path / "dev-secrets.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        value = data.get(name) or "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        if rewrite is not None:
            value = rewrite(value)
        if data.get(name) != value:
            data[name] = value
            fd, tmp = tempfile.mkstemp(prefix=".dev-secrets-", dir=var_path)  # mode 600
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(data, indent=2))
            os.replace(tmp, path)
    return value


def dev_admin_token(settings: Settings) -> str:
    """The dashboard token `atrelay run` uses when none is configured (kept in var/dev-secrets.json).

    Stored without the ``whsec_`` prefix the webhook secrets carry, so the value in the file is the
    value that signs in (older files stored it prefixed: rewritten once here).
    """
    return _dev_secret(settings.var_path, "admin-token", rewrite=lambda value: value.removeprefix("whsec_"))


def webhook_secrets(settings: Settings, source: str) -> tuple[list[str], bool]:
    """Secrets that may sign webhooks from ``source``; the flag says they were generated."""
    configured = {
        "webform": settings.webform_webhook_secret,
        "mission-control": settings.mc_webhook_secret,
        "autotask": settings.autotask_webhook_secret,
    }[source]
    if configured is not None:
        return _split_secrets(configured.get_secret_value()), False
    return [_dev_secret(settings.var_path, source)], True
