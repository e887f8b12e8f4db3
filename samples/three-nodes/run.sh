#!/usr/bin/env bash
# A small mesh on one machine: a broker and three nodes A - B - C on loopback UDP, made with `skymesh init`, linked
# through their "peers", then a path from A to C through the control plane and a ping over it. Everything stops on exit.
#
#   samples/three-nodes/run.sh            (from the repository; uses `dotnet run`)
#   SKYMESH=skymesh samples/three-nodes/run.sh   (an installed skymesh)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${SKYMESH:-}" ]; then
  dotnet build "$root/src/Skymesh.Cli" -c Release -v quiet -nologo >/dev/null
  SKYMESH="dotnet $root/src/Skymesh.Cli/bin/Release/net10.0/skymesh.dll"
fi
dir=$(mktemp -d /tmp/skymesh-sample.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

broker=127.0.0.1:18787
$SKYMESH broker --listen "$broker" >"$dir/broker.log" 2>&1 & pids+=($!)

# Three nodes: UDP 1740x, local API 1730x.
i=0
for n in a b c; do
  $SKYMESH init --data-dir "$dir/$n" --broker "$broker" --listen "127.0.0.1:1740$i" --api "127.0.0.1:1730$i" >/dev/null
  i=$((i + 1))
done
# Each node lists the next as a static peer: A -> B, B -> C. A peer is named by its address, known before it runs.
peer() { echo "\"peers\": [ { \"address\": \"$($SKYMESH address --data-dir "$dir/$1")\", \"endpoint\": \"$2\" } ],"; }
sed -i "s|\"peers\": \[\],|$(peer b 127.0.0.1:17401)|" "$dir/a/node.json"
sed -i "s|\"peers\": \[\],|$(peer c 127.0.0.1:17402)|" "$dir/b/node.json"
sed -i 's|"exits": \[\],|"exits": [ "127.0.0.1:*" ],|' "$dir/c/node.json"

for n in a b c; do
  $SKYMESH node --config "$dir/$n/node.json" >"$dir/$n/log" 2>&1 & pids+=($!)
done
c=$($SKYMESH address --data-dir "$dir/c")
echo "nodes A, B, C started in $dir; C is $c"

# A's route finder learns the chain from the nodes' announcements within a few seconds.
for attempt in $(seq 1 60); do
  if $SKYMESH path open "$c" --api 127.0.0.1:17300 2>/dev/null; then break; fi
  sleep 0.5
done
$SKYMESH links --api 127.0.0.1:17301
$SKYMESH ping "$c" -c 3 --api 127.0.0.1:17300
