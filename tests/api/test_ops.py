"""The ops port of the worker and of a polling bot, served for real on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from api.ops import serve_ops
from core.classify.service import ReviewInput
from core.errors import StoreUnavailable
from core.store.tables import Source
from core.wiring import Core
from tests.support.loopback import free_port


async def test_health_readiness_and_the_cores_metrics_until_stopped(core: Core):
    ready = True

    async def readiness() -> dict[str, Any]:
        if not ready:
            raise StoreUnavailable("the store cannot be reached")
        return {"leader": True}

    port, stop = free_port(), asyncio.Event()
    serving = asyncio.create_task(serve_ops(core, "worker", port, readiness, stop))
    await core.classification.classify([ReviewInput("好吃")], source=Source.TELEGRAM)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(100):
            try:
                health = await http.get("/healthz")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.05)
        assert health.json() == {"status": "ok", "process": "worker"}
        assert (await http.get("/readyz")).json() == {
            "status": "ready",
            "process": "worker",
            "leader": True,
        }
        ready = False
        refused = await http.get("/readyz")
        assert refused.status_code == 503
        assert refused.json()["error"] == "the store cannot be reached"
        metrics = (await http.get("/metrics")).text
        assert 'waimai_predictions_total{backend="local",channel="telegram"' in metrics
    stop.set()
    await asyncio.wait_for(serving, 10)


async def test_port_zero_serves_nothing(core: Core):
    async def readiness() -> dict[str, Any]:
        return {}

    await asyncio.wait_for(serve_ops(core, "bot", 0, readiness, asyncio.Event()), 1)


async def test_a_taken_port_is_logged_and_the_process_goes_on(core: Core, caplog):
    async def readiness() -> dict[str, Any]:
        return {}

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        await asyncio.wait_for(serve_ops(core, "worker", port, readiness, asyncio.Event()), 5)
    assert f"the worker's ops port 127.0.0.1:{port} is not served" in caplog.text
