"""What the commands share: settings (with what to do when one is missing), one database
transaction per command, a few output helpers. Heavy modules are imported inside functions
(see the package's docstring)."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click
import orjson

from integration.cli.instance import Located, locate, missing_hint
from integration.config import ConfigError, Settings, get_settings
from integration.errors import AppError

if TYPE_CHECKING:  # only for annotations: SQLAlchemy alone takes 0.7 s to import
    from sqlalchemy.ext.asyncio import AsyncSession

    from integration.store.models import Environment

T = TypeVar("T")
Work = Callable[["AsyncSession", Settings], Awaitable[T]]


def settings(*required: str, discover: bool = True, deletes: str = "") -> Settings:
    """The settings, with the ones this command cannot do without checked; a message saying
    which are missing and how to fix it otherwise. `discover`: find a running `make run` (its
    data folder from --data-dir, DATA_DIR, ./.data or the registry), and say on stderr which
    one it is; servers do not guess. `deletes`: the command deletes data (its name): it never
    takes another project's run for this one's (instance.locate)."""
    try:
        if not discover:
            found = get_settings()
            found.require(*required)
            return found
        located = _located(deletes)
        try:
            located.settings.require(*required)
        except ConfigError as exc:
            raise ConfigError(f"{exc}. {missing_hint(located)}") from None
        return located.settings
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


_LOCATED: dict[str, Located] = {}


def located(deletes: str = "") -> Located:
    """Where the settings come from, found and announced once per command."""
    try:
        return _located(deletes)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _located(deletes: str) -> Located:
    if deletes not in _LOCATED:
        _LOCATED[deletes] = located = locate(_data_dir_option(), deletes=deletes)
        click.echo(located.describe(), err=True)
    return _LOCATED[deletes]


def _data_dir_option() -> str | None:
    context = click.get_current_context(silent=True)
    root = context.find_root() if context else None
    value = root.params.get("data_dir") if root else None
    return str(value) if value else None


def db_call(work: Work[T], *, decrypts: bool = False, wakes: bool = False, deletes: str = "") -> T:
    """Run `work` in one committed transaction against DATABASE_URL. `decrypts`: the command
    reads or writes secrets, so SECRET_KEY is first checked against the database's canary.
    `wakes`: jobs it queued (a delivery wake-up) go to the worker's queue after the commit.
    `deletes`: see settings()."""
    config = settings("database_url", *(("secret_key",) if decrypts else ()), deletes=deletes)
    return run(_in_transaction(config, work, decrypts=decrypts, wakes=wakes))


async def _in_transaction(config: Settings, work: Work[T], *, decrypts: bool, wakes: bool) -> T:
    from integration.store.db import make_engine, make_sessionmaker, transaction

    engine = make_engine(config, pool_size=1)
    queue = None
    try:
        if wakes and config.redis_url:
            from integration.queue import Queue

            queue = Queue(config)
        sessions = make_sessionmaker(engine, enqueue=queue.send if queue else None)
        if decrypts:
            from integration.crypto import SecretBox
            from integration.keyring import verify

            await verify(sessions, SecretBox.of(config))
        async with transaction(sessions) as session:
            return await work(session, config)
    finally:
        if queue is not None:
            await queue.close()
        await engine.dispose()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; our errors become one line on stderr and exit 1, never a traceback."""
    try:
        return asyncio.run(main)
    except AppError as exc:
        if exc.error == "database_unavailable":
            raise click.ClickException(
                "cannot reach the database at DATABASE_URL: is it running? (`make run` starts"
                " one; --data-dir names the data folder of the run to talk to)"
            ) from None
        raise click.ClickException(exc.detail) from None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value).decode())


# --- what reaches the terminal ----------------------------------------------------------------
#
# Commands print what Segment sent (user ids, event names, traits). A stored "\x1b]0;...\x07"
# printed raw would retitle the operator's terminal, and OSC 52 would write to their clipboard;
# bidi overrides would make a line read other than it is. Every byte a command writes to stdout
# or stderr goes through one filter that spells such characters as \uXXXX: readable in text,
# and in JSON the very escape JSON uses (JSON itself escapes only those below 0x20).

CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """`text` with control characters (but newline and tab) and bidi overrides as \\uXXXX."""
    return CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class EscapingStream(io.TextIOBase):
    """A text stream that writes to `target` with escape_controls applied."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click probes with bytes for a binary stream
            raise TypeError("write() argument must be str")
        self.target.write(escape_controls(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.target.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.target.errors


def escape_output() -> None:
    """From now on, everything printed to stdout and stderr has its controls escaped."""
    if not isinstance(sys.stdout, EscapingStream):
        sys.stdout = EscapingStream(sys.stdout)
    if not isinstance(sys.stderr, EscapingStream):
        sys.stderr = EscapingStream(sys.stderr)


def shown(value: Any) -> str:
    """A value as a person reads it: "not set" for nothing."""
    return "not set" if value is None or value == "" else str(value)


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


async def environment(session: AsyncSession, name: str) -> Environment:
    """An environment by its name, or by its id (what the admin API shows)."""
    import uuid

    from integration.environments import service as environments

    try:
        env_id = uuid.UUID(name)
    except ValueError:
        return await environments.by_name(session, name)
    return await environments.get(session, env_id)


def delivery_status(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--status: one of the outbox's statuses (checked here, so that --help stays fast)."""
    from integration.store.models import DELIVERY_STATUSES

    if value is not None and value not in DELIVERY_STATUSES:
        raise click.BadParameter(f"must be one of {', '.join(DELIVERY_STATUSES)}")
    return value


def limit_option(default: int = 50) -> Callable[[Any], Any]:
    """--limit N, up to the admin API's largest page (http.pagination.MAX_LIMIT; a test
    holds the two together: importing it here would slow every command down)."""
    return click.option(
        "--limit",
        type=click.IntRange(1, 500),
        default=default,
        show_default=True,
        help="How many to show, newest first.",
    )
