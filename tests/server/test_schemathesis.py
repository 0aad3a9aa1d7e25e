"""Property-based requests over the server's own /openapi.json: no input makes it answer 5xx, and every
response matches the documented schema and status codes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from tests.server.harness import Server

DONE = "/schemathesis-is-done"  # the path of the request sent after the fuzzing


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("schemathesis"), {"limits": {"max_insert_batch_size": 500}})
    with server:
        server.start()
        yield server


@pytest.fixture(scope="module")
def api_schema(api_server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


def test_no_input_causes_a_server_error(api_schema: schemathesis.BaseSchema, api_server: Server) -> None:
    # Driven through hypothesis directly: schemathesis' pytest plugin does not support this pytest.
    # POST /admin/follow turns the server into a replica of whatever URL it is given (fuzzed host names
    # would be looked up off loopback); tests/replication covers it, including its input validation.
    operations = [op for op in (result.ok() for result in api_schema.get_all_operations())
                  if op.path != "/admin/follow"]
    before = len(api_server.log_records())  # startup lines and readiness polls
    assert len(operations) >= 14
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error, status_code_conformance,
                                           response_schema_conformance], timeout=30)

        check()

    # Access lines reach the log in batches (every 0.25 s, logs.AccessLog): one more request, and its line,
    # written after all of schemathesis' in order, says they are all there.
    httpx.get(f"{api_server.url}{DONE}", timeout=10)
    api_server.wait_for_log(lambda r: r.get("path") == DONE)
    statuses = [r["status"] for r in api_server.log_records()[before:]
                if r.get("logger") == "omendb.access" and r.get("path") != DONE]
    assert len(statuses) >= 10 * len(operations), "schemathesis sent fewer requests than expected"
    assert not [s for s in statuses if s >= 500]
    assert {200, 404, 422} <= set(statuses)
