# healthtwin — two commands: `make demo` and `make test`. Both set up everything they need.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HEALTHTWIN_SHARED ?= $(abspath ../shared)

.PHONY: setup postgres demo test lint typecheck bench clean chromium

setup: $(STAMP) postgres

# Debian's postgresql (server binaries for the tests' throwaway cluster), only when missing
postgres:
	scripts/ensure-postgres.sh

$(STAMP): requirements.lock pyproject.toml
	scripts/bootstrap-venv.sh $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# the main job: sample data + a live synthetic CGM stream + the server and dashboard
# (prints the URL and demo tokens; Ctrl-C stops it; DEMO_ARGS="--port 8001" etc.)
demo: setup
	$(BIN)/python -m healthtwin.demo $(DEMO_ARGS)

# Debian's Chromium for the browser tests (Playwright uses it; it never downloads a browser)
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests" >&2; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "warning: no /usr/bin/chromium (apt-get install chromium): browser tests skip" >&2; fi; }

test: setup chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/models.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
