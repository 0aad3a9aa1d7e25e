"""Every API endpoint against a real server process, with authentication on."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import PASSWORDS
from tests.server.harness import Server


@pytest.fixture
def admin(auth_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as client:
        yield client


@pytest.fixture
def alice(auth_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth_server.url, auth=("alice", PASSWORDS["alice"]), timeout=30) as client:
        yield client


def records(pairs: dict[int, float]) -> dict[str, list[dict[str, float]]]:
    return {"records": [{"key": k, "value": v} for k, v in pairs.items()]}


def test_upsert_then_get_lookup_and_delete(alice: httpx.Client) -> None:
    r = alice.post("/v1/records", json=records({10: 1.5, 11: -2.0, 2**63 - 1: 7.0, -(2**63): 8.0}))
    assert r.status_code == 200, r.text
    first_lsn = r.json()["lsn"]
    assert r.json()["count"] == 4

    assert alice.get("/v1/records/10").json() == {"key": 10, "value": 1.5}
    assert alice.get(f"/v1/records/{2**63 - 1}").json()["value"] == 7.0
    missing = alice.get("/v1/records/12")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"

    r = alice.post("/v1/records", json=records({10: 3.25}))
    assert r.json()["lsn"] == first_lsn + 1
    found = alice.post("/v1/records/lookup", json={"keys": [10, 12, 11]}).json()
    assert found == {"records": [{"key": 10, "value": 3.25}, {"key": 12, "value": None},
                                 {"key": 11, "value": -2.0}]}

    assert alice.delete("/v1/records/10").status_code == 200
    assert alice.get("/v1/records/10").status_code == 404
    r = alice.post("/v1/records/delete", json={"keys": [11, 999]})
    assert r.status_code == 200 and r.json()["count"] == 2
    assert alice.post("/v1/records/lookup", json={"keys": [11]}).json()["records"][0]["value"] is None


def test_point_read_path_forms(alice: httpx.Client, auth_server: Server) -> None:
    alice.post("/v1/records", json=records({-5: 0.5, 12: 1.25}))
    assert alice.get("/v1/records/-5").json() == {"key": -5, "value": 0.5}
    assert alice.get("/v1/records/00012").json() == {"key": 12, "value": 1.25}
    assert alice.get("/v1/records/%31%32").json() == {"key": 12, "value": 1.25}
    for bad in ("9223372036854775808", "-9223372036854775809", "1.5", "1e3", "١٢"):
        r = alice.get(f"/v1/records/{bad}")
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", bad
    assert httpx.get(f"{auth_server.url}/v1/records/12").status_code == 401
    assert 'route="/v1/records/{key}",status="200"' in httpx.get(auth_server.metrics_url).text


def test_range_scan_pages_with_a_cursor(alice: httpx.Client) -> None:
    keys = list(range(100_000, 100_000 + 3 * 347, 3))
    for start in range(0, len(keys), 1000):
        batch = keys[start:start + 1000]
        assert alice.post("/v1/records", json=records({k: k / 2 for k in batch})).status_code == 200
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"start": 100_000, "end": 100_000 + 3 * 347, "limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = alice.get("/v1/records", params=params).json()
        pages += 1
        seen += [rec["key"] for rec in page["records"]]
        assert all(rec["value"] == rec["key"] / 2 for rec in page["records"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == keys
    assert pages == 4
    # Default page size is [performance] prefetch_size (50 in this server).
    assert len(alice.get("/v1/records", params={"start": 100_000}).json()["records"]) == 50
    # An empty or inverted range is an empty page, not an error.
    assert alice.get("/v1/records", params={"start": 5, "end": 5}).json() == {"records": [],
                                                                             "next_cursor": None}


def test_stats_report_count_lsn_role_and_sizes(alice: httpx.Client) -> None:
    alice.post("/v1/records", json=records({1: 1.0}))
    stats = alice.get("/v1/stats").json()
    for key in ("records", "lsn", "checkpoint_lsn", "memory_usage_bytes", "memory_limit_bytes",
                "wal_size_bytes", "index_size_bytes", "delta_size", "retrains_total"):
        assert key in stats, key
    assert stats["role"] == "primary"
    assert stats["database"] == "test"
    assert stats["records"] >= 1 and stats["lsn"] >= 1


@pytest.mark.parametrize("body, fragment", [
    ({"records": [{"key": "one", "value": 1.0}]}, "records.0.key"),
    ({"records": [{"key": 2**63, "value": 1.0}]}, "less than or equal to 9223372036854775807"),
    ({"records": [{"key": 1, "value": "NaN"}]}, "records.0.value: Input should be a valid number"),
    ({"records": [{"key": "1", "value": 1.0}]}, "records.0.key: Input should be a valid integer"),
    ({"records": [{"key": True, "value": 1.0}]}, "records.0.key: Input should be a valid integer"),
    ({"records": [{"key": 1.5, "value": 1.0}]}, "records.0.key: Input should be a valid integer"),
    ({"records": [{"key": 1}]}, "records.0.value: Field required"),
    ({"records": [{"key": 1, "value": 1.0, "extra": 1}]}, "Extra inputs are not permitted"),
    ({"record": []}, "record"),
    ({"records": []}, "no records given"),
])
def test_bad_input_is_a_4xx_naming_the_problem(alice: httpx.Client, body: object, fragment: str) -> None:
    r = alice.post("/v1/records", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert fragment in error["message"]


def test_non_json_and_nan_literals_are_refused(alice: httpx.Client) -> None:
    r = alice.post("/v1/records", content=b"key=1&value=2", headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["error"]["message"]
    r = alice.post("/v1/records", content=b'{"records": [{"key": 1, "value": NaN}]}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = alice.post("/v1/records", content=b'{"records": [{"key": 1, "value": 1e400}]}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and "infinity" in r.json()["error"]["message"]
    r = alice.post("/v1/records", content=b'{"records": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    assert alice.get("/v1/records/abc").status_code == 422
    assert alice.get("/v1/records", params={"cursor": "!!"}).json()["error"]["code"] == "invalid_cursor"
    assert alice.get("/v1/records", params={"limit": 0}).status_code == 422
    r = alice.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert alice.put("/v1/stats").json()["error"]["code"] == "method_not_allowed"


def test_batch_limit_is_a_413_naming_the_key(alice: httpx.Client) -> None:
    too_many = records({k: 0.0 for k in range(1001)})
    r = alice.post("/v1/records", json=too_many)
    assert r.status_code == 413
    assert "max_insert_batch_size = 1000" in r.json()["error"]["message"]
    r = alice.post("/v1/records/lookup", json={"keys": list(range(1001))})
    assert r.status_code == 413
    # Nothing of the refused batch was applied.
    assert alice.get("/v1/records/1000").status_code == 404


def test_body_size_limit(alice: httpx.Client) -> None:
    big = b'{"keys": [' + b"1," * 600_000 + b"1]}"
    r = alice.post("/v1/records/lookup", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_mb = 1" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"keys": ['
        for _ in range(60):
            yield b"1," * 10_000
        yield b"1]}"

    r = alice.post("/v1/records/lookup", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_values_round_trip_exactly(alice: httpx.Client) -> None:
    values = {20: math.pi, 21: -0.0, 22: 1e308, 23: 5e-324, 24: 123456789.123456789}
    alice.post("/v1/records", json=records(values))
    got = alice.post("/v1/records/lookup", json={"keys": list(values)}).json()["records"]
    assert {rec["key"]: rec["value"] for rec in got} == values


def test_openapi_and_docs_are_served(auth_server: Server) -> None:
    spec = httpx.get(f"{auth_server.url}/openapi.json").json()
    for path in ("/v1/records", "/v1/records/{key}", "/v1/records/lookup", "/v1/records/delete", "/v1/stats",
                 "/auth/login", "/health", "/ready", "/admin/retrain-index", "/admin/rebuild-index",
                 "/admin/index-stats", "/admin/checkpoint"):
        assert path in spec["paths"], path
    assert "swagger" in httpx.get(f"{auth_server.url}/docs").text.lower()


def test_admin_endpoints(admin: httpx.Client, alice: httpx.Client) -> None:
    admin.post("/v1/records", json=records({k: float(k) for k in range(500)}))
    for path in ("/admin/retrain-index", "/admin/rebuild-index", "/admin/checkpoint"):
        r = admin.post(path)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["status"] == "ok"
    stats = admin.get("/admin/index-stats")
    assert stats.status_code == 200 and isinstance(stats.json(), dict)
    assert admin.get("/v1/stats").json()["checkpoint_lsn"] >= 1
    for path in ("/admin/retrain-index", "/admin/checkpoint"):
        r = alice.post(path)
        assert r.status_code == 403 and "admin_users" in r.json()["error"]["message"]


def test_probes_and_metrics_need_no_auth(auth_server: Server) -> None:
    assert httpx.get(f"{auth_server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{auth_server.url}/ready").status_code == 200
    assert httpx.get(f"{auth_server.url}/v1/stats").status_code == 401
    assert httpx.get(auth_server.metrics_url).status_code == 200


def test_metrics_have_the_guides_names(alice: httpx.Client, auth_server: Server) -> None:
    alice.post("/v1/records", json=records({1: 1.0}))
    alice.get("/v1/records/1")
    alice.post("/v1/records/lookup", json={"keys": [1]})
    alice.get("/v1/records", params={"limit": 1})
    text = httpx.get(auth_server.metrics_url).text
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
    for name in ("omendb_query_duration_seconds_bucket", "omendb_searches_total",
                 "omendb_search_failures_total", "omendb_insert_duration_seconds_bucket",
                 "omendb_inserts_total", "omendb_insert_failures_total",
                 "omendb_memory_usage_bytes", "omendb_memory_limit_bytes", "omendb_active_connections",
                 "omendb_wal_size_bytes", "omendb_index_size_bytes", "omendb_build_info", "omendb_records",
                 "omendb_lsn", "omendb_index_retrains_total", "omendb_index_retrain_seconds_total",
                 "omendb_auth_failures_total"):
        assert name in samples, name
    limit = [line for line in text.splitlines() if line.startswith("omendb_memory_limit_bytes ")]
    assert float(limit[0].split()[1]) == 512 * 1024 * 1024


def test_access_log_lines_are_json_with_the_request_fields(alice: httpx.Client, auth_server: Server) -> None:
    alice.get("/v1/records/1", headers={"X-Request-ID": "trace-me-42"})
    line = auth_server.wait_for_log(lambda r: r.get("request_id") == "trace-me-42")
    assert line["logger"] == "omendb.access"
    assert line["method"] == "GET" and line["path"] == "/v1/records/1" and line["user"] == "alice"
    assert line["status"] in (200, 404) and isinstance(line["duration_ms"], float)
    # Every line of the log is one JSON object (what `jq` needs).
    for raw in auth_server.log_text().splitlines():
        json.loads(raw)
