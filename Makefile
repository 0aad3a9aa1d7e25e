# OmenDB Operator — developer entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PACKAGES := engine/omendb operator/omendb_operator

.PHONY: venv lint test test-unit bench bench-engine bench-http bench-backup bench-client lock clean

# The virtualenv is rebuilt when the lock file changes, so every machine runs the same versions.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/mypy $(PACKAGES)

test: lint
	$(BIN)/pytest tests

bench: bench-engine bench-http bench-backup bench-client

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

# Regenerate the full pinned tree from pyproject's direct pins (run after changing a dependency).
lock:
	rm -rf /tmp/omendb-lock && $(PYTHON) -m venv /tmp/omendb-lock
	/tmp/omendb-lock/bin/pip install --quiet pip==24.3.1 setuptools==75.6.0
	/tmp/omendb-lock/bin/pip install --quiet -e '.[server,operator,dev]'
	/tmp/omendb-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
