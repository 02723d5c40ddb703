"""Which settings a command uses: the environment, then the runtime.env of a running `make run`.

`make run` writes its servers' URLs and secrets to runtime.env in its data folder while it
serves, and records that folder in a per-user registry (config.runs_registry()). A command
looks, in this order, at:

1. the data folder it is given (`--data-dir`, or DATA_DIR), else `.data` under the current
   folder: its runtime.env, while a live run holds that folder;
2. the environment alone, when it names DATABASE_URL (servers of your own);
3. the one live run in the registry (with two or more, it asks which). A command that deletes
   never takes this last one: it would act on whatever other checkout happens to be running.

Real environment variables take precedence over a runtime.env's values, except the Segment API
allowlist: the run's worker enforces its own, so a command checks hosts against that one.

Every command says on stderr which instance it talks to (`Located.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from integration.config import (
    ConfigError,
    Settings,
    process_settings,
    runs_registry,
    runtime_env_path,
    settings_from,
    trusted,
)
from integration.rundir import LOCK_FILE, Run, registered_runs, run_pid


@dataclass(frozen=True)
class Located:
    """The settings, and where they came from (named in errors, so a user knows what to fix)."""

    settings: Settings
    source: str  # "run", "registry", "environment" or "" (nothing found)
    note: str = ""
    data_dir: Path | None = None
    url: str = ""

    def describe(self) -> str:
        """One line naming the instance: its data folder, API and database."""
        database = f"database {masked(self.settings.database_url)}"
        if self.source in ("run", "registry") and self.data_dir is not None:
            api = f"API {self.url}, " if self.url else ""
            how = (
                " (the one running `make run` of this user: none serves ./.data)"
                if self.source == "registry"
                else ""
            )
            return f"instance: `make run` of {self.data_dir} ({api}{database}){how}"
        if self.source == "environment":
            return f"instance: DATABASE_URL from the environment ({database})"
        return "instance: none found"


def masked(url: str | None) -> str:
    """A database URL without its password."""
    if not url:
        return "not set"
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    if not parts.password:
        return urlunsplit(parts)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _run_settings(data: Path) -> Settings:
    """A run's settings: the environment, then its runtime.env; its allowlist in any case."""
    path = trusted(runtime_env_path(data))
    if path is None:
        raise ConfigError(f"{runtime_env_path(data)} is gone: the run stopped meanwhile")
    allowlist = _value(path, "SEGMENT_API_ALLOWLIST")
    if allowlist is None:  # a run of an older version: the environment's, as before
        return settings_from(path)
    return settings_from(path, segment_api_allowlist=allowlist)


def _value(path: Path, name: str) -> str | None:
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _lock_url(data: Path) -> str:
    """The URL a run wrote beside its pid in the data folder's lock file."""
    try:
        lines = (data / LOCK_FILE).read_text().splitlines()
    except OSError:
        return ""
    return lines[1] if len(lines) > 1 else ""


def locate(data_dir: str | None, *, deletes: str = "") -> Located:
    """The settings a command runs with; ConfigError, saying what to do, when the data folder
    it names has no running `make run` and the environment names no database either.
    `deletes`: the command (e.g. "users erase") deletes data, so no fallback to another run."""
    env = process_settings()
    if data_dir is None and "data_dir" in env.model_fields_set:
        data_dir = env.data_dir
    folder = Path(data_dir if data_dir is not None else env.data_dir)
    if run_pid(folder) is not None and runtime_env_path(folder).exists():
        return Located(
            _run_settings(folder), "run", data_dir=folder.resolve(), url=_lock_url(folder)
        )
    if env.database_url:
        return Located(env, "environment")
    if data_dir is not None:
        raise ConfigError(
            f"no `make run` is running from {folder}, and DATABASE_URL is not set. Start it"
            f" with `DATA_DIR={folder} make run` in the project folder, or name another folder."
        )
    runs = registered_runs(runs_registry())
    if len(runs) > 1:
        listed = ", ".join(f"{r.data_dir} ({r.url})" for r in runs)
        raise ConfigError(
            f"{len(runs)} `make run` instances are running: {listed}. Choose one with"
            " --data-dir PATH (or DATA_DIR=PATH)."
        )
    if runs and deletes:
        raise ConfigError(_not_guessed(deletes, runs[0]))
    if runs:
        found = runs[0]
        return Located(
            _run_settings(found.data_dir), "registry", data_dir=found.data_dir, url=found.url
        )
    stale = runtime_env_path(folder)
    return Located(env, "", f"{stale} was left by a run that died" if stale.exists() else "")


def _not_guessed(command: str, run: Run) -> str:
    return (
        f"`{command}` deletes data, so it does not guess which instance: no `make run` serves"
        f" ./.data here, and the one running elsewhere ({run.data_dir}, {run.url}) may be"
        f" another project's. To use that one, say so: --data-dir {run.data_dir}"
    )


def missing_hint(located: Located) -> str:
    """What to do when a setting the command needs is missing."""
    if located.source == "environment":
        return (
            "DATABASE_URL is set, so settings come from the environment alone: set the missing"
            " ones too (README, Configuration), or unset DATABASE_URL to use a running `make run`."
        )
    if located.source in ("run", "registry"):
        return (
            f"The running `make run` of {located.data_dir} does not provide it: set it in the"
            " environment of this command."
        )
    note = f" ({located.note})" if located.note else ""
    return (
        f"No running `make run` was found{note}: none serves from ./.data and none is recorded"
        f" in {runs_registry()}. Start one with `make run` in the project folder, name its data"
        " folder with --data-dir PATH (or DATA_DIR=PATH), or set DATABASE_URL and SECRET_KEY"
        " for servers of your own."
    )
