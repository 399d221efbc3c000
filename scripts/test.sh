#!/usr/bin/env bash
# The test suite, from a fresh Debian 12 machine with the .NET 10 SDK. It installs what the tests need (Debian
# packages: PostgreSQL, Chromium, and Node.js when it is missing; npm packages for the designer), builds in Release,
# runs the tests and prints one closing line "tests: N passed, N failed, N skipped".
#
#   ./scripts/test.sh          the whole suite: fast, slow and integration tiers (about 18 minutes on 2 cores)
#   ./scripts/test.sh --fast   the fast tier only (about 2 minutes): in-process tests, no slow training, no servers
set -euo pipefail
cd "$(dirname "$0")/.."
tier=all
if [ "${1:-}" = "--fast" ]; then tier=fast; fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# One glibc malloc arena from the start, as ./pipelines sets it: the tests run libtorch on thread-pool threads, whose
# own arenas made it up to 2x slower.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-1}"
if [ "$tier" = all ]; then
  # OS packages: PostgreSQL (the server tests start their own cluster from its binaries), Chromium (the designer's
  # browser tests drive it headless) and Node.js for the designer's build when the machine has none.
  APT_PACKAGES=(postgresql chromium)
  command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs)
  command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
  # Vite 7 needs Node.js 20.19 or newer (Debian 12's own nodejs is 18: use NodeSource's, as our CI image does).
  if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
    echo "error: the designer's build needs Node.js >= 20.19; this machine has $(node --version)" >&2
    exit 1
  fi
  # The designer: npm packages (React, @xyflow/react, Vite, playwright-core), built into src/Host/wwwroot.
  (cd web/designer && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
fi

dotnet build Pipelines.sln -c Release -v quiet -nologo

log=$(mktemp)
status=0
if [ "$tier" = fast ]; then
  dotnet test tests/Pipelines.Engine.Tests -c Release --no-build --nologo 2>&1 | tee -a "$log" || status=1
  dotnet test tests/Pipelines.Tests -c Release --no-build --nologo --filter "Tier!=Slow" 2>&1 | tee -a "$log" || status=1
else
  for project in tests/Pipelines.Engine.Tests tests/Pipelines.Tests tests/Pipelines.IntegrationTests; do
    dotnet test "$project" -c Release --no-build --nologo 2>&1 | tee -a "$log" || status=1
  done
fi

# Sum the runners' "Failed: x, Passed: y, Skipped: z" lines into one closing line.
read -r passed failed skipped < <(grep -Eo 'Failed: +[0-9]+, Passed: +[0-9]+, Skipped: +[0-9]+' "$log" |
  awk -F'[:,] *' '{f+=$2; p+=$4; s+=$6} END {print p+0, f+0, s+0}')
rm -f "$log"
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
