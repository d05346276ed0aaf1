"""The webhook channel's HTTP/1.1 client against real servers on loopback: uvicorn for the ordinary exchange, raw
asyncio servers for the answers a well-behaved server does not give (closed idle connections, chunked and
close-delimited answers, oversized answers, garbage, silence)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest

from safecity.warning.notify.delivery import Delivery, DeliveryError
from safecity.warning.notify.http11 import MAX_RESPONSE_BYTES, ConnectionLost, Http11Client, InvalidRequest
from safecity.warning.notify.subscriptions import Channel, Subscription, SubscriptionFilter
from safecity.warning.notify.webhook import HostPolicy, WebhookSender, new_secret
from tests.integration.warning.notify_helpers import free_port, http_receiver, silent_server

HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A server running `handle` per connection; yields its port and a list that counts the connections."""
    connections: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), connections
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_posts_reuse_one_kept_alive_connection() -> None:
    async with http_receiver(free_port(), status=202) as receiver:
        client = Http11Client(timeout_s=5)
        try:
            for i in range(3):
                response = await client.post(receiver.url, b'{"n": %d}' % i, {**HEADERS, "webhook-id": f"msg_{i}"})
                assert response.status_code == 202
        finally:
            await client.aclose()
    assert [body for _, body in receiver.requests] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    headers = receiver.requests[2][0]
    assert headers["webhook-id"] == "msg_2"
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    assert headers["content-length"] == "8"


async def test_keeps_alive_and_sends_again_when_the_server_closed_the_idle_connection() -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # keep-alive was offered; the server then closes while the client holds the connection idle

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()

    async with raw_server(keep) as (port, connections):
        client = Http11Client(timeout_s=5)
        for _ in range(2):
            assert (await client.post(f"http://127.0.0.1:{port}/", b"{}", HEADERS)).status_code == 200
        assert len(connections) == 1  # one connection carried both
        await client.aclose()

    async with raw_server(answer_once) as (port, connections):
        client = Http11Client(timeout_s=5)
        assert (await client.post(f"http://127.0.0.1:{port}/", b"{}", HEADERS)).status_code == 200
        await asyncio.sleep(0.1)  # the server has closed it by now
        assert (await client.post(f"http://127.0.0.1:{port}/", b"{}", HEADERS)).status_code == 200
        assert len(connections) == 2
        await client.aclose()


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        (b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n", True),
        (b"HTTP/1.1 201 Created\r\nconnection: close\r\ncontent-length: 3\r\n\r\nabc", False),
        (b"HTTP/1.0 201 Created\r\n\r\nthe answer ends where the connection does", False),
    ],
    ids=["chunked", "informational-first", "connection-close", "close-delimited"],
)
async def test_reads_the_status_of_chunked_informational_and_closing_answers(answer: bytes, kept: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
            if not kept:
                return  # the server closes: the answer (or the connection) says so

    async with raw_server(handle) as (port, connections):
        client = Http11Client(timeout_s=5)
        for _ in range(2):
            assert (await client.post(f"http://127.0.0.1:{port}/x?y=1", b"{}", HEADERS)).status_code == 201
        # An answer of known length keeps the connection; one that ends with the connection does not.
        assert len(connections) == (1 if kept else 2)
        await client.aclose()


async def test_an_oversized_answer_gives_its_status_and_drops_the_connection() -> None:
    big = MAX_RESPONSE_BYTES * 4

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 500 Oops\r\ncontent-length: %d\r\n\r\n" % big + b"x" * big)
            await writer.drain()

    async with raw_server(handle) as (port, connections):
        client = Http11Client(timeout_s=5)
        for _ in range(2):
            assert (await client.post(f"http://127.0.0.1:{port}/", b"{}", HEADERS)).status_code == 500
        assert len(connections) == 2
        await client.aclose()


async def test_garbage_is_a_lost_connection_and_silence_a_timeout() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with raw_server(garbage) as (port, _):
        client = Http11Client(timeout_s=5)
        with pytest.raises(ConnectionLost, match="protocol error"):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", HEADERS)
        await client.aclose()

    async with silent_server() as port:
        client = Http11Client(timeout_s=0.3)
        with pytest.raises(TimeoutError):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", HEADERS)
        assert client._idle.get(("http", "127.0.0.1", port)) == []  # the unanswered connection is not kept
        await client.aclose()

    client = Http11Client(timeout_s=5)
    with pytest.raises(OSError):  # nothing listens there: refused
        await client.post(f"http://127.0.0.1:{free_port()}/", b"{}", HEADERS)


@pytest.mark.parametrize(
    "headers",
    [{"webhook-id": "msg_1\r\nx-injected: 1"}, {"bad name": "v"}, {"": "v"}, {"webhook-id": "消息"}],
    ids=["line-break-in-value", "space-in-name", "empty-name", "non-ascii-value"],
)
async def test_a_header_that_would_break_the_framing_is_refused_before_sending(headers: dict[str, str]) -> None:
    client = Http11Client(timeout_s=5)
    with pytest.raises(InvalidRequest):
        await client.post("http://127.0.0.1:9/hook", b"{}", headers)


async def test_a_path_goes_percent_encoded_where_a_request_line_cannot_carry_it() -> None:
    lines: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            lines.append((await read_request(reader)).split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with raw_server(handle) as (port, _):
        client = Http11Client(timeout_s=5)
        for path in ("/报警/a b?q=%E4&x=1", "/hook\x00x"):
            assert (await client.post(f"http://127.0.0.1:{port}{path}", b"{}", HEADERS)).status_code == 204
        await client.aclose()
    assert lines == [
        b"POST /%E6%8A%A5%E8%AD%A6/a%20b?q=%E4&x=1 HTTP/1.1",
        b"POST /hook%00x HTTP/1.1",
    ]


async def test_the_webhook_channel_gives_up_at_once_on_a_request_it_cannot_frame() -> None:
    sub = Subscription(
        id="sub_1",
        name="hook",
        channel=Channel.WEBHOOK,
        target="http://报警.example/hook",  # allow-listed, but not a name a request can carry as it is
        secret=new_secret(),
        filter=SubscriptionFilter(),
        created_at=datetime.now(UTC),
    )
    delivery = Delivery(id="msg_1", subscription_id="sub_1", alert_id="a1", kind="raised", body={}, attempt=1)
    sender = WebhookSender(HostPolicy([".example"]))
    with pytest.raises(DeliveryError) as failure:
        await sender.send(sub, delivery)
    assert failure.value.permanent
    assert "not a plain ASCII name" in str(failure.value)
