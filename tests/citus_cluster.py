"""A local Citus cluster for the tests and the bench: a coordinator and two workers, each a
Postgres of its own under .data/citus/, on loopback ports 9700-9702. It runs a Citus that is
already installed into this machine's Postgres (citus.so in `pg_config --pkglibdir`); it never
builds one. The README's "Running at scale" says how a production cluster is set up.

    python -m tests.citus_cluster up      start (initialising on first use); prints DATABASE_URL
    python -m tests.citus_cluster down    stop
    python -m tests.citus_cluster check   exit 2, saying so in one line, when Citus is missing

`prepare_database` and `drop_database` are what a test's fresh database needs on a cluster: the
database on every node, the extension in each, and the workers known to the coordinator.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "citus"
HOST = "127.0.0.1"
COORDINATOR = 9700
WORKERS = (9701, 9702)
DATABASE = "integration"
PLAIN = "plain"
USER = "postgres"
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "shared_preload_libraries": "'citus'",
    # The nodes talk to each other over loopback, without TLS.
    "citus.node_conninfo": "'sslmode=disable'",
    "max_connections": "300",
    "max_prepared_transactions": "300",
    "shared_buffers": "'128MB'",
    # Shards move between nodes by logical replication (citus_rebalance_start).
    "wal_level": "logical",
    # A throwaway cluster for tests and the bench: durability is not what is measured.
    "synchronous_commit": "off",
}


def _bindir() -> Path:
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def installed() -> str | None:
    """Why Citus cannot run here, or None when it can."""
    if shutil.which("pg_config") is None:
        return "pg_config is not installed (Postgres server packages are missing)"
    lib = subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True).stdout
    if not (Path(lib.strip()) / "citus.so").exists():
        return f"Citus is not installed into this Postgres ({lib.strip()}/citus.so is missing)"
    return None


def url(port: int = COORDINATOR, database: str = DATABASE) -> str:
    return f"postgresql://{USER}@{HOST}:{port}/{database}"


def _as_owner(command: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root: run them as the postgres user.
    return ["runuser", "-u", USER, "--", *command] if os.geteuid() == 0 else command


def _node(port: int) -> Path:
    return DATA / str(port)


def _init(port: int) -> None:
    path = _node(port)
    if (path / "PG_VERSION").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        account = pwd.getpwnam(USER)
        for folder in (DATA, path):
            os.chown(folder, account.pw_uid, account.pw_gid)
    subprocess.run(
        _as_owner(
            [str(_bindir() / "initdb"), "-D", str(path), "-U", USER, "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    lines = [f"{key} = {value}" for key, value in {**SETTINGS, "port": str(port)}.items()]
    lines.append(f"unix_socket_directories = '{path}'")
    with (path / "postgresql.conf").open("a") as conf:
        conf.write("\n".join(lines) + "\n")


def _running(port: int) -> bool:
    status = subprocess.run(
        _as_owner([str(_bindir() / "pg_ctl"), "-D", str(_node(port)), "status"]),
        capture_output=True,
    )
    return status.returncode == 0


def _start(port: int) -> None:
    if _running(port):
        return
    log = _node(port) / "server.log"
    subprocess.run(
        _as_owner(
            [str(_bindir() / "pg_ctl"), "-D", str(_node(port)), "-l", str(log), "-w", "start"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _extension_with_workers(
    dsn: str, coordinator: int, workers: list[tuple[str, int]]
) -> None:
    """In the coordinator's database `dsn`: the extension, its own address, and the workers."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        await conn.execute(f"SELECT citus_set_coordinator_host('{HOST}', {coordinator})")
        known = {
            (r["nodename"], r["nodeport"]) for r in await conn.fetch("SELECT * FROM pg_dist_node")
        }
        for host, port in workers:
            if (host, port) not in known:
                await conn.execute(f"SELECT citus_add_node('{host}', {port})")
    finally:
        await conn.close()


async def _create_everywhere(
    database: str, coordinator: int, workers: list[tuple[str, int]]
) -> None:
    nodes = [(HOST, coordinator), *workers]
    for host, port in nodes:
        conn = await asyncpg.connect(f"postgresql://{USER}@{host}:{port}/postgres")
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()
    for host, port in workers:
        await _execute(
            f"postgresql://{USER}@{host}:{port}/{database}", "CREATE EXTENSION IF NOT EXISTS citus"
        )
    await _extension_with_workers(url(coordinator, database), coordinator, workers)


async def workers_of(server: str) -> list[tuple[str, int]] | None:
    """The workers of the Citus coordinator at `server` (from its own database's metadata), or
    None when `server` is plain Postgres."""
    conn = await asyncpg.connect(server)
    try:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
        ):
            return None
        rows = await conn.fetch(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE groupid <> 0 ORDER BY nodeport"
        )
        return [(r["nodename"], r["nodeport"]) for r in rows]
    finally:
        await conn.close()


def _port(server: str) -> int:
    return int(server.rsplit(":", 1)[1].split("/", 1)[0])


async def prepare_database(server: str, database: str) -> bool:
    """Create `database` as a Citus database when `server` is a coordinator (True), else do
    nothing (False)."""
    workers = await workers_of(server)
    if workers is None:
        return False
    await _create_everywhere(database, _port(server), workers)
    return True


async def drop_database(server: str, database: str) -> None:
    workers = await workers_of(server) or []
    for host, port in workers:
        await _execute(
            f"postgresql://{USER}@{host}:{port}/postgres",
            f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
        )


def up() -> str:
    for port in (COORDINATOR, *WORKERS):
        _init(port)
        _start(port)
    workers = [(HOST, port) for port in WORKERS]
    # The `postgres` database knows the workers too: the tests' fresh databases copy them.
    asyncio.run(_create_everywhere("postgres", COORDINATOR, workers))
    asyncio.run(_create_everywhere(DATABASE, COORDINATOR, workers))
    # A database without the extension on the coordinator's own server: plain Postgres with the
    # same binaries and settings, the bench's yardstick (make bench-citus).
    asyncio.run(_create_plain(PLAIN))
    return url()


async def _create_plain(database: str) -> None:
    conn = await asyncpg.connect(url(COORDINATOR, "postgres"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


def down() -> None:
    for port in (*WORKERS, COORDINATOR):
        if (_node(port) / "PG_VERSION").exists() and _running(port):
            subprocess.run(
                _as_owner(
                    [str(_bindir() / "pg_ctl"), "-D", str(_node(port)), "-m", "fast", "stop"]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "up"
    missing = installed()
    if command in ("check", "up") and missing:
        print(f"citus: {missing}", file=sys.stderr)
        return 2
    if command == "up":
        print(f"DATABASE_URL={up()}")
    elif command == "down":
        down()
    elif command != "check":
        print(
            f"usage: python -m tests.citus_cluster up|down|check (not {command!r})", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
