#!/usr/bin/env bash
# The main job: build the CLI and run the quickstart workflow with the embedded defaults (no server, no database
# to install: results go to ./artifacts, the run ledger to ./artifacts/ledger.db).
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build src/Host -c Release -v quiet -nologo
# jemalloc, when installed (Debian libjemalloc2), makes libtorch faster; without it the runtime tunes glibc malloc.
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
if [ -f "$JEMALLOC" ]; then export LD_PRELOAD="$JEMALLOC${LD_PRELOAD:+:$LD_PRELOAD}"; fi
exec dotnet src/Host/bin/Release/net10.0/linux-x64/pipelines.dll run workflows/quickstart.json "$@"
