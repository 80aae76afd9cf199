# Each target works from a fresh clone with only Python 3.11 and pip on the machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

## run: the example API on http://127.0.0.1:8000 (SQLite file migrated, demo plans, an admin; docs at /docs)
run: $(STAMP)
	PYTHONPATH=examples LUMENQUEST_DATABASE_URL="$${LUMENQUEST_DATABASE_URL:-sqlite:///lumenquest-demo.sqlite3}" \
		$(VENV)/bin/python -m asgi_app --demo

## test: lint, types, architecture and the test suite (the same as CI)
test: $(STAMP)
	$(VENV)/bin/tox run-parallel --parallel-no-spinner -e lint,type,arch,tests
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir .site
	$(VENV)/bin/python benchmarks/bench_core.py --smoke
	$(VENV)/bin/python benchmarks/bench_redis.py --smoke
	$(VENV)/bin/python benchmarks/bench_service.py --smoke
	$(VENV)/bin/python benchmarks/bench_metrics.py --smoke
	$(VENV)/bin/python benchmarks/bench_billing_run.py --smoke
	$(VENV)/bin/python benchmarks/bench_api.py --smoke

## bench: the benchmarks with their same-run baselines
bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_core.py
	$(VENV)/bin/python benchmarks/bench_redis.py
	$(VENV)/bin/python benchmarks/bench_service.py
	$(VENV)/bin/python benchmarks/bench_metrics.py
	$(VENV)/bin/python benchmarks/bench_billing_run.py
	$(VENV)/bin/python benchmarks/bench_api.py

## docs: the documentation site, built with --strict into .site (open .site/index.html)
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir .site

clean:
	rm -rf $(VENV) .tox .coverage .hypothesis .mypy_cache .ruff_cache .pytest_cache
