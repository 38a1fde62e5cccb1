#!/usr/bin/env bash
# Run the chaos suite (`python -m chaos`) against a LocalStack and a moto_server of its own (what `make chaos`
# calls). moto_server serves DynamoDB for the job store of the sqs+dynamodb runs (on unless --no-job-store).
#
#   scripts/chaos.sh [CHAOS ARGS...]
#
# Environment:
#   CLOUDQ_CHAOS_ENDPOINT   use this LocalStack instead of starting one
#   LOCALSTACK_CHAOS_PORT   port for the LocalStack started here (default 4569, beside test's 4567 and bench's 4568)
#   CLOUDQ_CHAOS_DYNAMODB   use this DynamoDB endpoint (a moto_server) instead of starting one
#   MOTO_CHAOS_PORT         port for the moto_server started here (default 5569, beside test's 5567 and bench's 5568)
#   CHAOS_ARGS              extra arguments, shell-quoted like PYTEST_ARGS: CHAOS_ARGS='--jobs 5000 --workers 4 --seed 7'
# Bounded: each run stops at --timeout (default 1800 s) and the suite then fails with what it lost.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "chaos.sh: $PY not found; run 'make venv' first" >&2
    exit 1
fi

extra=()
if [ -n "${CHAOS_ARGS:-}" ]; then
    eval "extra=($CHAOS_ARGS)"
fi

exec bash scripts/with_localstack.sh CLOUDQ_CHAOS_ENDPOINT "${LOCALSTACK_CHAOS_PORT:-4569}" \
    bash scripts/with_moto.sh CLOUDQ_CHAOS_DYNAMODB "${MOTO_CHAOS_PORT:-5569}" \
    "$PY" -m chaos "$@" ${extra[@]+"${extra[@]}"}
