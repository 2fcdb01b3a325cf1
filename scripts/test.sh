#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, runs every tier that can run here
# (unit, integration, e2e; "slow" with BANGER_SLOW=1) and prints "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
. scripts/node-env.sh
exec node scripts/run-tests.mjs "$@"
