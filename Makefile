# Two commands on a fresh machine: `make demo` and `make test`. Everything is installed from the
# locked requirements into .venv; system packages (Chromium for browser tests, a CJK font for
# Chinese plot labels) come from Debian's registry when missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install system-deps demo test lint lock bench clean

install: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "需要 Python 3.11 ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --python $(BIN)/python requirements/lock.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Debian packages the tests need: headless Chromium (browser tests) and a CJK font (notebook
# figures with Chinese labels). Installed only when missing; needs root, as on the dev/CI machines.
system-deps:
	@need=""; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || need="$$need fonts-noto-cjk"; \
	if [ -n "$$need" ]; then \
	  echo "installing Debian packages:$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$need >/dev/null; \
	fi

lock:
	$(BIN)/uv pip compile --python-version 3.11 --extra dev pyproject.toml -o requirements/lock.txt

demo: install
	$(BIN)/dvc repro
	@$(BIN)/fangpin demo-summary

test: install system-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

lint: install
	$(BIN)/ruff check fangpin pipelines models serving tests bench

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf data reports mlruns .fangpin tests/artifacts
