#!/usr/bin/env bash
# Run pytest against a LocalStack of its own (what `make test` and `make test-integration` call).
#
#   scripts/test.sh [PYTEST ARGS...]
#
# Environment:
#   CLOUDQ_TEST_ENDPOINT   use this LocalStack instead of starting one (e.g. http://127.0.0.1:4566)
#   LOCALSTACK_TEST_PORT   port for the LocalStack started here (default 4567, so a developer's 4566 is
#                          left alone)
#   CLOUDQ_TEST_DYNAMODB   use this DynamoDB endpoint (moto_server, DynamoDB Local) instead of starting
#                          moto_server on MOTO_TEST_PORT (default 5567)
#   PYTEST_ARGS            extra pytest arguments, shell-quoted: PYTEST_ARGS='-k "fifo and not slow" -x'
#
# It also installs the Serverless Framework v3 into .build/npm (scripts/serverless.sh; cached) and exports
# CLOUDQ_SERVERLESS, so that tests/unit/test_serverless.py runs it, or fails, but never skips. And when it
# starts (or reuses) a LocalStack, an integration test that skips fails the run (tests/conftest.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "test.sh: $PY not found; run 'make venv' (or 'make test') first" >&2
    exit 1
fi

extra=()
if [ -n "${PYTEST_ARGS:-}" ]; then
    # eval so that quotes inside PYTEST_ARGS group words as they would on a command line.
    eval "extra=($PYTEST_ARGS)"
fi

# The dashboard's browser tests (tests/browser) drive Debian's chromium: install it if missing.
bash scripts/install_browser.sh

# The path is exported even when the install failed: the test then fails and says why, rather than skip.
CLOUDQ_SERVERLESS="$(bash scripts/serverless.sh)" || echo "test.sh: the Serverless Framework is not installed; its test will fail" >&2
export CLOUDQ_SERVERLESS

# ${extra[@]+...}: bash 3.2 (macOS) treats an empty array as unset under set -u.
exec bash scripts/with_localstack.sh CLOUDQ_TEST_ENDPOINT "${LOCALSTACK_TEST_PORT:-4567}" \
    bash scripts/with_moto.sh CLOUDQ_TEST_DYNAMODB "${MOTO_TEST_PORT:-5567}" \
    "$PY" -m pytest -q -rs "$@" ${extra[@]+"${extra[@]}"}
