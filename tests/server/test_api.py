"""Every API endpoint against a real server process, with authentication on."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

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
    for bad in ("9223372036854775808", "-9223372036854775809", "1.5", "1e3", "١٢", "abc"):
        r = alice.get(f"/v1/records/{bad}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_key", bad
    assert httpx.get(f"{auth_server.url}/v1/records/12").status_code == 401
    assert 'route="/v1/records/{key}",status="200"' in httpx.get(auth_server.metrics_url).text


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_path_keys_are_plain_decimal(alice: httpx.Client, method: str) -> None:
    """int() would take "+5", " 5", "5 " and "1_000"; the API takes digits with an optional '-' only."""
    alice.post("/v1/records", json=records({500_005: 5.5}))
    for bad in ("+500005", "%2B500005", "%20500005", "500005%20", "%09500005", "500_005", "--500005", "-",
                "0x5", "500005.0", "%EF%BC%95"):
        r = alice.request(method, f"/v1/records/{bad}")
        assert r.status_code == 400, (bad, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_key" and "plain decimal" in error["message"], bad
    assert alice.get("/v1/records/500005").json() == {"key": 500_005, "value": 5.5}  # nothing was deleted
    assert alice.request(method, "/v1/records/-0").status_code in (200, 404)


def test_a_forged_cursor_cannot_leave_the_range(alice: httpx.Client) -> None:
    alice.post("/v1/records", json=records({k: float(k) for k in range(300_000, 300_020)}))
    params = {"start": 300_005, "end": 300_010, "limit": 2}
    page = alice.get("/v1/records", params=params).json()
    assert [rec["key"] for rec in page["records"]] == [300_005, 300_006]
    cursor = page["next_cursor"]
    # The old cursor was the next key alone (8 bytes): any key could be written into it.
    old_style = base64.urlsafe_b64encode(struct.pack(">q", 300_015)).rstrip(b"=").decode()
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[-8:] = struct.pack(">q", 300_015)  # same start/end, next key past the end
    past_end = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    raw[-8:] = struct.pack(">q", 300_000)  # before the start
    before_start = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for forged in (old_style, past_end, before_start):
        # With the scan's start/end, with end only (as omendb.client pages), or with the cursor alone.
        for bounds in (params, {"end": 300_010, "limit": 2}, {"limit": 2}):
            r = alice.get("/v1/records", params={**bounds, "cursor": forged})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor", (bounds, r.text)
    # A real cursor with other start/end is refused, naming the scan it belongs to.
    r = alice.get("/v1/records", params={"start": 300_000, "end": 300_020, "cursor": cursor})
    assert r.status_code == 400 and "start=300005, end=300010" in r.json()["error"]["message"]
    for bounds in (params, {"end": 300_010, "limit": 2}, {"limit": 2}):
        rest = alice.get("/v1/records", params={**bounds, "cursor": cursor}).json()
        assert [rec["key"] for rec in rest["records"]] == [300_007, 300_008]


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
    assert alice.get("/v1/records/abc").status_code == 400
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
    big = b'{"username": "' + b"a" * 1_200_000 + b'", "password": "x"}'
    r = alice.post("/auth/login", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_mb = 1" in r.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"username": "'
        for _ in range(60):
            yield b"a" * 20_000
        yield b'", "password": "x"}'

    r = alice.post("/auth/login", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("path", ["/v1/records", "/v1/records/lookup", "/v1/records/delete"])
def test_batch_bodies_are_bounded_by_the_batch_limit(alice: httpx.Client, path: str) -> None:
    """A body no batch of max_insert_batch_size = 1000 items can fill (1000 x 128 bytes + 64 KiB) is a
    413 batch_too_large before it is parsed, with or without Content-Length, even under max_body_mb."""
    item = b'{"key": 1, "value": 1.0},' if path == "/v1/records" else b"1,"
    field = b"records" if path == "/v1/records" else b"keys"
    body = b'{"' + field + b'": [' + item * (400_000 // len(item)) + item[:-1] + b"]}"
    assert len(body) < 2**20  # under max_body_mb

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 16_384):
            yield body[i:i + 16_384]

    for content in (body, chunks()):
        r = alice.post(path, content=content, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["code"] == "batch_too_large" and "max_insert_batch_size = 1000" in error["message"]
    assert alice.post("/v1/records/lookup", json={"keys": list(range(1000))}).status_code == 200


def _json_body_operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method, op in ops.items()
            if "application/json" in op.get("requestBody", {}).get("content", {})]


def test_invalid_json_is_one_status_and_shape_on_every_route(admin: httpx.Client, auth_server: Server) -> None:
    """Every route taking a JSON body, as listed in the served OpenAPI document (so a new route is
    covered without editing this test), answers a body that is not JSON the same way."""
    operations = _json_body_operations(httpx.get(f"{auth_server.url}/openapi.json").json())
    assert {("POST", "/v1/records"), ("POST", "/v1/records/lookup"), ("POST", "/auth/login"),
            ("POST", "/admin/wal/archived"), ("POST", "/admin/follow")} <= set(operations)
    # Truncated, a NaN literal (json.loads takes it), not UTF-8 (FastAPI's parser answered a bare 400),
    # two documents, a trailing comma.
    invalid = [b'{"keys": [1,', b"NaN", b'{"lsn": "\xff"}', b"\xff\xfe", b'{"a": 1} {"b": 2}', b"[1, 2,]"]
    for method, path in operations:
        for body in [*invalid, *([b""] if path != "/auth/login" else [])]:  # login's body is optional
            r = admin.request(method, path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, (path, body, r.text)
            assert r.headers["content-type"] == "application/json"
            assert list(r.json()) == ["error"] and set(r.json()["error"]) == {"code", "message"}
            error = r.json()["error"]
            assert error["code"] == "invalid_request", (path, body, error)
            assert error["message"].startswith("the body is not valid JSON ("), (path, body, error)
    assert admin.get("/v1/records/-1").status_code == 404  # nothing was written


def test_openapi_gives_exact_int64_bounds(auth_server: Server) -> None:
    spec = json.loads(httpx.get(f"{auth_server.url}/openapi.json").content)  # Python keeps big ints exact
    schemas = spec["components"]["schemas"]
    keys = [schemas["Record"]["properties"]["key"], schemas["MaybeRecord"]["properties"]["key"],
            schemas["KeysRequest"]["properties"]["keys"]["items"]]
    keys += [p["schema"] for p in spec["paths"]["/v1/records/{key}"]["get"]["parameters"]]
    for schema in keys:
        assert schema["type"] == "integer"
        assert type(schema["minimum"]) is int and schema["minimum"] == -9223372036854775808, schema
        assert type(schema["maximum"]) is int and schema["maximum"] == 9223372036854775807, schema
    text = httpx.get(f"{auth_server.url}/openapi.json").text
    assert "e+18" not in text and "9223372036854775807" in text

    def integer_bounds(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                yield from (node[b] for b in ("minimum", "maximum") if b in node)
            for value in node.values():
                yield from integer_bounds(value)
        elif isinstance(node, list):
            for value in node:
                yield from integer_bounds(value)

    assert all(type(bound) is int for bound in integer_bounds(spec))


def test_wal_archived_takes_integers_only(admin: httpx.Client) -> None:
    admin.post("/v1/records", json=records({400_000: 1.0}))
    for lsn in (True, False, "1", 1.0, None, -1):
        r = admin.post("/admin/wal/archived", json={"lsn": lsn})
        assert r.status_code == 422, (lsn, r.text)
        assert r.json()["error"]["code"] == "invalid_request" and "lsn" in r.json()["error"]["message"]
    r = admin.post("/admin/wal/archived", json={"lsn": 1})
    assert r.status_code == 200 and r.json() == {"archived_lsn": 1}


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
