# One entry point for people and CI. Every target that needs the toolchain depends on `setup`,
# which (re)creates .venv when it is missing or when requirements.txt changed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= false
export PYTHONDONTWRITEBYTECODE := 1

INVENTORY ?= inventories/lab
PY_DIRS := $(wildcard collections tests molecule benchmarks mlfleet tools)
MOLECULE_SCENARIOS ?= $(notdir $(patsubst %/,%,$(dir $(wildcard molecule/*/molecule.yml))))

.PHONY: help setup lint unit image molecule e2e test lab-up lab-down demo converge drift bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

setup: $(STAMP) ## Create .venv with the pinned toolchain (only when missing or stale)

lint: setup ## yamllint, ansible-lint (production profile) and ruff over the whole tree
	yamllint --strict .
	ansible-lint --profile production --offline
	ruff check $(PY_DIRS)
	ruff format --check $(PY_DIRS)

unit: setup ## Unit tests of the Python plugins and modules
	pytest tests/unit

image: setup ## Build the lab base image (only when its recipe changed)
	ansible-playbook lab/image.yml

molecule: setup image ## Every role's Molecule scenario
	@for s in $(MOLECULE_SCENARIOS); do \
	  echo "=== molecule test -s $$s"; \
	  molecule test -s $$s || exit 1; \
	done

e2e: setup ## End-to-end tests on one shared lab (brings it up, tears it down last)
	pytest tests/e2e

test: lint unit molecule e2e ## Everything: lint, unit, Molecule, end to end

# LAB_CPU_HOSTS=N resizes the lab's CPU group to N hosts (benchmarks at fleet scale; see lab/roles/lab).
LAB_CPU_HOSTS ?=
LAB_UP_ARGS := $(if $(LAB_CPU_HOSTS),-e lab_cpu_hosts=$(LAB_CPU_HOSTS))

lab-up: setup ## Bring the lab up (idempotent; repairs a half-up lab; LAB_CPU_HOSTS=N scales it)
	ansible-playbook lab/up.yml $(LAB_UP_ARGS)

lab-down: setup ## Remove the lab's containers, network, volumes, keys and CA
	ansible-playbook lab/down.yml

demo: lab-up ## Lab up, hosts and LB converged, v1 then v2 rolled out canary first, report
	ansible-playbook -i $(INVENTORY) lab/demo.yml

converge: setup ## Converge playbooks/site.yml on INVENTORY (default: the lab)
	ansible-playbook -i $(INVENTORY) playbooks/site.yml

drift: setup ## Drift check of INVENTORY (exit 0 clean, 2 drift, 1 run failed)
	python -m mlfleet.drift -i $(INVENTORY) --no-textfile

BENCH_REPS ?= 3
bench: setup ## Benchmarks on the lab, not part of `make test` (results: artifacts/bench, docs/benchmarks.md)
	pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	ansible-playbook lab/up.yml $(LAB_UP_ARGS)
	ansible-playbook -i $(INVENTORY) playbooks/site.yml
	python benchmarks/fleet_bench.py --reps $(BENCH_REPS)
	python benchmarks/rollout_bench.py
	python benchmarks/endpoint_bench.py

clean: lab-down ## Lab down and the toolchain removed
	rm -rf $(VENV) .cache
