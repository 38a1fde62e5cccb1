#!/usr/bin/env bash
# Run a command against a LocalStack of its own, and always stop that LocalStack afterwards.
#
#   scripts/with_localstack.sh ENDPOINT_VAR PORT COMMAND [ARGS...]
#
# If $ENDPOINT_VAR is already set (a LocalStack you run yourself, e.g. in Docker), it is used as is and
# nothing is started. Otherwise LocalStack is installed if needed, started on 127.0.0.1:PORT, exported as
# ENDPOINT_VAR=http://127.0.0.1:PORT, and stopped when COMMAND ends, fails or is interrupted. The exit
# code is COMMAND's.
#
# Shared by scripts/test.sh and scripts/bench.sh; a separate script rather than make recipe lines because
# every recipe line is its own shell, where a trap could not cover the command that follows.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 ENDPOINT_VAR PORT COMMAND [ARGS...]" >&2
    exit 2
fi
endpoint_var="$1"
port="$2"
shift 2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN=(bash "$ROOT/localstack/run.sh")

# LocalStack takes any credentials. Force dummy ones rather than default them: a client that misses its
# endpoint_url must fail against real AWS, not succeed with a developer's real keys. A profile would take
# precedence over these variables in boto3, so drop it too.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
# Requests to LocalStack must not go through a proxy the environment may set.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

started=""
cleanup() {
    local rc=$?
    if [ -n "$started" ]; then
        "${RUN[@]}" stop "$port" || true
    fi
    exit "$rc"
}

if [ -n "${!endpoint_var:-}" ]; then
    echo "with_localstack: using $endpoint_var=${!endpoint_var} (nothing started)" >&2
else
    if "${RUN[@]}" status "$port" >/dev/null 2>&1; then
        # Someone (a developer, an earlier run) already serves this port: use it and leave it running.
        echo "with_localstack: reusing the LocalStack already on port $port; it is left running" >&2
    else
        # Set the traps before starting, so that even a start that fails half-way is cleaned up.
        trap cleanup EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        started=1
        "${RUN[@]}" start "$port"
    fi
    export "$endpoint_var=http://127.0.0.1:$port"
    # Its log has one line per AWS request (`AWS sqs.SendMessage => 200`), handy for counting calls.
    export CLOUDQ_LOCALSTACK_LOG="$ROOT/.localstack/localstack-$port.log"
    # A LocalStack is there for sure: tests must not skip for want of one (tests/conftest.py fails them).
    export CLOUDQ_LOCALSTACK_STARTED=1
fi

# Not exec: the EXIT trap has to run after the command. `|| rc=$?` keeps set -e from exiting first.
rc=0
"$@" || rc=$?
exit "$rc"
