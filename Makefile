# Two set-up commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DATA ?= var/demo-data
ARTIFACTS ?= var/artifacts
STORE ?= sqlite:///var/feature-store.sqlite
PORT ?= 50051
# The artwork bandit, as plain `recsvc serve` (auto: lints when the bundle has artwork);
# POLICY=default opts out (always the first variant).
POLICY ?= auto
BENCH_OUT ?= var/bench
TRAIN = $(BIN)/recsvc train --data $(DATA) --out $(ARTIFACTS) --feature-store $(STORE)
SHARED_DATA ?= ../shared/data

.PHONY: install run demo-data train serve test lint format proto bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml recsvc/bandit/_choice.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo-data: $(DATA)/interactions.csv

$(DATA)/interactions.csv: | $(VENV)/.installed
	$(BIN)/recsvc demo-data --out $(DATA) --users 5000 --items 2000 --seed 7

# `make train` always trains a new version; `make run` trains only when the demo data is newer
# than the last bundle it trained (stamp next to the artifacts root), so restarts are fast.
train: install demo-data
	$(TRAIN)
	touch $(ARTIFACTS).stamp

$(ARTIFACTS).stamp: $(DATA)/interactions.csv | $(VENV)/.installed
	$(TRAIN)
	touch $@

run: install $(ARTIFACTS).stamp
	$(BIN)/recsvc serve --artifacts $(ARTIFACTS) --port $(PORT) --feature-store $(STORE) --bandit-policy $(POLICY)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy recsvc training feature_store tests
	$(BIN)/python -m recsvc.protogen --check
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m tests.layers

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: install
	$(BIN)/python -m recsvc.protogen

bench: install
	SHARED_DATA=$(SHARED_DATA) BENCH_OUT=$(BENCH_OUT) $(BIN)/python -m tests.benchmarks.run_all

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
