"""schemathesis against the app's own OpenAPI: no 5xx, no answer that contradicts the schema.

Driven through schemathesis's Python API (an operation's case strategy under hypothesis): its
pytest fixture loader does not run on pytest 9.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from core.store.tables import ClientRole
from core.wiring import Core
from tests.api.conftest import issue
from tests.api.test_errors import PUBLIC

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), sorted(PUBLIC), ids=lambda part: part)
def test_every_endpoint_keeps_to_its_schema(core: Core, method: str, path: str):
    core.settings.api.rate_limit = "100000/second"
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(core))
    operation = schema[path][method.upper()]
    headers = issue(core, "fuzzer", ClientRole.ADMIN).headers
    calls = []

    has_input = any(
        len(part) for part in (operation.path_parameters, operation.headers, operation.query)
    ) or bool(list(operation.body))
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_input else [])
    for mode in modes:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=10,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def keeps_to_the_schema(case):
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            calls.append(response.status_code)

        keeps_to_the_schema()
    assert calls  # something was sent
