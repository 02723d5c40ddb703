"""Settings, read from the environment once and validated at start."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KIB = 1024
MIB = 1024 * KIB


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and why."""


def asyncpg_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as well as the asyncpg dialect URL."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("must start with postgresql:// or postgresql+asyncpg://")


# Written by `make run` into its data folder while it runs (and removed when it stops), so that
# CLI commands in another terminal reach its embedded servers. Real environment variables take
# precedence. This is the default data folder's; get_settings() reads DATA_DIR's.
RUNTIME_ENV_FILE = ".data/runtime.env"

MIN_SECRET_KEY_BYTES = 32
MIN_ADMIN_TOKEN_CHARS = 32
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# A DNS name or an IPv4/IPv6 address, lower case (IPv6 without its brackets).
HOST_PATTERN = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*")


def runtime_env_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "runtime.env"


def trusted(runtime_env: Path) -> Path | None:
    """`runtime_env` if it exists and only this user can have written it (ours, not writable by
    group or others, as ssh asks of its config); None if it does not exist. It names the
    database a command connects to and the secrets it sends there: a file planted by another
    user would send them to that user. ConfigError otherwise."""
    try:
        info = runtime_env.stat()
    except FileNotFoundError:
        return None
    if info.st_uid != os.getuid():
        why = f"it belongs to user id {info.st_uid}, not to you ({os.getuid()})"
    elif info.st_mode & 0o022:
        why = f"others may write it (mode {info.st_mode & 0o777:o})"
    else:
        return runtime_env
    raise ConfigError(
        f"refusing to read {runtime_env}: {why}. `make run` writes it for its own user with"
        " mode 600; remove it, or name another data folder (--data-dir)"
    )


def runs_registry() -> Path:
    """The per-user folder where each `make run` records its data folder while it serves, so
    that CLI commands started in any folder find it (XDG's state directory: it survives a
    logout, unlike XDG_RUNTIME_DIR, which ssh sessions, cron and containers often lack)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "segment-integration" / "runs"


def local_url(host: str, port: int) -> str:
    """The URL of a server listening on host:port, as a browser on this machine opens it."""
    if host in ("", "0.0.0.0", "::"):  # every interface: loopback is one of them
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=RUNTIME_ENV_FILE, extra="ignore", frozen=True)

    database_url: str | None = None
    redis_url: str | None = None
    admin_token: str | None = None
    secret_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Where Segment reaches us: webhook URLs start with it. Unset, it is the address this
    # process listens on (HOST, PORT), so that `PORT=8001 make run` prints URLs with 8001.
    # Declared after host and port: its validator reads them.
    public_base_url: str = Field("", validate_default=True)
    web_concurrency: int = Field(1, ge=1, le=64)  # API processes `serve` runs
    data_dir: str = ".data"
    max_body_bytes: int = Field(10 * MIB, ge=KIB)
    # Request bodies one API process holds at once; past it, 503 with Retry-After.
    max_inflight_bytes: int = Field(64 * MIB, ge=KIB)
    # Every webhook answer comes within this, whatever the database does (Segment's classic
    # Webhooks give up after 5 s).
    webhook_deadline_seconds: float = Field(4.0, gt=0, le=60)
    # Failed authentications a client may make per minute before it is answered 429.
    auth_failures_per_minute: int = Field(120, ge=1)
    # How long an API process may remember which environment a key opens (0: never). Changes
    # are heard at once (NOTIFY); this bounds a change missed on a connection that died silently.
    key_cache_seconds: float = Field(10.0, ge=0, le=3600)
    db_pool_size: int = Field(20, ge=1)
    ingest_writers: int = Field(2, ge=1, le=64)
    ingest_max_messages: int = Field(500, ge=1)
    arq_queue_name: str = "integration:queue"
    outbox_max_age_seconds: int = Field(24 * 3600, ge=1)
    outbox_sweep_seconds: int = Field(1, ge=1, le=60)
    outbox_backoff_base_seconds: float = Field(1.0, gt=0)
    outbox_backoff_cap_seconds: float = Field(600.0, gt=0)
    outbox_claim_limit: int = Field(2000, ge=1, le=5000)
    outbox_linger_seconds: float = Field(0.5, ge=0, le=30)
    # An environment whose Segment has failed every round for this long pauses its own
    # delivery (0: never), and then sends one held row every OUTBOX_BREAKER_PROBE_SECONDS.
    outbox_breaker_pause_after_seconds: float = Field(300.0, ge=0)
    outbox_breaker_probe_seconds: float = Field(30.0, gt=0)
    # Batches of one environment in flight at once: a hanging Segment holds this many of the
    # worker's connections, never all of them.
    outbox_env_concurrency: int = Field(4, ge=1, le=20)
    # Delivered outbox rows (which hold what was sent, traits included) are purged after this.
    outbox_delivered_retention_days: int = Field(7, ge=0)
    worker_metrics_port: int = Field(0, ge=0, le=65535)  # 0: the worker serves no metrics
    webhook_key_grace_seconds: int = Field(24 * 3600, ge=0)
    # How long a rotated-out source write key (the /v1 intake's) keeps working by default.
    source_write_key_grace_seconds: int = Field(24 * 3600, ge=0)
    segment_timeout_seconds: float = Field(10.0, gt=0)
    # Hosts besides Segment's own that segment_api_url may name (a private proxy, a test sink):
    # comma-separated host names or IP addresses, no scheme, port or path.
    segment_api_allowlist: str = ""
    # During a SECRET_KEY rotation: the old key, which still decrypts (never encrypts).
    secret_key_previous: str | None = None
    # Failed admin authentications a client may make at once, and how often one more is allowed.
    admin_auth_burst: int = Field(10, ge=1)
    admin_auth_refill_seconds: float = Field(10.0, gt=0)
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        # Checked here, once: otherwise each process's logging setup raised its own traceback.
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return asyncpg_url(value) if value else None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis:// or rediss://")
        return value or None

    @field_validator("public_base_url")
    @classmethod
    def _public_base_url(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            host, port = info.data.get("host"), info.data.get("port")
            # When HOST or PORT is invalid, their own errors say so.
            return local_url(host, port) if host is not None and port is not None else value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < MIN_SECRET_KEY_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_BYTES} bytes")
        return value

    @field_validator("secret_key_previous")
    @classmethod
    def _secret_key_previous(cls, value: str | None) -> str | None:
        # The key being rotated out may be one of the 16-byte keys older versions accepted:
        # rotating is how such a deployment moves to a long one.
        if value is not None and len(value.encode()) < 16:
            raise ValueError("must be at least 16 bytes")
        return value or None

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
                " (for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("segment_api_allowlist")
    @classmethod
    def _segment_api_allowlist(cls, value: str) -> str:
        hosts = [h.strip().lower().strip("[]").rstrip(".") for h in value.split(",")]
        for host in filter(None, hosts):
            if not HOST_PATTERN.fullmatch(host):
                raise ValueError(
                    f"{host!r} is not a host name or IP address"
                    " (give hosts only, comma-separated: no scheme, port or path)"
                )
        return ",".join(sorted({h for h in hosts if h}))

    @property
    def segment_api_hosts(self) -> frozenset[str]:
        """The operator's allowlist of Segment API hosts, besides Segment's own."""
        return frozenset(filter(None, self.segment_api_allowlist.split(",")))

    def require(self, *names: str) -> None:
        """Fail with one clear message naming every missing setting a command needs."""
        missing = [n.upper() for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(f"missing setting(s): {', '.join(missing)}")

    def webhook_url(self, key: str) -> str:
        return f"{self.public_base_url}/webhooks/segment/{key}"

    @property
    def local_base_url(self) -> str:
        """This machine's URL of the API (HOST, PORT), whatever the public one is."""
        return local_url(self.host, self.port)


def _load(**values: Any) -> Settings:
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid settings: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The environment, then the runtime.env of DATA_DIR's running `make run`, if any."""
    data_dir = _load(_env_file=None).data_dir
    return _load(_env_file=trusted(runtime_env_path(data_dir)))


def settings_from(runtime_env: Path | None, **values: Any) -> Settings:
    """The environment, then `runtime_env` (a running `make run`'s settings), if given and
    trusted; `values` take precedence over both."""
    return _load(_env_file=trusted(runtime_env) if runtime_env else None, **values)


def process_settings(**values: Any) -> Settings:
    """The process environment alone (and `values`), without any runtime.env. `make run` starts
    from these: a runtime.env it finds describes an earlier run, which may have died."""
    return _load(_env_file=None, **values)
