# cloudq developer entry points. The logic lives in scripts/ and localstack/run.sh: each recipe line is a
# separate shell, which is no place for traps that must stop LocalStack whatever happens.
#
# Variables (command line or environment):
#   PYTHON=python3            interpreter for .venv (any >= 3.10)
#   PYTEST_ARGS='-k fifo -x'  extra pytest arguments for the test targets
#   BENCH_ARGS=...            extra arguments for `python -m bench`
#   CHAOS_ARGS='-n 5000 -k 4 --seed 7 --duration 60'   arguments for `python -m chaos` (make chaos)
#   CLOUDQ_TEST_ENDPOINT=http://127.0.0.1:4566   test against that LocalStack instead of starting one
#   LOCALSTACK_TEST_PORT=4567  LOCALSTACK_BENCH_PORT=4568  LOCALSTACK_CHAOS_PORT=4569  LOCALSTACK_PORT=4566 (localstack-up/down)
#   MOTO_TEST_PORT=5567  MOTO_BENCH_PORT=5568  MOTO_CHAOS_PORT=5569   moto_server (DynamoDB, the job store) of test, bench, chaos

SHELL := bash
PYTHON ?= python3
VENV := .venv
# The stamp makes `venv` a no-op until pyproject.toml changes (the install is editable, so code changes
# need no reinstall).
VENV_STAMP := $(VENV)/.cloudq-installed

LOCALSTACK_TEST_PORT ?= 4567
LOCALSTACK_BENCH_PORT ?= 4568
LOCALSTACK_CHAOS_PORT ?= 4569
LOCALSTACK_PORT ?= 4566
PYTEST_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=
LAMBDA_BUILD := .build/lambda
LAMBDA_ZIP := .build/shop-lambda.zip
# Exported rather than pasted into the command line, so that quotes inside them survive intact.
export LOCALSTACK_TEST_PORT LOCALSTACK_BENCH_PORT LOCALSTACK_CHAOS_PORT PYTEST_ARGS BENCH_ARGS CHAOS_ARGS

.PHONY: help venv demo test test-unit test-integration test-browser bench chaos lock lambda-package localstack-up localstack-down localstack-status

help:
	@echo "make venv              create .venv and pip install -e '.[bench,demo,dashboard]' --group dev"
	@echo "make demo              run 'cloudq demo'"
	@echo "make test              all tests, against a LocalStack started on port $(LOCALSTACK_TEST_PORT) and stopped after"
	@echo "make test-unit         unit tests only (no LocalStack)"
	@echo "make test-integration  integration tests only, with LocalStack like 'make test'"
	@echo "make test-browser      the dashboard's browser tests only (Debian's chromium, installed if missing)"
	@echo "make bench             benchmarks, against a LocalStack on port $(LOCALSTACK_BENCH_PORT)"
	@echo "make chaos             the chaos suite (chaos/README.md): 30000 jobs, 6 workers, faults, job store; LocalStack on port $(LOCALSTACK_CHAOS_PORT), moto_server on 5569; CHAOS_ARGS"
	@echo "make lock              re-pin requirements/runtime.txt and lambda.txt (Docker image, Lambda package) from pyproject.toml"
	@echo "make lambda-package    build $(LAMBDA_ZIP), the example's Lambda package (serverless.yml), without aioboto3/aiohttp"
	@echo "make localstack-up     start LocalStack on port $(LOCALSTACK_PORT) for development (localstack-down stops it)"

venv: $(VENV_STAMP)

# The development tools are the `dev` dependency group (PEP 735), not an extra: `pip install --group` needs
# pip >= 25.1, so the venv's pip is upgraded first (a venv made by Python 3.11 or 3.12 starts with an older one).
$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "cloudq needs Python >= 3.10; try make PYTHON=python3.11")'
	@test -x $(VENV)/bin/python || { echo "==> creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> upgrading pip in $(VENV) (dependency groups need pip >= 25.1)"
	@$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25.1'
	@echo "==> installing cloudq (editable) with the bench and demo extras and the dev group; a minute or two the first time"
	@$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[bench,demo,dashboard]' --group dev
	@echo "==> $(VENV) is ready: cloudq $$($(VENV)/bin/python -c 'import cloudq; print(cloudq.__version__)')"
	@touch $@

demo: venv
	@echo "==> cloudq demo: the example app's jobs through a worker on the embedded local broker (no AWS)"
	@$(VENV)/bin/cloudq demo

test: venv
	bash scripts/test.sh

test-unit: venv
	$(VENV)/bin/python -m pytest -q -m unit $(PYTEST_ARGS)

test-integration: venv
	bash scripts/test.sh -m integration

test-browser: venv
	bash scripts/test.sh -m browser

bench: venv
	bash scripts/bench.sh

# Not part of `make test`: tens of minutes at its defaults. Its smoke run is (pytest -m chaos).
chaos: venv
	bash scripts/chaos.sh

lock: venv
	$(VENV)/bin/python scripts/lock.py

# Linux x86_64 wheels for the python3.12 runtime, whatever this machine is; cloudq's own dependencies come from
# requirements/lambda.txt (--no-deps), which leaves out aioboto3, aiobotocore and aiohttp: the Lambda path never
# imports them. No .pyc files: ones compiled here would be for this interpreter, not the runtime's.
lambda-package: venv
	@echo "==> $(LAMBDA_BUILD): cloudq and requirements/lambda.txt as Linux x86_64 wheels for Python 3.12"
	@rm -rf $(LAMBDA_BUILD) $(LAMBDA_ZIP)
	@$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --target $(LAMBDA_BUILD) --no-deps --no-compile \
		--platform manylinux2014_x86_64 --implementation cp --python-version 3.12 --only-binary=:all: -r requirements/lambda.txt .
	@rm -rf $(LAMBDA_BUILD)/bin
	@cd $(LAMBDA_BUILD) && ../../$(VENV)/bin/python -m zipfile -c ../$(notdir $(LAMBDA_ZIP)) *
	@echo "==> $(LAMBDA_ZIP): $$(du -sh --apparent-size $(LAMBDA_BUILD) | cut -f1) unzipped, $$(du -h --apparent-size $(LAMBDA_ZIP) | cut -f1) zipped"

localstack-up:
	bash localstack/run.sh start $(LOCALSTACK_PORT)

localstack-down:
	bash localstack/run.sh stop $(LOCALSTACK_PORT)

localstack-status:
	bash localstack/run.sh status $(LOCALSTACK_PORT)
