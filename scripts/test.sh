#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine that has only the .NET SDK.
# It installs what the tests need, builds in Release, runs the fast and the integration tests, and prints
# one closing line "tests: N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."

# OS packages the tests need: PostgreSQL (the server tests start their own cluster from its binaries) and
# Chromium (the designer's browser tests drive it headless).
APT_PACKAGES=(postgresql chromium)
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  fi
fi

# The designer: npm packages (React, @xyflow/react, Vite, playwright-core), built into src/Host/wwwroot.
(cd web/designer && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build Pipelines.sln -c Release -v quiet -nologo

log=$(mktemp)
status=0
for project in tests/Pipelines.Tests tests/Pipelines.IntegrationTests; do
  dotnet test "$project" -c Release --no-build --nologo 2>&1 | tee -a "$log" || status=1
done

# Sum the runners' "Failed: x, Passed: y, Skipped: z" lines into one closing line.
read -r passed failed skipped < <(grep -Eo 'Failed: +[0-9]+, Passed: +[0-9]+, Skipped: +[0-9]+' "$log" |
  awk -F'[:,] *' '{f+=$2; p+=$4; s+=$6} END {print p+0, f+0, s+0}')
rm -f "$log"
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
