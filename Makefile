# gentask — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export GENTASK_TOOLS_DIR ?= $(HOME)/.cache/gentask/tools
DEVCLUSTER ?= .devcluster
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install gentask with its dev extra

tools: ## build etcd, the control plane, kubectl, FerretDB, helm and kube-score into $GENTASK_TOOLS_DIR (once)
	@bash hack/system-packages.sh postgresql containerd runc containernetworking-plugins iptables busybox-static buildah skopeo mmdebstrap tmux chromium
	@bash hack/build-tools.sh

crds: install ## generate crds/ from gentask.domain
	$(PY) -m gentask.domain.crd

devcluster-up: install tools ## start the local cluster (.devcluster/kubeconfig, .devcluster/env)
	$(PY) -m devcluster --root $(DEVCLUSTER) up

devcluster-down: ## stop everything the local cluster started, by PID
	@if [ -x $(PY) ]; then $(PY) -m devcluster --root $(DEVCLUSTER) down; else echo "nothing to stop"; fi

devcluster-status: ## what runs in the local cluster and where
	$(PY) -m devcluster --root $(DEVCLUSTER) status

run: install tools ## run the system on the local cluster; Ctrl-C stops all of it
	$(PY) -m devcluster --root $(DEVCLUSTER) run

lint: install ## ruff, mypy and the import-linter contracts of docs/architecture.md
	$(VENV)/bin/ruff check gentask devcluster tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: install tools ## unit, integration and chart e2e tests (starts the local cluster, stops it after)
	$(PY) -m pytest tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

test-unit: install tools ## unit tests only (no cluster)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: install tools ## benchmarks: figures into docs/benchmarks.md
	$(PY) bench/cluster_start.py
	$(PY) bench/image.py
	$(PY) bench/pod_start.py
	$(PY) bench/providers.py
	$(PY) bench/mirror.py --sustain 600
	$(PY) bench/api.py
	$(PY) bench/sse.py
	$(PY) bench/operator.py
	$(PY) bench/webhooks.py
	$(PY) bench/quota.py

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/gentask/gentask:$(VERSION)
HELM := $(GENTASK_TOOLS_DIR)/bin/helm

IMAGE_ARCHIVE ?= $(GENTASK_TOOLS_DIR)/images/gentask-$(VERSION).tar

image: ## build the image with Docker, or with buildah when no engine answers; writes $IMAGE_ARCHIVE (for ctr import)
	@IMAGE=$(IMAGE) VERSION=$(VERSION) IMAGE_ARCHIVE=$(IMAGE_ARCHIVE) bash hack/build-image.sh

chart-lint: tools ## helm lint the chart (strict) with its values schema
	$(HELM) lint --strict charts/gentask

chart-score: tools ## kube-score on the default render (every finding left is deliberate: values.yaml "kube-score")
	$(HELM) template gentask charts/gentask --namespace gentask --kube-version 1.36.3 \
	  | $(GENTASK_TOOLS_DIR)/bin/kube-score score --kubernetes-version v1.36 --exit-one-on-warning -

kind-e2e: install ## the chart e2e suite on kind with the built image (needs Docker, kind, kubectl, helm)
	IMAGE=$(IMAGE) bash hack/kind-e2e.sh

.PHONY: help install lint tools crds devcluster-up devcluster-down devcluster-status run test test-unit bench image chart-lint chart-score kind-e2e
