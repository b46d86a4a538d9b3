"""A TCP proxy in front of a real Postgres whose network the test can cut and restore (a real outage)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class Proxy:
    """Listens on 127.0.0.1:<port> and forwards to the Postgres of `dsn` (TCP or unix socket)."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        self._unix = query["host"][0] + "/.s.PGSQL." + query.get("port", ["5432"])[0] if "host" in query else None
        self._tcp = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._dsn = parts
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        """The same database, through the proxy."""
        user = self._dsn.username or "postgres"
        pw = f":{self._dsn.password}" if self._dsn.password else ""
        return urlunsplit(("postgresql", f"{user}{pw}@127.0.0.1:{self.port}", self._dsn.path, "", ""))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a dead Postgres host would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._pipes):
            w.transport.abort()
        self._pipes.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._unix:
                up_r, up_w = await asyncio.open_unix_connection(self._unix)
            else:
                up_r, up_w = await asyncio.open_connection(*self._tcp)
        except OSError:
            writer.transport.abort()
            return
        self._pipes |= {writer, up_w}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
        self._pipes -= {writer, up_w}
