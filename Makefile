VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help setup kube test check demo lint format bench lock clean cluster-up cluster-down cluster-images e2e compose-up compose-down

help:
	@echo "make demo   run the pipeline end to end on embedded defaults"
	@echo "make test   run the test suite (sets itself up)"
	@echo "make check  lint and the fast tests: no Kubernetes build, images or Flink job (everyday work)"
	@echo "make lint   ruff + mypy"
	@echo "make bench  run the benchmarks"
	@echo "make cluster-up / cluster-down   a single-node Kubernetes on this machine (root; docs/e2e.md)"
	@echo "make e2e    the end-to-end suite on that cluster (brings it up and down unless it is up)"
	@echo "make compose-up / compose-down   the whole stack in Docker Compose (docker/README.md)"

setup:
	@scripts/bootstrap.sh

# Kubernetes built from Debian's sources once and cached in ~/.cache/obflow/kubernetes: the API server
# and controller-manager of the operator tests, the scheduler, kubelet and kube-proxy of the e2e
# cluster (about 15 minutes the first time, instant afterwards).
kube:
	@scripts/kube/build.sh --node >/dev/null

cluster-up: setup kube
	@$(BIN)/python -m tools.cluster up

cluster-down: setup
	@$(BIN)/python -m tools.cluster down

# obflow's images built from the repo and loaded into the cluster's node (done by the suite too)
cluster-images: setup
	@$(BIN)/python -m tools.cluster images

# the Compose stack of docker/compose.yaml: images built, docker/.env made once (docker/README.md);
# `make compose-down ARGS=-v` drops its volumes too
compose-up: setup
	@scripts/docker/compose.sh up

compose-down:
	@scripts/docker/compose.sh down $(ARGS)

e2e: setup kube
	@$(BIN)/python -m pytest tests/e2e -s $(PYTEST_ARGS)

# pytest's exit 5 ("no tests collected") fails the target like any other failure.
test: setup kube
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; fi; exit $$rc

# The fast tier: no Kubernetes build, no images, no Flink job; what CI runs besides is `make test`.
check: lint
	@$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(BIN)/obflow demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup kube
	$(BIN)/python -m benchmarks

# Re-pin constraints.txt from a fresh resolve of pyproject.toml (apache-flink stays pinned there).
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/pip install -q -e ".[dev]"
	{ echo "# Exact versions for a fast, reproducible install (pip install -c constraints.txt ...)."; \
	  echo "# Regenerate: make lock (after changing dependencies in pyproject.toml)."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -vE '^(obflow|pip|setuptools|wheel)=='; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
