# One entry point for people and CI. Every target that needs the toolchain depends on `setup`,
# which (re)creates the virtualenv when it is missing or when its requirements file changed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The supported ansible-core lines (the collection's meta/runtime.yml): 2.19 on Debian 12's Python
# 3.11 (the default), and 2.21 on Python 3.12 in its own virtualenv (`make CORE=2.21 ...`).
CORE ?= 2.19
ifeq ($(CORE),2.19)
PYTHON ?= python3
VENV ?= .venv
REQUIREMENTS ?= requirements.txt
else ifeq ($(CORE),2.21)
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3) $(shell command -v python3.12))
VENV ?= .venv-core2.21
REQUIREMENTS ?= requirements-core2.21.txt
else
$(error CORE=$(CORE) is not supported: use 2.19 or 2.21)
endif
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
COLLECTION := collections/ansible_collections/mlfleet/fleet
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= false
export PYTHONDONTWRITEBYTECODE := 1

INVENTORY ?= inventories/lab
# The lab's Prometheus (obs-1), read by the fleet report at the end of `make demo`.
LAB_PROMETHEUS ?= http://172.28.10.30:9090
PY_DIRS := $(wildcard collections tests molecule benchmarks mlfleet tools)
MOLECULE_SCENARIOS ?= $(notdir $(patsubst %/,%,$(dir $(wildcard molecule/*/molecule.yml))))

.PHONY: help prereqs setup lint ee docs dashboards checks sanity collection unit image model-images molecule e2e compat compat-checks compat-molecule molecule-lane checks-lane test lab-up lab-down demo converge drift scan compliance bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): $(REQUIREMENTS) pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "No Python for ansible-core $(CORE): install Python 3.12 (pyenv install 3.12) or set PYTHON=" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --editable .
	touch $@

setup: $(STAMP) ## Create .venv with the pinned toolchain (only when missing or stale)

lint: setup ee ## yamllint, ansible-lint (production), ruff, FQCN check, role docs, the execution environment
	yamllint --strict .
	ansible-lint --profile production --offline
	ruff check $(PY_DIRS)
	ruff format --check $(PY_DIRS)
	python tools/check_fqcn.py
	python tools/role_docs.py --check
	python tools/dashboards.py --check

# The execution environment of execution-environment.yml, from this checkout: the collection tarball
# and the mlfleet wheel, the recipe checked against the repository, and ansible-builder's build context.
EE_BUILD := artifacts/ee/build
ee: setup ## Execution environment build context in artifacts/ee/context (then: docker build -t mlfleet-ee:0.2.0 artifacts/ee/context)
	rm -rf artifacts/ee
	mkdir -p $(EE_BUILD)/src
	ansible-galaxy collection build $(COLLECTION) --output-path $(EE_BUILD)
	cp -r pyproject.toml README.md mlfleet $(EE_BUILD)/src/
	pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir $(EE_BUILD) $(EE_BUILD)/src
	rm -rf $(EE_BUILD)/src
	python tools/check_ee.py
	ansible-builder create --file execution-environment.yml --context artifacts/ee/context --output-filename Containerfile

dashboards: setup ## Regenerate the Grafana dashboards (JSON in roles/grafana_dashboards) from tools/dashboards.py
	python tools/dashboards.py

docs: setup ## Regenerate the variables section of every role README from its argument specs
	python tools/role_docs.py

# ansible-test bootstraps pip in its virtualenvs with a script from ci-files.testing.ansible.com,
# which is not reachable here; tools/ansible_test_get_pip.py does the same from PyPI.
sanity: setup ## ansible-test sanity of the collection (each test's pinned requirements, in virtualenvs)
	@pip_version=$$(sed -n "s/.*pip='\([0-9.]*\)'.*/\1/p" $$(python -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py | head -1); \
	  cache=$(HOME)/.ansible/test/cache/get_pip_$${pip_version//./_}.py; \
	  [ -e "$$cache" ] || { mkdir -p $$(dirname $$cache) && cp tools/ansible_test_get_pip.py "$$cache"; }
	cd $(COLLECTION) && ansible-test sanity --venv --requirements --python $$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

collection: setup ## Build the collection tarball into artifacts/collection/
	ansible-galaxy collection build $(COLLECTION) --output-path artifacts/collection --force

unit: setup ## Unit tests of the Python plugins and modules
	pytest tests/unit

# Under one lock: the two lanes of `make test` both need the image (the Molecule lane builds it first).
IMAGE_LOCKED := mkdir -p artifacts && flock artifacts/.image.lock
image: setup ## Build the lab base image (only when its recipe changed)
	$(IMAGE_LOCKED) ansible-playbook lab/image.yml

model-images: setup ## Build the lab base image and the model images ahead of `make lab-up` (cached by recipe)
	$(IMAGE_LOCKED) ansible-playbook lab/model_build.yml

molecule: setup image ## Every role's Molecule scenario
	@for s in $(MOLECULE_SCENARIOS); do \
	  echo "=== molecule test -s $$s"; start=$$(date +%s); \
	  molecule test -s $$s || exit 1; \
	  echo "=== molecule test -s $$s: passed in $$(( $$(date +%s) - start )) s"; \
	done

e2e: setup ## End-to-end tests on one shared lab (a leftover lab down first; brings it up, tears it down last)
	pytest tests/e2e --durations=30 --fresh-lab

compat: compat-checks compat-molecule ## lint, sanity, unit and the ca_trust Molecule scenario on ansible-core 2.21 (Python 3.12)

compat-checks:
	$(MAKE) CORE=2.21 lint sanity unit

compat-molecule:
	$(MAKE) CORE=2.21 molecule MOLECULE_SCENARIOS=ca_trust

# The checks need no container: they run beside the Molecule scenarios, which spend much of their
# time waiting for apt and systemd inside their hosts (one after the other, CI ran past 80 minutes).
# tools/lanes.sh logs each lane to artifacts/lanes/ and prints a failed lane's log last, so the end of
# CI's output names the failure; e2e then runs alone.
# Both lanes start at once: the Molecule lane with the lab base image (debootstrap on a fresh
# machine) and the model images (off e2e's path: its lab-up then only pushes them), the checks
# lane with lint. Four short scenarios and the 2.21 scenario follow the checks (distinct container
# names and subnets let two scenarios run at once).
MOLECULE_BESIDE_CHECKS := ca_trust inference_lb nvidia_gpu oci_registry
test: setup ## Everything: lint, sanity, unit, Molecule, end to end, and all of it but e2e on ansible-core 2.21
	MAKE="$(MAKE)" bash tools/lanes.sh molecule-lane checks-lane
	$(MAKE) --no-print-directory e2e

molecule-lane:
	$(MAKE) --no-print-directory model-images
	$(MAKE) --no-print-directory molecule MOLECULE_SCENARIOS="$(filter-out $(MOLECULE_BESIDE_CHECKS),$(MOLECULE_SCENARIOS))"

checks-lane:
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory checks
	$(MAKE) --no-print-directory molecule MOLECULE_SCENARIOS="$(MOLECULE_BESIDE_CHECKS)"
	$(MAKE) --no-print-directory compat-molecule

# Sanity, unit and the 2.21 checks (lint, sanity, unit), one after the other.
checks:
	$(MAKE) --no-print-directory -j1 sanity unit compat-checks

# LAB_CPU_HOSTS=N resizes the lab's CPU group to N hosts (benchmarks at fleet scale; see lab/roles/lab).
LAB_CPU_HOSTS ?=
LAB_UP_ARGS := $(if $(LAB_CPU_HOSTS),-e lab_cpu_hosts=$(LAB_CPU_HOSTS))

lab-up: setup ## Bring the lab up (idempotent; repairs a half-up lab; LAB_CPU_HOSTS=N scales it)
	ansible-playbook lab/up.yml $(LAB_UP_ARGS)

lab-down: setup ## Remove the lab's containers, network, volumes, keys and CA
	ansible-playbook lab/down.yml

prereqs: ## As root: install and start what the control node needs (docker, debootstrap); else say how
	bash tools/prereqs.sh

demo: prereqs ## Lab up, hosts and LB converged, v1 then v2 rolled out canary first, report
	@echo "make demo: about 20 minutes the first time on a 2-core machine (toolchain, lab image and model"
	@echo "images are built once), a few minutes on later runs. Stages: 1/4 toolchain into .venv,"
	@echo "2/4 lab up (6 hosts as containers), 3/4 demo.yml: preflight, hosts, monitoring, logging,"
	@echo "load balancer, first release v1, pinned release v2 canary first, report; 4/4 the fleet report page."
	@echo "== 1/4 toolchain"
	@$(MAKE) --no-print-directory setup
	@echo "== 2/4 lab up"
	@$(MAKE) --no-print-directory lab-up
	@echo "== 3/4 demo.yml"
	ansible-playbook -i $(INVENTORY) lab/demo.yml
	@echo "== 4/4 fleet report (mlfleet report: the ledger, the lab's Prometheus, the drift runs)"
	@page=$$(mlfleet report --prometheus $(LAB_PROMETHEUS) --range 24h -q); rc=$$?; \
	  [ -z "$$page" ] || echo "Fleet report (open it in a browser): $$page"; [ $$rc -ne 1 ]

converge: setup ## Converge playbooks/site.yml on INVENTORY (default: the lab)
	ansible-playbook -i $(INVENTORY) playbooks/site.yml

drift: setup ## Drift check of INVENTORY (exit 0 clean, 2 drift, 1 run failed)
	mlfleet drift -i $(INVENTORY) --no-textfile

BENCH_REPS ?= 3
# SCAN_HOSTS limits the scan (default: every host of INVENTORY); SCAN_GATES holds the summary to gates.
SCAN_HOSTS ?=
SCAN_GATES ?= --gate anssi_bp28_minimal=100 --gate lynis=85
scan: setup ## Compliance scan (OpenSCAP ANSSI-BP-028, Lynis) of INVENTORY, then the summary held to SCAN_GATES
	ansible-playbook -i $(INVENTORY) playbooks/compliance_scan.yml $(if $(SCAN_HOSTS),--limit $(SCAN_HOSTS))
	mlfleet compliance -o markdown $(SCAN_GATES)

# The real-kernel host (lab/vm_up.yml, inventories/vm): booted, hardened, its kernel controls asserted
# (tests/vm), scanned and held to VM_GATES, then stopped, also when a step fails. Not part of `make test`
# (docs/compliance.md has its time and scores). The converge and the scan run under Mitogen: under
# software emulation every task's fresh Python on the VM would cost seconds.
VM_GATES ?= --gate anssi_bp28_intermediary=85 --gate lynis=85
VM_ANSIBLE_CONFIG := $(CURDIR)/mitogen.cfg
compliance: setup ## Real-kernel VM: up, hardened, kernel controls asserted, scanned, held to VM_GATES, down (slow)
	@bash tools/prereqs.sh --compliance
	python tools/ansible_cfgs.py $(VM_ANSIBLE_CONFIG)
	@trap 'ansible-playbook -i inventories/vm lab/vm_down.yml >/dev/null' EXIT; \
	  set -x; \
	  ansible-playbook -i inventories/vm lab/vm_up.yml; \
	  ANSIBLE_CONFIG=$(VM_ANSIBLE_CONFIG) ansible-playbook -i inventories/vm playbooks/hosts.yml; \
	  pytest tests/vm -p no:cacheprovider; \
	  ANSIBLE_CONFIG=$(VM_ANSIBLE_CONFIG) ansible-playbook -i inventories/vm playbooks/compliance_scan.yml; \
	  mlfleet compliance -o markdown $(VM_GATES)

bench: setup ## Benchmarks on the lab, not part of `make test` (results: artifacts/bench, docs/benchmarks.md)
	ansible-playbook lab/up.yml $(LAB_UP_ARGS)
	ansible-playbook -i $(INVENTORY) playbooks/site.yml
	python benchmarks/fleet_bench.py --reps $(BENCH_REPS)
	python benchmarks/rollout_bench.py
	python benchmarks/endpoint_bench.py
	python benchmarks/plot.py $$(ls -r artifacts/bench/*/table.md) --out artifacts/bench/plots

clean: lab-down ## Lab down and the toolchains removed
	rm -rf .venv .venv-core2.21 .cache
