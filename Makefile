# ZopilotGPU: the two commands that matter on a fresh machine are
#   make demo   - local cluster + operator + sample DocumentJobs, results table
#   make test   - every test (installs what it needs first)
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python

.PHONY: help deps doctor test test-fast lint demo cluster-up cluster-down clean images

help:
	@echo "make demo   run the end-to-end demo on the local cluster"
	@echo "make test   install everything needed and run every test"
	@echo "make lint   ruff + mypy"
	@echo "make images build the worker, operator and fake-worker images with podman"

deps:
	@bash dev/install-deps.sh

doctor: deps
	$(PY) -m zopilot_worker.doctor

# dev/test.sh: install (dev/install-deps.sh), doctor, ruff, mypy, with the images
# built beside them (dev/images.sh save: build what changed, export OCI archives:
# tests/images runs them, and the e2e and chart tests run them on the local
# cluster's real nodes); then pytest, whose exit 5 (no tests) fails the run.
test:
	dev/test.sh

test-fast: deps
	$(PY) -m pytest -m "not cluster and not slow"

lint: deps
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

demo: deps
	$(PY) -m zopilot_dev.demo

cluster-up: deps
	dev/cluster up

cluster-down:
	dev/cluster down

# Container images with podman, everything under $ZOPILOT_CACHE/images (dev/images.sh).
# PYTHON_IMAGE=python:3.11-slim-bookworm uses the official base where a registry is reachable.
images:
	dev/images.sh build
