import time

import pytest

from api.auth import RateLimit
from core.errors import RateLimited


def test_a_bucket_allows_a_burst_then_refills_at_the_rate():
    limit = RateLimit("5/second")
    for _ in range(5):
        limit.check("acme")
    with pytest.raises(RateLimited) as refused:
        limit.check("acme")
    assert refused.value.retry_after_s == 1
    limit.check("globex")  # every key has its own bucket
    time.sleep(0.25)  # at least 1.25 tokens back
    limit.check("acme")


def test_retry_after_tells_how_long_until_one_request_is_allowed():
    limit = RateLimit("2/minute")
    limit.check("acme")
    limit.check("acme")
    with pytest.raises(RateLimited) as refused:
        limit.check("acme")
    assert 29 <= refused.value.retry_after_s <= 30
