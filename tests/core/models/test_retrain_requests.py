"""Many askers at once (threads here, processes in tests/deploy) share one pending request."""

import asyncio
from pathlib import Path

from core.wiring import Core
from migrations import upgrade_schema
from tests.conftest import make_settings


async def test_concurrent_askers_share_one_pending_request(db_url: str, tmp_path: Path):
    core = Core(make_settings(tmp_path, db_url))
    upgrade_schema(core.engine)
    try:
        tickets = await asyncio.gather(
            *(core.retrain_requests.request(requested_by=f"asker-{n}") for n in range(24))
        )
        assert len({ticket.request.id for ticket in tickets}) == 1
        assert [ticket.new for ticket in tickets].count(True) == 1
        assert core.retrain_requests.next_pending() is not None
    finally:
        core.engine.dispose()
