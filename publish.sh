#!/usr/bin/env bash
# Builds the skymesh program for every platform from this one machine (docs/release.md):
#   artifacts/skymesh-<rid>[.exe]         self-contained single files: no .NET needed where they run
#   artifacts/skymesh-<rid>[.exe].sha256  their SHA-256 checksums (sha256sum -c reads them)
#   artifacts/skymesh.<version>.nupkg     the same program as a .NET tool
#
#   ./publish.sh                 every platform
#   ./publish.sh linux-x64 ...   only those
set -euo pipefail
cd "$(dirname "$0")"

rids=("$@")
[ ${#rids[@]} -gt 0 ] || rids=(linux-x64 linux-arm64 win-x64 osx-x64 osx-arm64)
out=artifacts
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
for rid in "${rids[@]}"; do
  exe=skymesh
  case "$rid" in win-*) exe=skymesh.exe ;; esac
  name="skymesh-$rid"
  case "$rid" in win-*) name="$name.exe" ;; esac
  echo "publish.sh: $rid"
  # Self-contained single file; native libraries (SQLite's) inside it, unpacked on first start; not trimmed
  # (docs/release.md says why); the managed code compressed inside.
  if ! dotnet publish src/Skymesh.Cli/Skymesh.Cli.csproj -c Release -r "$rid" --self-contained \
      -p:PublishSingleFile=true -p:IncludeNativeLibrariesForSelfExtract=true -p:EnableCompressionInSingleFile=true \
      -p:DebugType=none -p:GenerateDocumentationFile=false \
      -o "$work/$rid" --nologo -v quiet; then
    failed+=("$rid")
    continue
  fi
  cp "$work/$rid/$exe" "$out/$name"
  (cd "$out" && sha256sum "$name" > "$name.sha256")
done

echo "publish.sh: .NET tool package"
if ! dotnet pack src/Skymesh.Cli/Skymesh.Cli.csproj -c Release -o "$out" --nologo -v quiet -p:PackAsTool=true; then
  failed+=(tool)
fi

ls -l "$out"
if [ ${#failed[@]} -gt 0 ]; then
  echo "publish.sh: FAILED for ${failed[*]}" >&2
  exit 1
fi
echo "publish.sh: ${#rids[@]} executables and the tool package in $out/"
