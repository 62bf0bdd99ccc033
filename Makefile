# MedPay Mesh — the two commands a newcomer needs are `make demo` and `make test`.
# Everything else is set up by them: uv (into .tools/), the Python environment (.venv/ from uv.lock),
# and buf (node_modules/ from package-lock.json).

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --frozen
BUF := node_modules/.bin/buf

.PHONY: install demo test test-fast lint protos protos-check bench budget clean

.tools/bin/uv:
	python3 -m venv .tools && .tools/bin/pip install --quiet uv

.venv/.installed: uv.lock pyproject.toml clients/python/pyproject.toml | $(UV)
	$(UV) sync --frozen --quiet
	touch $@

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

install: .venv/.installed $(BUF)

## make demo: start the whole mesh on SQLite, play a hospital morning, reconcile, summarise, trace.
demo: install
	$(RUN) python -m infra.local.demo

## make test: unit, service, integration and end-to-end tests (PostgreSQL when reachable).
test: install
	$(RUN) python scripts/run_tests.py

test-fast: install
	$(RUN) pytest tests/unit -q

protos: install
	$(RUN) python scripts/gen_protos.py

protos-check: install
	$(RUN) python scripts/gen_protos.py --check

lint: install
	$(RUN) ruff check .
	$(BUF) lint
	$(RUN) python scripts/gen_protos.py --check
	$(RUN) mypy services clients/python/src infra bench

## make bench: the settlement benchmark (tables, JSON under bench/results/); about 2-3 minutes.
bench: install
	$(RUN) python -m bench.settlement

## make budget: refresh bench/budget.json (round trips per step that tests/integration holds to).
budget: install
	$(RUN) python -m bench.settlement --budget-only --visits 20

clean:
	rm -rf var build .pytest_cache .mypy_cache .ruff_cache
