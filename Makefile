# authz — `make run` serves the example policies; `make test` runs the whole suite.
# Both work on a fresh machine: they create .venv and install what is missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
WORKERS ?= 2
export AUTHZ_DB ?= ./authz.db
export AUTHZ_POLICY_DIR ?= ./policies

.PHONY: run test lint bench servers clean

$(BIN)/authz: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# nginx and caddy are real servers the end-to-end tests drive, PostgreSQL the store the
# replica tests share (they start a throwaway cluster with its initdb/pg_ctl), promtool (Debian's
# prometheus package) checks deploy/prometheus/alerts.yaml; wrk drives the benchmark.
servers:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v caddy >/dev/null 2>&1 || missing="$$missing caddy"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(BIN)/authz
	$(BIN)/authz db init
	@key=$$($(BIN)/authz keys create --principal demo-partner --scope orders:read --env test \
	        --expires-in 1d --json | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)["key"])'); \
	echo; echo "Demo API key (test environment, 1 day): $$key"; echo; \
	echo "Ask authz as nginx would:"; \
	echo "  curl -i -H 'X-Original-Method: GET' -H 'X-Original-URI: /v1/orders/42' -H 'X-API-Key: $$key' http://$(HOST):$(PORT)/auth-request"; \
	echo "Or through the JSON API:"; \
	echo "  curl -i -X POST http://$(HOST):$(PORT)/v1/decisions -d '{\"method\":\"GET\",\"url\":\"http://api.example.com/v1/orders/42\",\"headers\":{\"X-API-Key\":\"'$$key'\"}}'"; \
	echo
	$(BIN)/authz serve --bind $(HOST):$(PORT) --workers $(WORKERS)

# The whole suite, then the end-to-end files that touch the store (marked both_stores)
# once more with the store on PostgreSQL (tests/conftest.py; skips say why).
# Two pytest workers (pytest-xdist), a file each at a time: most of the suite waits on the
# servers it starts. tests/conftest.py gives each worker its own block of ports.
PYTEST_WORKERS ?= -n 2 --dist loadfile

test: $(BIN)/authz servers
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_WORKERS)
	AUTHZ_TEST_STORE=postgresql $(BIN)/pytest $(PYTEST_WORKERS) -m both_stores -rs

lint: $(BIN)/authz
	$(BIN)/ruff check .

bench: $(BIN)/authz servers
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/flood.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/expiry.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
