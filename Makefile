# `make up` runs the whole local stack; `make test` runs every check. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
AZURITE := tools/azurite/node_modules/.bin/azurite-blob
PYTEST_ARGS ?=
# Test processes side by side (pytest-xdist), a test module to each: 2 keeps two cores busy while one
# module's stack waits; every test makes its own databases, ports and folders.
TEST_WORKERS ?= 2

.PHONY: up test browser lint typecheck unit integration test-fault bench schema manifests install azurite clean

$(STAMP): requirements.txt requirements-worker.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned to the CPU build first, so nothing below pulls the CUDA one
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

install: $(STAMP)

$(AZURITE): tools/azurite/package.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 to run the Azurite tests"; exit 1; }
	cd tools/azurite && npm ci --no-audit --no-fund --silent
	@touch $@

azurite: $(AZURITE)

up: $(STAMP)
	$(BIN)/python -m shared.hosting

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check shared functions gpu_worker function_app.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The dashboard's browser test drives Debian's Chromium; install it where we may (root with apt).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null) \
	      || echo "could not install chromium: the browser test will say so"; \
	  else echo "chromium is missing: install it (Debian: apt-get install chromium) to run the browser test"; fi; }

test: $(STAMP) $(AZURITE) browser lint typecheck
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The fault-injection suite at full size: 100 jobs under SIGKILLs, a whole-stack kill and a
# PostgreSQL restart (make test runs a smaller round of the same).
test-fault: $(STAMP)
	FAULT_JOBS=$${FAULT_JOBS:-100} $(BIN)/python -m pytest tests/fault -s $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

schema: $(STAMP)
	$(BIN)/python -m shared.core.db schema > infra/database/schema.sql

# The AzureWebJobs.<function>.Disabled flags of the Functions deployments (k8s/02-backend-api.yaml and the
# router's and azure-ai's kustomize overlays), from the app's triggers (one dead-letter trigger per queue of
# the step registry); a unit test fails until they are current.
manifests: $(STAMP)
	$(BIN)/python -m functions.triggers

bench: $(STAMP)
	$(BIN)/python bench/queue_hop.py

clean:
	rm -rf $(VENV) .speechflow tools/azurite/node_modules
