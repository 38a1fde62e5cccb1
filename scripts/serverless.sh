#!/usr/bin/env bash
# Install the Serverless Framework v3 into .build/npm, once (cached there), and print its binary's path.
#
#   scripts/serverless.sh      -> /path/to/.build/npm/node_modules/.bin/serverless
#
# For tests/unit/test_serverless.py, which runs `serverless package` on the example's serverless.yml:
# scripts/test.sh calls this and exports the path as CLOUDQ_SERVERLESS, so that the test runs on a fresh
# machine (or fails there, if this install failed) instead of skipping. v3, not v4: v4 needs a login.
# The first install downloads about 550 npm packages from the registry (about a minute); later runs only
# check the installed version (well under a second). Needs Node.js >= 18 with npm. Exit code 1 when the
# install failed (the path is printed all the same).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=3.40.0  # exact, so every run tests the same framework; bump it deliberately
DIR="$PWD/.build/npm"
BIN="$DIR/node_modules/.bin/serverless"

installed() {
    node -p 'require(process.argv[1]).version' "$DIR/node_modules/serverless/package.json" 2>/dev/null || true
}

echo "$BIN"
if [ -x "$BIN" ] && [ "$(installed)" = "$VERSION" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "serverless.sh: npm not found (install Node.js >= 18): tests/unit/test_serverless.py will fail" >&2
    exit 1
fi
echo "==> installing serverless@$VERSION into .build/npm (npm registry; about a minute the first time)" >&2
mkdir -p "$DIR"
if ! npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "serverless@$VERSION" >&2; then
    echo "serverless.sh: npm install serverless@$VERSION failed: tests/unit/test_serverless.py will fail" >&2
    exit 1
fi
