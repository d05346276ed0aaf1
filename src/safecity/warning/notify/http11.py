"""A small keep-alive HTTP/1.1 client for webhook POSTs: h11 (the protocol) over asyncio streams (the sockets).

Measured on loopback, one signed 1.5 kB POST cost about 0.8 ms of CPU through httpx (anyio, httpcore's pool, URL
and header models) and 0.1 ms here, which was most of an alert's CPU on the alert path. It does only what a webhook
needs: POST a body, read the status (the body is read and dropped, capped), keep connections alive per origin, no
redirects, no cookies, no proxies. TLS verifies the server with the system's trust store.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

MAX_RESPONSE_BYTES = 64 * 1024  # a webhook answer's body is not used; more than this is not read
IDLE_PER_ORIGIN = 8
_READ = 65_536

Origin = tuple[str, str, int]


class ConnectionLost(OSError):
    """The server closed the connection, or broke the protocol, before a whole answer came."""


@dataclass(frozen=True)
class Response:
    """What a POST got back."""

    status_code: int


class _Connection:
    __slots__ = ("h11", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_BYTES)

    def close(self) -> None:
        self.writer.close()


class Http11Client:
    """POSTs over pooled keep-alive connections; `timeout_s` bounds one request, `connect_timeout_s` its connect."""

    def __init__(self, *, timeout_s: float = 10.0, connect_timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s or timeout_s
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def aclose(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> Response:
        """POST `content` to `url`; raises TimeoutError when no whole answer came within `timeout_s`.

        A kept-alive connection the server closed meanwhile is found out when it fails before any answer came: the
        request is then sent once more on a new connection (a webhook is idempotent: the receiver dedupes on its id).
        """
        parts = urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        origin = (scheme, host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        if ":" in host and not host.startswith("["):  # an IPv6 literal
            host_header = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
        fields = [("host", host_header), ("content-length", str(len(content))), *headers.items()]
        request = h11.Request(method="POST", target=target, headers=fields)
        async with asyncio.timeout(self.timeout_s):
            conn = self._take(origin)
            if conn is not None:
                try:
                    return await self._exchange(origin, conn, request, content)
                except ConnectionLost:
                    pass  # closed while idle: once more on a fresh connection
            conn = await self._connect(origin)
            return await self._exchange(origin, conn, request, content)

    def _take(self, origin: Origin) -> _Connection | None:
        conns = self._idle.get(origin)
        while conns:
            conn = conns.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=_READ)
        return _Connection(reader, writer)

    async def _exchange(self, origin: Origin, conn: _Connection, request: h11.Request, content: bytes) -> Response:
        status = 0
        reusable = False
        try:
            machine = conn.h11
            conn.writer.write(
                machine.send(request) + machine.send(h11.Data(data=content)) + machine.send(h11.EndOfMessage())
            )
            await conn.writer.drain()
            read = 0
            while True:
                event = machine.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.reader.read(_READ)
                    read += len(data)
                    if not data and status == 0:
                        raise ConnectionLost("connection closed before an answer")
                    if read > MAX_RESPONSE_BYTES + _READ:
                        break  # an answer this long is not kept alive; its status is known
                    machine.receive_data(data)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    if status == 0:
                        raise ConnectionLost("connection closed before an answer")
                    break
            if status == 0:
                raise ConnectionLost("no answer")
            if machine.our_state is h11.DONE and machine.their_state is h11.DONE:
                machine.start_next_cycle()
                reusable = True
        except h11.ProtocolError as err:
            raise ConnectionLost(f"HTTP protocol error: {err}") from err
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            if status == 0:
                raise ConnectionLost(str(err)) from err
            raise
        finally:
            idle = self._idle.setdefault(origin, [])
            if reusable and len(idle) < IDLE_PER_ORIGIN:
                idle.append(conn)
            else:
                conn.close()
        return Response(status)
