"""The server's own frame limit follows MAX_FRAME_BYTES, under uvicorn and daphne alike.

The service closes a socket with 4413 for a frame over ``MAX_FRAME_BYTES``, but only once
the server has read the whole frame: without a server limit, uvicorn reads frames of up to
16 MiB (daphne 1 MiB) into memory first. Run as documented (``make serve``, README,
docs/operations.md), the server refuses a frame far over the limit from its header alone.
"""

import asyncio
import base64
import json
import os
import socket
import struct
from urllib.parse import urlparse

import pytest
import websockets

from tests.live.servers import serve, until

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]

MAX_FRAME_BYTES = 65536


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"limits-{request.param}")
    with serve(tmp, server=request.param, MAX_FRAME_BYTES=str(MAX_FRAME_BYTES)) as srv:
        srv.name = request.param
        yield srv


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked frame from the server: (opcode, payload)."""
    first, second = _recv_exactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _recv_exactly(sock, 8))
    return first & 0x0F, _recv_exactly(sock, length)


def _open_raw_socket(server, session: dict) -> socket.socket:
    """A WebSocket handshake by hand, so that the test controls every byte it sends."""
    url = urlparse(server.ws_url(session))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    opcode, payload = _read_frame(sock)
    assert opcode == 1 and json.loads(payload)["type"] == "session.ready"
    return sock


def _refusal(sock: socket.socket) -> int | str:
    """The close code the server sends, or ``"dropped"`` if it drops the connection.

    Uvicorn closes with 1009 (message too big). Daphne (autobahn, ``failByDrop``) drops the
    TCP connection without a close frame, which a client reads as 1006. A server still waiting
    for the payload raises ``TimeoutError`` here.
    """
    try:
        while True:
            opcode, payload = _read_frame(sock)
            if opcode == 8:
                return struct.unpack("!H", payload[:2])[0]
    except ConnectionError:
        return "dropped"


def test_a_1_mib_frame_is_refused_by_the_server_from_its_header_alone(server):
    sock = _open_raw_socket(server, server.create_session("frame-limit"))
    try:
        # Only the header of a masked binary frame of 1 MiB, none of its payload: a server
        # that waited to read the frame whole would never answer.
        sock.sendall(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 20) + os.urandom(4))
        assert _refusal(sock) == (1009 if server.name == "uvicorn" else "dropped")
    finally:
        sock.close()


async def test_a_frame_of_exactly_max_frame_bytes_is_accepted(server):
    session = server.create_session("frame-exact")
    async with websockets.connect(server.ws_url(session)) as ws:
        await ws.recv()
        await ws.send(b"\x00" * MAX_FRAME_BYTES)  # 2 s of silence, PCM16 at 16 kHz
        await ws.send(json.dumps({"type": "ping"}))
        await until(ws, lambda event: event["type"] == "pong")


async def test_a_frame_a_little_over_max_frame_bytes_still_gets_the_services_4413(server):
    session = server.create_session("frame-over")
    async with websockets.connect(server.ws_url(session)) as ws:
        await ws.recv()
        await ws.send(b"\x00" * (MAX_FRAME_BYTES + 2))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 4413
