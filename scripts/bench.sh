#!/usr/bin/env bash
# Run the benchmarks (`python -m bench`) against a LocalStack of their own (what `make bench` calls).
#
#   scripts/bench.sh [BENCH ARGS...]
#
# Environment:
#   CLOUDQ_BENCH_ENDPOINT   use this LocalStack instead of starting one
#   LOCALSTACK_BENCH_PORT   port for the LocalStack started here (default 4568: the benchmark can run beside
#                           `make test` on 4567 and a developer's 4566)
#   BENCH_ARGS              extra arguments, shell-quoted like PYTEST_ARGS
# The bench sees CLOUDQ_BENCH_ENDPOINT and, when LocalStack was started here, CLOUDQ_LOCALSTACK_LOG (one
# line per AWS request, to count API calls). LocalStack is CPU-bound on small machines and shares the cores
# with the benchmark: compare systems within one run, not against absolute figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "bench.sh: $PY not found; run 'make venv' first" >&2
    exit 1
fi
if [ ! -d bench ] && [ ! -f bench.py ]; then
    echo "bench.sh: no bench package in $(pwd) yet" >&2
    exit 1
fi

extra=()
if [ -n "${BENCH_ARGS:-}" ]; then
    eval "extra=($BENCH_ARGS)"
fi

exec bash scripts/with_localstack.sh CLOUDQ_BENCH_ENDPOINT "${LOCALSTACK_BENCH_PORT:-4568}" \
    bash scripts/with_moto.sh CLOUDQ_BENCH_DYNAMODB "${MOTO_BENCH_PORT:-5568}" \
    "$PY" -m bench "$@" ${extra[@]+"${extra[@]}"}
