# Coffer — the two commands are `make run` and `make test`; everything else supports them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(shell find protos -name '*.proto')
PROTO_STAMP := libs/coffer/api/.generated

.PHONY: run test proto lint typecheck bench install stop clean lock deploy-check fuzz chaos

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Every dependency (the build backend included) comes from requirements.lock, each file checked against its
# pinned SHA-256; then the project itself, built by that pinned backend, with nothing else resolved.
$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP) $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTO_SRC) $(STAMP) scripts/genproto.py
	$(BIN)/python scripts/genproto.py
	touch $@

# Re-pin every dependency after changing pyproject.toml (needs PyPI).
lock: $(STAMP)
	scripts/lock.sh

proto: $(STAMP)
	$(BIN)/python scripts/genproto.py
	touch $(PROTO_STAMP)

run: install
	$(BIN)/python -m coffer.devrun $(if $(REGIONS),--regions $(REGIONS),) $(if $(REPLICAS),--replicas $(REPLICAS),)

stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m coffer.devrun --stop; else echo "nothing to stop (no $(VENV))"; fi

test: install
	@scripts/ensure_softhsm.sh
	@scripts/ensure_chromium.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check libs services tests bench scripts examples
	$(BIN)/ruff format --check libs services tests bench scripts examples
	$(BIN)/buf lint protos
	BUF=$(BIN)/buf scripts/buf_breaking.sh

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.run_bench

# The fuzzer (tests/integration/fuzz; `make test` runs it small): COFFER_FUZZ_REQUESTS requests generated from
# the protobuf descriptors against the real stack, printing the counts per RPC and per status.
COFFER_FUZZ_REQUESTS ?= 100000
fuzz: install
	COFFER_FUZZ_REQUESTS=$(COFFER_FUZZ_REQUESTS) $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/integration/fuzz

# Fault injection at full length (`make test` runs the same scenarios shorter): PostgreSQL restarted twice under
# load, the KMS down ten seconds, the link to a peer region cut for a minute then slowed, Redis flushed and
# restarted mid-rotation. Each prints what it measured.
chaos: install
	COFFER_CHAOS=long $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/integration/chaos \
	  tests/integration/replication/test_replication_link_faults.py \
	  "tests/integration/rotation/test_rotation_end_to_end.py::test_redis_loss_and_a_restart_mid_rotation_still_complete"

clean:
	rm -rf $(VENV) libs/coffer/api .mypy_cache .ruff_cache

# Render every deploy/k8s overlay (kubectl kustomize, or the Python renderer without kubectl) and validate
# every object against the Kubernetes schemas (kubernetes-validate) and deploy/k8s/schemas.
deploy-check: install
	$(BIN)/python scripts/deploy_check.py
