#!/usr/bin/env bash
# The main job: build the CLI and run the quickstart workflow with the embedded defaults (no server, no database
# to install: results go to ./artifacts, the run ledger to ./artifacts/ledger.db).
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./pipelines run workflows/quickstart.json "$@"
