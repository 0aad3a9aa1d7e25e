# OmenDB Operator — developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PACKAGES := engine/omendb operator/omendb_operator

.PHONY: venv lint test test-fast scanners scan bench bench-engine bench-http bench-backup bench-client bench-failover bench-scale bench-nodes lock clean

# The virtualenv is rebuilt when the lock file changes, so every machine runs the same versions.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check $(PACKAGES) tests e2e
	$(BIN)/mypy $(PACKAGES) e2e

# The Python tiers, then the e2e tier in a local cluster (needs root; a cluster that cannot start fails
# the e2e tests, it never skips them). See docs/e2e.md. The build (cached) comes first: tests/operator
# runs the harness's kube-apiserver and promtool too.
test: lint e2e-build scanners
	$(BIN)/pytest tests
	$(BIN)/pytest e2e/tests

# checkov (its own pinned virtualenv) and kube-score (built from its Go module) in ~/.cache/omendb-scanners,
# once; tests/packaging/test_scanners.py runs them. See docs/operations/scanners.md.
scanners: venv
	$(PY) scripts/scan_tools.py install

# Run both scanners over install.yaml, the chart and the samples' children (what the test runs).
scan: scanners
	$(PY) scripts/scan_tools.py check

# The fast tier for contributors: the linters and every test that needs no Go-built binary and no root
# (tests/conftest.py marks the others `binaries` and `root`). The e2e cache is hidden from it, so a test
# that needs a binary but is not marked fails with the command that builds it, instead of passing only on
# machines that happen to have the cache; nothing is built. The tests run in TEST_WORKERS pytest-xdist
# processes (a file's tests, and its module-scoped servers, stay in one; four, although the machine has two
# cores, because many tests wait on timers and servers; the longest files are handed out first, in the order
# of LONG_FILES in tests/conftest.py, rather than xdist's most-tests-first). mypy (about 25 s of CPU without
# its cache) runs beside them at a lower priority, on the CPU the tests leave while they wait: at the same
# priority it slows the workers' collection, which every test waits for. Its report follows theirs.
# Bytecode is written even where PYTHONDONTWRITEBYTECODE is set: without pytest's cache of rewritten test
# modules every worker spends ~5 s of CPU re-parsing them, and every server start compiles the engine's
# modules again. OMENDB_TEST_ZYGOTE=1: each `omendb serve` is forked from one interpreter per worker that has
# imported the server already (tests/server/zygote.py), which saves about 1 s of CPU for each of the tier's
# ~110 server starts.
TEST_WORKERS ?= 4
TEST_FAST_ARGS ?=
test-fast: venv
	$(BIN)/ruff check $(PACKAGES) tests e2e
	@typing=$$(mktemp); nice -n 10 $(BIN)/mypy $(PACKAGES) e2e >$$typing 2>&1 & mypy=$$!; \
	env -u OMENDB_KUBE_BIN_DIR -u OMENDB_HELM -u PYTHONDONTWRITEBYTECODE OMENDB_E2E_CACHE=/nonexistent/omendb-test-fast OMENDB_TEST_ZYGOTE=1 \
		$(BIN)/pytest tests -m "not binaries and not root" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(TEST_FAST_ARGS); \
	tests=$$?; wait $$mypy; typed=$$?; echo "mypy $(PACKAGES) e2e:"; cat $$typing; rm -f $$typing; \
	test $$tests -eq 0 && test $$typed -eq 0

bench: bench-engine bench-http bench-backup bench-client bench-failover

bench-engine: venv
	$(PY) -m omendb.bench.engine

# The HTTP server under wrk (apt-get install -y wrk) vs a bare ASGI app on the same uvicorn settings.
bench-http: venv
	$(PY) -m omendb.bench.http

# backup_tool backup/restore MB/s vs tar | zstd of the same data directory (needs zstd; 10M records).
bench-backup: venv
	$(PY) -m omendb.bench.backup

# omendb.client against raw httpx requests, per call and per record, against a local server.
bench-client: venv
	$(PY) -m omendb.bench.client

# Primary SIGKILLed under load, failover to a replica: measured RTO and RPO vs a restart in place.
bench-failover: venv
	$(PY) -m omendb.bench.failover

# The guide's sizing: 100M records with max_memory_mb = 8192 (insert, checkpoint, open, lookups, peak and
# steady RSS, backup/restore vs tar | zstd); takes several minutes and about 6 GB of disk. Not part of
# `make bench`. SCALE_RECORDS=10000000 for a quicker run.
SCALE_RECORDS ?= 100000000
bench-scale: venv
	$(PY) -m omendb.bench.scale --records $(SCALE_RECORDS)

# The multi-node journeys (drain, node stop, zone loss, partitions of the primary's node; 3 nodes in 3 zones,
# a 3-pod OmenDB) with their RTO, RPO and failed writes as a table, also written to NODES_REPORT. Needs
# root and the e2e build (`make e2e-build`); part of `make test`. See docs/operations/failover-and-scaling.md.
NODES_REPORT ?= /tmp/omendb-journeys.md
bench-nodes: e2e-build
	OMENDB_JOURNEY_REPORT=$(NODES_REPORT) $(BIN)/pytest -s e2e/tests/test_multinode.py
	cat $(NODES_REPORT)

# Regenerate the full pinned tree from pyproject's direct pins (run after changing a dependency).
lock:
	rm -rf /tmp/omendb-lock && $(PYTHON) -m venv /tmp/omendb-lock
	/tmp/omendb-lock/bin/pip install --quiet pip==24.3.1 setuptools==75.6.0
	/tmp/omendb-lock/bin/pip install --quiet -e '.[server,operator,dev]'
	/tmp/omendb-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# ---- e2e tier: a real one-node Kubernetes built from pinned upstream parts (see docs/e2e.md). Needs root.
# test-e2e builds first, so the session fixture only starts the cluster (pytest-timeout covers fixtures).
.PHONY: e2e-build e2e-up e2e-down test-e2e

e2e-build: venv
	$(PY) -m e2e.binaries build
	$(PY) -m e2e.images build --no-load

e2e-up: venv
	$(PY) -m e2e.cluster up

e2e-down: venv
	$(PY) -m e2e.cluster down

test-e2e: lint e2e-build
	$(BIN)/pytest e2e/tests

# The tests' S3 server (SeaweedFS, TLS + sigv4 on 127.0.0.1; docs/e2e.md "The object store").
.PHONY: objectstore-up objectstore-down
objectstore-up: venv
	$(PY) -m e2e.objectstore up
	$(PY) -m e2e.objectstore env

objectstore-down: venv
	$(PY) -m e2e.objectstore down

# ---- packaging (issue 8): the Helm chart, manifests/install.yaml, images, the first run.
.PHONY: chart-crds manifests lint-images up down

# crds/ and dashboards/ are the sources; the chart carries copies (tests/packaging fails when they differ).
chart-crds:
	$(PYTHON) scripts/chart_tools.py chart-crds

# manifests/install.yaml, rendered from the chart with helm from the e2e harness's cache.
manifests:
	$(PYTHON) scripts/chart_tools.py manifests

lint-images: venv
	$(BIN)/pytest tests/packaging/test_dockerfiles.py

# The first run: a local cluster, the operator from the chart, the development OmenDB, Ready. Needs root.
up: venv
	$(PY) scripts/up.py up

down: venv
	$(PY) scripts/up.py down
