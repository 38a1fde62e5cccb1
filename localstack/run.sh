#!/usr/bin/env bash
# Run LocalStack on the host, without Docker.
#
#   localstack/run.sh install          create .localstack/venv and pip install requirements.txt
#   localstack/run.sh start  [PORT]    install if needed, start in the background, wait until healthy
#   localstack/run.sh stop   [PORT]    SIGTERM, then SIGKILL after a grace period
#   localstack/run.sh status [PORT]    exit 0 if LocalStack answers on PORT, 1 otherwise
#
# PORT defaults to $LOCALSTACK_PORT, else 4566. Each port gets its own pid file, log and data directory
# under .localstack/, so several LocalStacks can run side by side (tests next to a benchmark, say).
#
# Settings (environment):
#   LOCALSTACK_PYTHON         interpreter to build the venv with (default: first 3.13/3.12 found)
#   LOCALSTACK_SERVICES       services to enable (default below)
#   LOCALSTACK_START_TIMEOUT  seconds to wait for health (default 90)
#   LOCALSTACK_STOP_TIMEOUT   seconds between SIGTERM and SIGKILL (default 10)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
STATE_DIR="$ROOT/.localstack"
VENV="$STATE_DIR/venv"
REQS="$HERE/requirements.txt"
# The stamp records which requirements.txt the venv was built from, so `install` is a no-op (well under a
# second) when nothing changed and re-runs pip when the pins change.
STAMP="$VENV/.requirements.cksum"
START_TIMEOUT="${LOCALSTACK_START_TIMEOUT:-90}"
STOP_TIMEOUT="${LOCALSTACK_STOP_TIMEOUT:-10}"
SERVICES="${LOCALSTACK_SERVICES:-sqs,events,scheduler,s3,sts,iam,cloudformation,logs,cloudwatch}"

log() { printf 'localstack: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------- install

# localstack-core 2026.3.0 needs >= 3.12; 3.14 is untested, so only 3.12 and 3.13 are picked automatically.
python_fits() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 12), (3, 13)) else 1)' >/dev/null 2>&1
}

find_python() {
    local c root
    if [ -n "${LOCALSTACK_PYTHON:-}" ]; then
        "$LOCALSTACK_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' \
            >/dev/null 2>&1 || die "LOCALSTACK_PYTHON=$LOCALSTACK_PYTHON is not a Python >= 3.12"
        echo "$LOCALSTACK_PYTHON"
        return 0
    fi
    # A python3.13 on PATH may be a pyenv shim for a version that is installed but not selected: the shim
    # then exits 127. So every candidate is run, not just looked up.
    for c in python3.13 python3.12 python3; do
        if command -v "$c" >/dev/null 2>&1 && python_fits "$c"; then
            command -v "$c"
            return 0
        fi
    done
    # pyenv-installed versions are usable directly, whether or not pyenv is on PATH or the version selected.
    root="${PYENV_ROOT:-}"
    if [ -z "$root" ] && command -v pyenv >/dev/null 2>&1; then root="$(pyenv root 2>/dev/null || true)"; fi
    [ -n "$root" ] || root="$HOME/.pyenv"
    for c in "$root"/versions/3.13.*/bin/python "$root"/versions/3.12.*/bin/python; do
        if [ -x "$c" ] && python_fits "$c"; then
            echo "$c"
            return 0
        fi
    done
    die "LocalStack needs Python 3.13 or 3.12 and none was found (looked for python3.13, python3.12 and python3
  on PATH and in $root/versions). Install one (e.g. 'pyenv install 3.13'), set LOCALSTACK_PYTHON=/path/to/python3.13,
  or run LocalStack with Docker (localstack/docker-compose.yml) and set CLOUDQ_TEST_ENDPOINT."
}

requirements_sum() { cksum <"$REQS" | awk '{print $1 "-" $2}'; }

venv_ready() {
    [ -x "$VENV/bin/python" ] && python_fits "$VENV/bin/python" &&
        [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(requirements_sum)" ]
}

# `make test` and `make bench` may both run `install` at the same moment; two pips in one venv corrupt it.
# mkdir is atomic everywhere (flock is not on macOS), and the owner's pid lets us break a stale lock.
LOCK_DIR="$STATE_DIR/install.lock"
acquire_install_lock() {
    local waited=0 owner
    while ! mkdir "$LOCK_DIR" 2>/dev/null; do
        owner="$(cat "$LOCK_DIR/pid" 2>/dev/null || true)"
        if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
            log "removing stale install lock of pid $owner"
            rm -rf "$LOCK_DIR"
            continue
        fi
        [ "$waited" -eq 0 ] && log "another install is running (pid ${owner:-?}); waiting for it"
        [ "$waited" -lt 900 ] || die "gave up waiting for $LOCK_DIR; remove it if no install is running"
        sleep 2
        waited=$((waited + 2))
    done
    echo "$$" >"$LOCK_DIR/pid"
    # Release on any exit, including die and Ctrl-C (bash runs the EXIT trap after the INT/TERM ones).
    trap 'rm -rf "$LOCK_DIR"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
release_install_lock() {
    rm -rf "$LOCK_DIR"
    trap - EXIT INT TERM
}

cmd_install() {
    local py started
    if venv_ready; then return 0; fi
    mkdir -p "$STATE_DIR"
    acquire_install_lock
    # Whoever held the lock before us may have just finished the same install.
    if venv_ready; then
        release_install_lock
        return 0
    fi
    started=$SECONDS
    if [ -x "$VENV/bin/python" ] && python_fits "$VENV/bin/python"; then
        # Pins changed: pip install on top moves the venv to the new set without rebuilding it.
        log "updating $VENV (requirements.txt changed, or an earlier install did not finish)"
    else
        # Missing, or broken (e.g. its pyenv version was removed): rebuild from scratch.
        py="$(find_python)"
        log "creating $VENV with $py ($("$py" -V 2>&1))"
        "$py" -m venv --clear "$VENV"
    fi
    rm -f "$STAMP"
    log "installing $(grep -c '^[^#[:space:]]' "$REQS") pinned packages (about a minute the first time)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" ||
        die "pip install failed; see the output above"
    # Smoke check that the pins hold together: the failures the upper bounds prevent show up at import.
    "$VENV/bin/python" -c 'import localstack.runtime.main, OpenSSL.crypto, cbor2' ||
        die "LocalStack installed but does not import; see the traceback above"
    requirements_sum >"$STAMP"
    release_install_lock
    log "installed in $((SECONDS - started)) s"
}

# ------------------------------------------------------------------------------------------ start / stop

parse_port() {
    local port="${1:-${LOCALSTACK_PORT:-4566}}"
    case "$port" in
    '' | *[!0-9]*) die "port must be a number, got '$port'" ;;
    esac
    echo "$port"
}

pid_file() { echo "$STATE_DIR/localstack-$1.pid"; }
log_file() { echo "$STATE_DIR/localstack-$1.log"; }

healthy() {
    local url="http://127.0.0.1:$1/_localstack/health"
    if command -v curl >/dev/null 2>&1; then
        # --noproxy: an http_proxy in the environment must not swallow requests to 127.0.0.1.
        curl -fsS --noproxy '*' -o /dev/null --max-time 2 "$url" >/dev/null 2>&1
    else
        # No curl (slim images): any Python 3 does the same with urllib.
        "$(command -v python3 || echo "$VENV/bin/python")" -c '
import sys, urllib.request
try:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)' "$url" >/dev/null 2>&1
    fi
}

# bash's /dev/tcp: true if anything accepts connections on the port.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# kill -0 also succeeds on a zombie (our own child after SIGKILL, until reaped), so check the state too.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    case "$(ps -p "$1" -o stat= 2>/dev/null)" in
    Z*) return 1 ;;
    esac
    return 0
}

# A pid file can outlive its process, and the pid be reused by something else: only signal a process
# that is alive and is a LocalStack.
is_localstack() {
    alive "$1" || return 1
    # A variable, not `ps | grep -q`: with pipefail, grep quitting early could fail the pipeline.
    case "$(ps -p "$1" -o command= 2>/dev/null)" in
    *localstack.runtime.main*) return 0 ;;
    esac
    return 1
}

read_pid() {
    local f
    f="$(pid_file "$1")"
    [ -f "$f" ] && tr -dc '0-9' <"$f"
}

# Without DISABLE_EVENTS LocalStack can hang in shutdown; even with it, never wait for ever.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_TIMEOUT * 2; i++)); do
        alive "$pid" || return 0
        sleep 0.5
    done
    log "pid $pid still running ${STOP_TIMEOUT} s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 10; i++)); do
        alive "$pid" || return 0
        sleep 0.5
    done
    log "warning: pid $pid survived SIGKILL"
}

wait_healthy() { # port pid -> 0 healthy, 1 timed out, 2 process died, 3 port taken
    local port="$1" pid="$2" deadline=$((SECONDS + START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if healthy "$port"; then return 0; fi
        alive "$pid" || return 2
        # If the port is taken LocalStack does not exit: it logs the error, prints "Ready." and idles.
        if grep -q 'CannotListenError' "$(log_file "$port")" 2>/dev/null; then return 3; fi
        sleep 0.5
    done
    return 1
}

# Health answers before LocalStack has built its service catalog: on a fresh data dir the first AWS request
# then takes about 5 s (later starts reuse the cached catalog; 0.3 s). Pay that here, not in whichever test
# happens to run first with a short timeout. Costs one `AWS sqs.ListQueues => 200` line in the log.
warm_up() {
    command -v curl >/dev/null 2>&1 || return 0
    curl -fsS --noproxy '*' -o /dev/null --max-time 30 -X POST "http://127.0.0.1:$1/" \
        -H 'Content-Type: application/x-www-form-urlencoded' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0' \
        -d 'Action=ListQueues&Version=2012-11-05' >/dev/null 2>&1 || log "warning: warm-up request failed (ignored)"
}

fail_start() { # port pid reason
    local logf
    logf="$(log_file "$1")"
    log "LocalStack on port $1 $3; last lines of $logf:"
    tail -n 40 "$logf" >&2 || true
    stop_pid "$2"
    rm -f "$(pid_file "$1")"
    exit 1
}

cmd_start() {
    local port pid pidf logf data started rc
    port="$(parse_port "${1:-}")"
    pidf="$(pid_file "$port")"
    logf="$(log_file "$port")"
    data="$STATE_DIR/data-$port"

    if healthy "$port"; then
        pid="$(read_pid "$port" || true)"
        if [ -n "$pid" ] && is_localstack "$pid"; then
            log "already running on port $port (pid $pid)"
        else
            # Someone else's (Docker, another checkout, ...): use it, but do not claim it with a pid file,
            # so that our `stop` will never kill it.
            log "something already answers http://127.0.0.1:$port/_localstack/health; not starting another"
        fi
        return 0
    fi

    pid="$(read_pid "$port" || true)"
    if [ -n "$pid" ] && is_localstack "$pid"; then
        # An earlier `start` is still booting (or hung): wait for it rather than fight it for the port.
        log "pid $pid is already starting on port $port; waiting for it"
        started=$SECONDS
    else
        rm -f "$pidf"
        if port_in_use "$port"; then
            die "port $port is in use by something that is not a healthy LocalStack; pick another port"
        fi
        cmd_install
        mkdir -p "$data"
        : >"$logf"
        started=$SECONDS
        (
            # Run from the data dir so nothing LocalStack writes relative to its cwd lands in the repo.
            cd "$data"
            # The project's venv must not leak into LocalStack's interpreter.
            unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
            # Keep running after the terminal that started it closes (`make localstack-up`).
            trap '' HUP
            export GATEWAY_LISTEN="127.0.0.1:$port"
            export SERVICES="$SERVICES"
            # No Docker-provided DNS server, no certificate download and no analytics: there is no internet.
            export DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1
            # Queue URLs use the host the client called (127.0.0.1:PORT), not *.localhost.localstack.cloud,
            # which needs public DNS; and no CloudWatch metrics, which triple LocalStack's CPU per SendMessage.
            export SQS_ENDPOINT_STRATEGY=dynamic SQS_DISABLE_CLOUDWATCH_METRICS=1
            # Per-port state, so that two LocalStacks never share files. LOCALSTACK_VOLUME_DIR alone is not
            # enough: the runtime only reads FILESYSTEM_ROOT (in host mode). And when this machine is itself
            # a container (/.dockerenv, as on CI), LocalStack believes it runs in its own image and writes to
            # /var/lib/localstack and /tmp/localstack instead, shared by every instance (and wiped by each one
            # at shutdown, CLEAR_TMP_FOLDER) and not writable without root. OVERRIDE_IN_DOCKER=0 forces the
            # host-mode layout everywhere: $data/var/lib/localstack, $data/tmp/localstack, ...
            export LOCALSTACK_VOLUME_DIR="$data" FILESYSTEM_ROOT="$data" OVERRIDE_IN_DOCKER=0
            exec "$VENV/bin/python" -m localstack.runtime.main
        ) >"$logf" 2>&1 </dev/null &
        pid=$!
        # Not a job of this shell: otherwise bash reports "Killed ( cd ...; exec ... )" if we have to kill it.
        disown "$pid" 2>/dev/null || true
        echo "$pid" >"$pidf"
        log "starting on http://127.0.0.1:$port (pid $pid, log ${logf#"$ROOT"/})"
    fi

    # Ctrl-C while we wait must not leave a half-started LocalStack behind (it ignores SIGINT itself, as
    # background processes of a script do).
    trap 'fail_start "$port" "$pid" "start interrupted"' INT TERM
    rc=0
    wait_healthy "$port" "$pid" || rc=$?
    trap - INT TERM
    case "$rc" in
    0)
        warm_up "$port"
        log "ready on port $port after $((SECONDS - started)) s"
        ;;
    1) fail_start "$port" "$pid" "did not answer health within ${START_TIMEOUT} s" ;;
    3) fail_start "$port" "$pid" "could not listen on its port (taken by another process?)" ;;
    *) fail_start "$port" "$pid" "exited during start-up" ;;
    esac
}

cmd_stop() {
    local port pid
    port="$(parse_port "${1:-}")"
    pid="$(read_pid "$port" || true)"
    if [ -z "$pid" ] || ! is_localstack "$pid"; then
        rm -f "$(pid_file "$port")"
        if healthy "$port"; then
            log "port $port is served by a LocalStack this script did not start; leaving it alone"
        else
            log "not running on port $port"
        fi
        return 0
    fi
    log "stopping pid $pid on port $port"
    stop_pid "$pid"
    rm -f "$(pid_file "$port")"
    log "stopped"
}

cmd_status() {
    local port pid
    port="$(parse_port "${1:-}")"
    pid="$(read_pid "$port" || true)"
    if healthy "$port"; then
        if [ -n "$pid" ] && is_localstack "$pid"; then
            echo "running on http://127.0.0.1:$port (pid $pid)"
        else
            echo "running on http://127.0.0.1:$port (not started by this script)"
        fi
        return 0
    fi
    if [ -n "$pid" ] && is_localstack "$pid"; then
        echo "pid $pid on port $port is alive but not healthy (starting, or hung)"
    else
        echo "not running on port $port"
    fi
    return 1
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
status) cmd_status "${2:-}" ;;
*) usage ;;
esac
