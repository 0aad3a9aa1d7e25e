"""The e2e tier: a real one-node Kubernetes cluster built from pinned upstream parts (docs/e2e.md)."""
