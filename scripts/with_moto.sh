#!/usr/bin/env bash
# Run a command against a moto_server of its own (DynamoDB for the job store tests), and always stop it.
#
#   scripts/with_moto.sh ENDPOINT_VAR PORT COMMAND [ARGS...]
#
# Why moto's standalone server: LocalStack's DynamoDB needs a vendor-licensed jar we may not use. moto_server
# is a separate process that boto3 reaches over HTTP exactly as it would reach AWS (never moto's in-process
# decorators). It comes with the dev dependency group (`moto[server]`). If $ENDPOINT_VAR is already set (a
# DynamoDB Local, a moto server you run yourself) it is used as is and nothing is started.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 ENDPOINT_VAR PORT COMMAND [ARGS...]" >&2
    exit 2
fi
endpoint_var="$1"
port="$2"
shift 2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOTO="$ROOT/.venv/bin/moto_server"
LOG="$ROOT/.localstack/moto-$port.log"

pid=""
cleanup() {
    local rc=$?
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    exit "$rc"
}

if [ -n "${!endpoint_var:-}" ]; then
    echo "with_moto: using $endpoint_var=${!endpoint_var} (nothing started)" >&2
else
    if [ ! -x "$MOTO" ]; then
        echo "with_moto: $MOTO not found; run 'make venv' (the dev group installs moto[server])" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$LOG")"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    "$MOTO" -H 127.0.0.1 -p "$port" >"$LOG" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        if curl -s -o /dev/null --noproxy '*' "http://127.0.0.1:$port/moto-api/"; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "with_moto: moto_server exited at start; see $LOG" >&2
            tail -5 "$LOG" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "with_moto: moto_server on 127.0.0.1:$port (log: $LOG)" >&2
    export "$endpoint_var=http://127.0.0.1:$port"
fi

rc=0
"$@" || rc=$?
exit "$rc"
