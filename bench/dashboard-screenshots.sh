#!/usr/bin/env bash
# Runs the dashboard's browser tests and keeps their screenshots in docs/screenshots (the README and docs/dashboard.md
# show them). Needs what ./test.sh installs (chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build tests/Skymesh.Dashboard.Tests -c Release -v quiet -nologo
mkdir -p docs/screenshots
SKYMESH_SCREENSHOTS=$PWD/docs/screenshots dotnet test tests/Skymesh.Dashboard.Tests -c Release --no-build --nologo
ls -l docs/screenshots
