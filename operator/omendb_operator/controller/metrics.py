"""The operator's own Prometheus metrics (served on the operator's metrics port, not the engine's)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("omendb_operator_reconciles_total", "Reconciles of OmenDB resources, by result.",
                     ["result"])
RECONCILE_ERRORS = Counter("omendb_operator_reconcile_errors_total",
                           "Reconciles that failed, by the kind of error.", ["error"])
RECONCILE_DURATION = Histogram("omendb_operator_reconcile_duration_seconds",
                               "Time to reconcile one OmenDB.",
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
API_WRITES = Counter("omendb_operator_api_writes_total",
                     "Write calls the operator made to the Kubernetes API, by kind and verb.",
                     ["kind", "verb"])
API_READS = Counter("omendb_operator_api_reads_total",
                    "Read calls the operator made to the Kubernetes API (get, list, discovery), by kind and verb.",
                    ["kind", "verb"])
MANAGED = Gauge("omendb_operator_managed_omendbs", "OmenDB resources this operator reconciles.")
LEADER = Gauge("omendb_operator_active", "1 while this operator instance is the active peer.")
