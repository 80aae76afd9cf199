# Each target works from a fresh clone with only Python 3.11 and pip on the machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

## run: the demo (a customer subscribes, upgrades half-way, renews; invoices and MRR)
run: $(STAMP)
	$(VENV)/bin/python examples/demo.py

## test: lint, types, architecture and the test suite (the same as CI)
test: $(STAMP)
	$(VENV)/bin/tox run-parallel --parallel-no-spinner -e lint,type,arch,tests
	$(VENV)/bin/python benchmarks/bench_core.py --smoke
	$(VENV)/bin/python benchmarks/bench_redis.py --smoke
	$(VENV)/bin/python benchmarks/bench_service.py --smoke
	$(VENV)/bin/python benchmarks/bench_metrics.py --smoke

## bench: the benchmarks with their same-run baselines
bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_core.py
	$(VENV)/bin/python benchmarks/bench_redis.py
	$(VENV)/bin/python benchmarks/bench_service.py
	$(VENV)/bin/python benchmarks/bench_metrics.py

clean:
	rm -rf $(VENV) .tox .coverage .hypothesis .mypy_cache .ruff_cache .pytest_cache
