# Two commands for a fresh machine:
#   make run    install the runtime into .venv and start the dashboard
#   make test   install everything (incl. Chromium for browser tests) and run the full suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TL_SHARED_DIR ?= $(abspath ../shared)
export TL_SHARED_DIR

.PHONY: run test lint bench chromium clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PIP) install -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/streamlit run app.py

# Browser tests drive Debian's Chromium (Playwright's own browser download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.dev chromium lint
	$(PY) -m pytest

bench: $(VENV)/.dev
	$(PY) bench/frozen_training.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
