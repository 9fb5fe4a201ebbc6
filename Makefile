# Two commands for a fresh machine:
#   make run    install the runtime into .venv and start the dashboard
#   make test   install everything (incl. Chromium for browser tests) and run the full suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TL_SHARED_DIR ?= $(abspath ../shared)
export TL_SHARED_DIR

.PHONY: run serve test lint bench accuracy-study chromium clean constraints

# constraints.txt pins every package (transitive ones too) to the versions CI tested, so a
# fresh clone installs exactly that set instead of whatever numpy/protobuf/... is newest today.
$(VENV)/.runtime: requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt constraints.txt $(VENV)/.runtime
	$(PIP) install -r requirements-dev.txt -c constraints.txt
	touch $@

# After changing requirements*.txt: install, run `make test`, then refresh the pins from the
# passing environment (pip itself and the optional torch/transformers extras are not pinned).
constraints: $(VENV)/.dev
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --all --exclude-editable | grep -v -i -E '^(pip|torch|transformers)( |=)'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# `make run` serves this machine only (127.0.0.1): one person, their own files. `make serve`
# serves a room on every network interface (ADDRESS=… to pick one) as a shared server: it
# needs TLCORE_DATA_ROOTS, the folders visitors may read (README "Serving a live demo").
ADDRESS ?= 0.0.0.0
run: $(VENV)/.runtime
	$(PY) serve.py --server.address 127.0.0.1

serve: $(VENV)/.runtime
	@[ -n "$${TLCORE_DATA_ROOTS+set}" ] || { echo "make serve: set TLCORE_DATA_ROOTS to the folders visitors may read (empty: uploads only), e.g. TLCORE_DATA_ROOTS=/srv/photos make serve" >&2; exit 2; }
	TLCORE_SHARED=1 $(PY) serve.py --server.address $(ADDRESS)

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

# bench/finetune.py: ours vs the plain Keras fine-tune, 5 seeds x 2 sets x 2 depths (long on a CPU).
bench: $(VENV)/.dev chromium
	$(PY) bench/frozen_training.py
	$(PY) bench/dashboard_retrain.py
	$(PY) bench/soak.py
	$(PY) bench/audience.py
	$(PY) bench/finetune.py

# Which decoding/head defaults are at least as accurate as the plain Keras script: 5 seeds,
# ants/bees + Open Clip Art drawings (built from Debian's openclipart-png on first use).
accuracy-study: $(VENV)/.dev
	$(PY) bench/accuracy_study.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
