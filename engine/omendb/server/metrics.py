"""Prometheus metrics, with the operations guide's names exactly, served on their own port.

Request-path metrics (durations, counts, failures) are updated by the handlers; single-key reads add to
lock-free tallies (tallies.py) that the registry folds into the same metrics when it is collected.
Engine-level figures
(memory, WAL and index sizes, records, LSN, retrains) are read from ``db.stats()`` at scrape time by a
custom collector, so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

import logging
import platform
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import omendb
from omendb.memory import process_rss_bytes
from omendb.server.tallies import CounterTally, HistogramTally, LabelledTallies

log = logging.getLogger("omendb.metrics")

# Sub-millisecond to tens of seconds: point reads are ~100 µs, large scans and batches seconds.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            5.0, 10.0, 30.0)


class _EngineCollector(Collector):
    """Gauges and counters taken from the engine's own stats when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], dict[str, Any] | None], connections: Callable[[], int]) -> None:
        self._stats = stats
        self._connections = connections

    def collect(self) -> Iterable[Any]:
        yield GaugeMetricFamily("omendb_active_connections", "Open client connections on the API port.",
                                value=self._connections())
        try:
            stats = self._stats()
        except Exception as exc:  # a scrape must never fail because the engine is busy or closing
            log.warning("metrics: could not read engine stats", extra={"error": str(exc)})
            stats = None
        # The process's resident memory, what the container limit and the OOM killer count: it is what
        # HighMemoryUsage divides by the limit, so the alert fires before an OOMKill (the engine's own
        # accounting, below, leaves out the interpreter, libraries, buffers and fragmentation).
        yield GaugeMetricFamily("omendb_memory_usage_bytes", "Resident memory of the server process (RSS).",
                                value=process_rss_bytes())
        ready = stats is not None
        yield GaugeMetricFamily("omendb_ready", "1 when the database is open and serving.", value=int(ready))
        if stats is None:
            return
        gauges = [
            ("omendb_engine_memory_bytes", "Memory the engine accounts for: record arrays, index models and "
                                           "the delta (what a write is checked against).", "memory_usage_bytes"),
            ("omendb_memory_limit_bytes", "Effective memory limit: the lowest of [database] max_memory_mb, "
                                          "[limits] memory_limit_mb and the container's cgroup limit.",
             "memory_limit_bytes"),
            ("omendb_wal_size_bytes", "Bytes of write-ahead log on disk.", "wal_size_bytes"),
            ("omendb_index_size_bytes", "Bytes held by the learned index models.", "index_size_bytes"),
            ("omendb_records", "Records in the database.", "records"),
            ("omendb_lsn", "Log sequence number of the last committed write.", "lsn"),
            ("omendb_checkpoint_lsn", "Log sequence number covered by the last checkpoint.",
             "checkpoint_lsn"),
            ("omendb_delta_records", "Records written since the index was last trained.", "delta_size"),
            ("omendb_wal_storage_full", "1 while the WAL volume is full (bytes or inodes) and writes get "
                                        "507; 0 once space is freed.", "wal_storage_full"),
        ]
        for name, doc, key in gauges:
            if key in stats:
                yield GaugeMetricFamily(name, doc, value=float(stats[key]))
        if "retrains_total" in stats:
            yield CounterMetricFamily("omendb_index_retrains", "Learned index retrains completed.",
                                      value=float(stats["retrains_total"]))
        if "retrain_seconds_total" in stats:
            yield CounterMetricFamily("omendb_index_retrain_seconds", "Time spent retraining the index.",
                                      value=float(stats["retrain_seconds_total"]))


class _FoldingRegistry(CollectorRegistry):
    """A registry that first folds the hot path's tallies (tallies.py) into their metrics, whenever it is
    collected: a scrape shows every update made before it."""

    def __init__(self) -> None:
        super().__init__(auto_describe=True)
        self.tallies: list[Any] = []  # objects with fold(), added by Metrics.tally_*
        self._fold_lock = threading.Lock()

    def fold(self) -> None:
        with self._fold_lock:  # two scrapes at once must not fold the same part twice
            for tally in self.tallies:
                tally.fold()

    def collect(self) -> Iterable[Any]:
        self.fold()
        yield from super().collect()

    def restricted_registry(self, names: Iterable[str]) -> Any:  # /metrics?name[]=...
        self.fold()
        return super().restricted_registry(names)


class Metrics:
    """Every metric of one server, in its own registry (tests can run several servers in one process)."""

    def __init__(self) -> None:
        self.registry = _FoldingRegistry()
        r = self.registry
        self.query_duration = Histogram("omendb_query_duration_seconds", "Time to answer a read "
                                        "(get, batch lookup, range scan).", ["operation"], buckets=_BUCKETS,
                                        registry=r)
        self.searches = Counter("omendb_searches", "Read requests answered.", ["operation"], registry=r)
        self.search_failures = Counter("omendb_search_failures", "Read requests that failed.", ["operation"],
                                       registry=r)
        self.insert_duration = Histogram("omendb_insert_duration_seconds", "Time to durably apply a write "
                                         "batch (upsert or delete).", ["operation"], buckets=_BUCKETS,
                                         registry=r)
        self.inserts = Counter("omendb_inserts", "Records written (upserted or deleted).", ["operation"],
                               registry=r)
        self.insert_failures = Counter("omendb_insert_failures", "Write requests that failed.", ["operation"],
                                       registry=r)
        self.auth_failures = Counter("omendb_auth_failures", "Requests refused by authentication (401) or "
                                     "authorization (403).", ["reason"], registry=r)
        self.auth_throttled = Counter("omendb_auth_throttled", "Password checks refused with 429 because the "
                                      "user name or the client address had too many wrong passwords.",
                                      ["scope"], registry=r)
        self.requests = Counter("omendb_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=r)
        self.rejected = Counter("omendb_rejected_requests", "Requests refused by a limit.", ["limit"],
                                registry=r)
        self.connections_closed = Counter("omendb_http_connections_closed", "API connections the server "
                                          "closed: timeouts ([http] *_timeout_ms) and idle connections "
                                          "evicted for a new one at [limits] max_connections.", ["reason"],
                                          registry=r)
        for reason in ("first_request_timeout", "header_timeout", "body_timeout", "idle_timeout", "evicted"):
            self.connections_closed.labels(reason)  # present at 0, so rate() and alerts work from the start
        self.build_info = Gauge("omendb_build_info", "Version of the running server.",
                                ["version", "python"], registry=r)
        self.build_info.labels(omendb.__version__, platform.python_version()).set(1)
        self._server: Any = None

    def tally_counter(self, child: Any) -> CounterTally:
        """A lock-free stand-in for ``child.inc()`` on the event loop (tallies.py)."""
        tally = CounterTally(child)
        self.registry.tallies.append(tally)
        return tally

    def tally_histogram(self, child: Any) -> HistogramTally:
        """A lock-free stand-in for ``child.observe()`` on the event loop (tallies.py)."""
        tally = HistogramTally(child)
        self.registry.tallies.append(tally)
        return tally

    def tally_labelled(self, make: Callable[[Any], Any]) -> LabelledTallies:
        """Lock-free counters by one label value: ``make(value)`` gives the Counter child (tallies.py)."""
        tallies = LabelledTallies(make)
        self.registry.tallies.append(tallies)
        return tallies

    def watch_engine(self, stats: Callable[[], dict[str, Any] | None],
                     connections: Callable[[], int]) -> None:
        self.registry.register(_EngineCollector(stats, connections))

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics from a background thread, apart from the API (no auth, no API limits)."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
