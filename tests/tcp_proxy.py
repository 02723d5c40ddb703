"""A TCP proxy in front of Postgres that a test can cut and restore, to play a database outage.

It listens on 127.0.0.1 and forwards each connection to the real server: over TCP, or over
the server's unix socket when the URL names one (`?host=/folder`, as the embedded server's
does). `cut()` drops every open connection and stops listening, so new ones are refused, as
when Postgres is down; `restore()` listens again on the same port. `freeze()` keeps every
connection open but passes no byte either way, and accepts new connections without answering
them: what a network partition, or a Postgres whose processes are all stopped, looks like.
`refuse(sqlstate, message)` answers each new connection with Postgres's own startup error (as
a server that is starting up, 57P03, or has no slot left, 53300, does).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from sqlalchemy import make_url

from integration.embedded import free_port


@dataclass(frozen=True)
class Target:
    host: str | None = None
    port: int = 5432
    unix_path: str | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_path:
            return await asyncio.open_unix_connection(self.unix_path)
        return await asyncio.open_connection(self.host, self.port)


class TcpProxy:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusal: bytes | None = None
        self.connections = 0

    @classmethod
    def for_database(cls, database_url: str) -> TcpProxy:
        url = make_url(database_url)
        port = url.port or 5432
        socket_folder = url.query.get("host")
        if isinstance(socket_folder, tuple):
            socket_folder = socket_folder[0]
        if socket_folder and socket_folder.startswith("/"):
            return cls(Target(port=port, unix_path=f"{socket_folder}/.s.PGSQL.{port}"))
        return cls(Target(host=url.host or "127.0.0.1", port=port))

    def database_url(self, database_url: str) -> str:
        """`database_url`, but through this proxy."""
        url = make_url(database_url).difference_update_query(["host"])
        url = url.set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        return self

    async def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._settle()

    async def restore(self) -> None:
        await self.start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def refuse(self, sqlstate: str | None, message: str = "refused") -> None:
        """New connections get a FATAL ErrorResponse with this SQLSTATE (None: forward again)."""
        if sqlstate is None:
            self._refusal = None
            return
        fields = b"SFATAL\0VFATAL\0C" + sqlstate.encode() + b"\0M" + message.encode() + b"\0\0"
        self._refusal = b"E" + (len(fields) + 4).to_bytes(4, "big") + fields

    async def stop(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await self._settle()

    async def _settle(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._refusal is not None:
            await self._refuse(client_r, client_w, self._refusal)
            return
        await self._flowing.wait()
        try:
            server_r, server_w = await self.target.connect()
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self._writers.update((client_w, server_w))
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(OSError):
                writer.close()

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refusal: bytes
    ) -> None:
        """Read the client's SSLRequest (answer 'N') and startup message, then the error."""
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                payload = await reader.readexactly(length - 4)
                if payload[:4] == (80877103).to_bytes(4, "big"):  # SSLRequest
                    writer.write(b"N")
                    continue
                writer.write(refusal)
                await writer.drain()
                break
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
