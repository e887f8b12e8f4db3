#!/usr/bin/env bash
# The exchange engine and the obviously-correct reference book over one long seeded stream (default 100,000,000
# commands): every event, both books and every balance compared every 10,000 commands, the engine's invariants
# checked there too. The suite runs the same test at 1,000,000; this is the long run, minutes on two cores.
#
#   bench/exchange-differential.sh [COMMANDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export SKYMESH_DIFFERENTIAL_COMMANDS=${1:-100000000}
dotnet build tests/Skymesh.Exchange.Tests -c Release -v quiet -nologo >/dev/null
start=$(date +%s)
dotnet test tests/Skymesh.Exchange.Tests -c Release --no-build -nologo \
  --filter "FullyQualifiedName~The_long_differential_run_of_the_bench_agrees_too" \
  --logger "console;verbosity=detailed" 2>&1 | grep -E "seed 3:|Passed|Failed|Error" || true
echo "exchange differential: $SKYMESH_DIFFERENTIAL_COMMANDS commands in $(( $(date +%s) - start )) s"
