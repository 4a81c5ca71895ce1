"""A minimal HTTP/1.1 client on asyncio streams, for requests that must arrive together.

httpx needs a few milliseconds per request on a busy machine, so 50 requests
sent through it reach the server spread over longer than the 100 ms each of them
lasts. Here the connections are opened first and each request is one write, so
all of them are on the wire within a millisecond or two.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send_get(self, target: str, host: str) -> None:
        """Write a GET for `target`; `response()` reads its answer."""
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

    async def response(self) -> tuple[int, bytes]:
        """The status and body of the next response (``Content-Length`` framed)."""
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed before a response")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length)

    async def get(self, target: str, host: str) -> tuple[int, bytes]:
        self.send_get(target, host)
        return await self.response()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
