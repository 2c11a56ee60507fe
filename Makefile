# Two commands on a fresh machine: `make demo` and `make test`. Everything is installed from the
# locked requirements into .venv; system packages (Chromium for browser tests, a CJK font for
# Chinese plot labels) come from Debian's registry when missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
# Pipeline stages (dvc.yaml) and test subprocesses call `fangpin`, `uvicorn`, `mlflow` by name.
export PATH := $(CURDIR)/$(BIN):$(PATH)
PYTEST_WORKERS ?= 2

.PHONY: install bytecode system-deps bench-deps demo serve-demo stop test lint lock clean

install: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "需要 Python 3.11 ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python requirements/lock.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Bytecode of the project's own packages, refreshed where stale (compileall writes it even under
# PYTHONDONTWRITEBYTECODE). uv installs without bytecode unless asked (--compile-bytecode above):
# with PYTHONDONTWRITEBYTECODE set, as on the dev and CI machines, every process (CLI, test
# subprocess, Dask worker) then compiled every module it imported, ~5 CPU-seconds each
# (docs/benchmarks.md, "Bytecode").
bytecode: install
	@$(BIN)/python -m compileall -q -j 0 fangpin models pipelines serving >/dev/null

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

# What the benchmarks in bench/ use beside the venv: wrk, the HTTP load generator of bench_api.py.
bench-deps: install
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

lock:
	$(BIN)/uv pip compile --python-version 3.11 --extra dev pyproject.toml -o requirements/lock.txt

# The demo: the DVC pipeline (synth → ingest → train → evaluate → promote → score) on the
# embedded synthetic ledger, then the API and the cadre page in the background on localhost.
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000
demo: bytecode
	$(BIN)/dvc repro
	@$(MAKE) --no-print-directory serve-demo

serve-demo: install stop
	@mkdir -p .fangpin
	@nohup $(BIN)/fangpin serve --demo-keys --host $(DEMO_HOST) --port $(DEMO_PORT) > .fangpin/serve.log 2>&1 & echo $$! > .fangpin/serve.pid
	@for i in $$(seq 90); do \
	  if $(BIN)/python -c "import httpx,sys; sys.exit(httpx.get('http://$(DEMO_HOST):$(DEMO_PORT)/ready').status_code != 200)" 2>/dev/null; then break; fi; \
	  kill -0 $$(cat .fangpin/serve.pid) 2>/dev/null || { cat .fangpin/serve.log; exit 1; }; sleep 1; done
	@grep -v -E "^(INFO|\[)" .fangpin/serve.log
	@echo "服务已在后台运行 (the API and the cadre page run in the background; log: .fangpin/serve.log). Stop: make stop"

stop:
	@if [ -f .fangpin/serve.pid ]; then kill $$(cat .fangpin/serve.pid) 2>/dev/null || true; rm -f .fangpin/serve.pid; fi

test: bytecode system-deps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

lint: install
	$(BIN)/ruff check fangpin pipelines models serving tests bench

clean:
	rm -rf data reports mlruns .fangpin tests/artifacts
