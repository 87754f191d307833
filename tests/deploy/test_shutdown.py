"""``waimai api`` stopped with SIGTERM, as a container runtime or systemd stops it: it refuses
new connections at once, answers the requests in flight in full and exits 0; a request still
unfinished after API__SHUTDOWN_TIMEOUT_S is cut off, so that the process does exit.

A request is held in flight deterministically: it is sent with ``Expect: 100-continue`` and
half its body. uvicorn answers ``100 Continue`` only once the app reads the body, so when the
client has that line the server is known to be in the middle of the request; the SIGTERM is sent
then, and the rest of the body after it.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from core.store.tables import Review
from core.wiring import Core
from tests.api.conftest import issue
from tests.deploy.processes import Service, Services, environment, supervised


@dataclass
class Held:
    """A POST /v1/classify of which the server has the headers and half the body."""

    sock: socket.socket
    body: bytes
    reviews: int

    def finish(self) -> tuple[int, dict[str, str], bytes]:
        """Send the rest of the body; the status, headers and body of the answer."""
        self.sock.sendall(self.body[len(self.body) // 2 :])
        return read_response(self.sock)


def hold(api: Service, key: str, reviews: int) -> Held:
    body = json.dumps(
        {"reviews": [{"text": f"第{i}条：送得快，很好吃"} for i in range(reviews)]},
        ensure_ascii=False,
    ).encode()
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    head = (
        "POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    sock.sendall(head.encode())
    interim = b""
    while not interim.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"the server closed the connection after {interim!r}"
        interim += byte
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body[: len(body) // 2])
    return Held(sock, body, reviews)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The whole answer, read until the server closes the connection (status 0: no answer)."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        return 0, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def start_api(services: Services, core: Core, root: Path, timeout_s: int) -> Service:
    env = environment(root, core.settings.db.url, API__SHUTDOWN_TIMEOUT_S=str(timeout_s))
    api = services.api("api", env)
    services.wait_ready(api)
    return api


def reviews_stored(core: Core) -> int:
    with Session(core.engine) as session:
        return session.exec(select(func.count()).where(Review.tenant == "shop")).one()


@pytest.mark.slow
def test_sigterm_refuses_new_connections_and_lets_requests_in_flight_finish(
    core: Core, tmp_path: Path
):
    key = issue(core, "shop").key
    with supervised(tmp_path) as services:
        api = start_api(services, core, tmp_path, timeout_s=30)
        held = [hold(api, key, reviews) for reviews in (1, 64, 256)]
        api.process.send_signal(signal.SIGTERM)
        services.wait_until(lambda: refuses_connections(api.port), "refusing connections", 10)

        for request in held:
            status, headers, body = request.finish()
            assert status == 200, body
            assert headers["connection"] == "close"
            assert len(body) == int(headers["content-length"])
            assert len(json.loads(body)["results"]) == request.reviews
        assert api.process.wait(timeout=20) == 0, api.output()
    assert reviews_stored(core) == 1 + 64 + 256


@pytest.mark.slow
def test_a_request_unfinished_after_the_shutdown_timeout_is_cut_off(core: Core, tmp_path: Path):
    key = issue(core, "shop").key
    with supervised(tmp_path) as services:
        api = start_api(services, core, tmp_path, timeout_s=1)
        held = hold(api, key, 8)
        started = time.monotonic()
        api.process.send_signal(signal.SIGTERM)
        assert api.process.wait(timeout=20) == 0, api.output()
        assert 1 <= time.monotonic() - started < 15
        status, _, _ = read_response(held.sock)
        assert status != 200
    assert reviews_stored(core) == 0
    assert "timeout graceful shutdown exceeded" in api.output()
