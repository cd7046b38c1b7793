# The two commands a newcomer needs:  `make up`  and  `make test`.
# Everything else here is what those two are made of.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: up down status test lint proto check-proto install clean-data bench k8s-check

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

# PROFILE=cluster: the production topology (3 Kafka nodes with TLS and
# SCRAM, 3 Cassandra nodes at RF 3, Redis with Sentinel, two processes of
# each service) under .run/cluster, beside the single stack
# (deploy/local/cluster.py).
PROFILE ?= single
ifeq ($(PROFILE),cluster)
SYSTEM := deploy.local.cluster
else ifeq ($(PROFILE),single)
SYSTEM := deploy.local.system
else
$(error PROFILE must be single or cluster, not $(PROFILE))
endif

## Start everything: Kafka, Cassandra, Redis, the services, a demo petition.
up: $(INSTALLED)
	$(PY) -m $(SYSTEM) up

## Stop exactly what `make up` started.
down: $(INSTALLED)
	$(PY) -m $(SYSTEM) down

status: $(INSTALLED)
	$(PY) -m $(SYSTEM) status

## Lint, type-check, then the whole suite against the real stack.
test: $(INSTALLED) lint
	$(PY) tools/run_suite.py

# lint-imports checks the architecture contracts of pyproject.toml's
# [tool.importlinter] (who may import what).
lint: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

proto: $(INSTALLED)
	$(PY) tools/generate_protos.py

check-proto: $(INSTALLED)
	$(PY) tools/generate_protos.py --check

## Render deploy/k8s/'s overlays and check them offline (schemas, kubeconform, policies).
k8s-check: $(INSTALLED)
	$(PY) tools/k8s_check.py check

## Stop everything and delete the local data (Kafka log, Cassandra, Redis).
clean-data: $(INSTALLED)
	$(PY) -m deploy.local.system down
	$(PY) -m deploy.local.stack reset

## The issue's figures in one table (starts the stack first if it is not running).
bench: up
	$(PY) -m loadtests.bench
