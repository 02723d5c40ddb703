"""Which settings a command uses: the environment, then the runtime.env of a running `make run`.

`make run` writes its servers' URLs and secrets to runtime.env in its data folder while it
serves, and records that folder in a per-user registry (config.runs_registry()). A command
looks, in this order, at:

1. the data folder it is given (`--data-dir`, or DATA_DIR), else `.data` under the current
   folder: its runtime.env, while a live run holds that folder;
2. the environment alone, when it names DATABASE_URL (servers of your own);
3. the one live run in the registry (with two or more, it asks which).

Real environment variables always take precedence over a runtime.env's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from integration.config import (
    ConfigError,
    Settings,
    process_settings,
    runs_registry,
    runtime_env_path,
    settings_from,
)
from integration.rundir import registered_runs, run_pid


@dataclass(frozen=True)
class Located:
    """The settings, and where they came from (named in errors, so a user knows what to fix)."""

    settings: Settings
    source: str  # "run", "environment" or "" (nothing found)
    note: str = ""


def locate(data_dir: str | None) -> Located:
    """The settings a command runs with; ConfigError, saying what to do, when the data folder
    it names has no running `make run` and the environment names no database either."""
    env = process_settings()
    if data_dir is None and "data_dir" in env.model_fields_set:
        data_dir = env.data_dir
    folder = Path(data_dir if data_dir is not None else env.data_dir)
    if run_pid(folder) is not None and runtime_env_path(folder).exists():
        return Located(settings_from(runtime_env_path(folder)), "run")
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
    if runs:
        return Located(settings_from(runtime_env_path(runs[0].data_dir)), "run")
    stale = runtime_env_path(folder)
    return Located(env, "", f"{stale} was left by a run that died" if stale.exists() else "")


def missing_hint(located: Located) -> str:
    """What to do when a setting the command needs is missing."""
    if located.source == "environment":
        return (
            "DATABASE_URL is set, so settings come from the environment alone: set the missing"
            " ones too (README, Configuration), or unset DATABASE_URL to use a running `make run`."
        )
    note = f" ({located.note})" if located.note else ""
    return (
        f"No running `make run` was found{note}: none serves from ./.data and none is recorded"
        f" in {runs_registry()}. Start one with `make run` in the project folder, name its data"
        " folder with --data-dir PATH (or DATA_DIR=PATH), or set DATABASE_URL and SECRET_KEY"
        " for servers of your own."
    )
