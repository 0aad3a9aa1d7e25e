"""The OmenDB Kubernetes operator (kopf)."""
