#!/usr/bin/env bash
# Runs every Skymesh test and ends with one line: "N passed, N failed[, N skipped]".
# Installs what the tests need when it is missing, so a fresh Debian machine with the .NET 10 SDK is enough.
set -uo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v iperf3 >/dev/null 2>&1 || need_apt+=(iperf3)
# The VPN lab pings across the tunnel.
command -v ping >/dev/null 2>&1 || need_apt+=(iputils-ping)
{ [ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1; } || need_apt+=(nats-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
[ -x /usr/bin/systemd-analyze ] || need_apt+=(systemd)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
# The NAT lab of the end-to-end tests: home routers made with iptables (MASQUERADE) in network namespaces.
{ command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ]; } || need_apt+=(iptables)
# The dashboard's tests drive Debian's chromium headless (through Playwright; never a browser it downloads).
{ [ -x /usr/bin/chromium ] || [ -n "${SKYMESH_CHROMIUM:-}" ]; } || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PostgreSQL for the exchange journal's tests: a throwaway cluster on a free loopback port, run by an unprivileged
# user (PostgreSQL refuses root), trust authentication on loopback only, removed when the tests end.
start_postgres() {
  local user port
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  local bin=$pg_bin
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "test.sh: PostgreSQL is not installed; its tests will be skipped"; return; }
  pg_dir=$(mktemp -d /tmp/skymesh-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then user=nobody; chown "$user" "$pg_dir"; as_pg() { runuser -u nobody -- "$@"; }
  else as_pg() { "$@"; }; fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if as_pg "$bin/initdb" -D "$pg_dir/data" -U skymesh --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
     && as_pg "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
          -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null; then
    export SKYMESH_TEST_POSTGRES="Host=127.0.0.1;Port=$port;Username=skymesh;Database=postgres"
    echo "test.sh: PostgreSQL on 127.0.0.1:$port"
  else
    echo "test.sh: PostgreSQL did not start; its tests will fail:"; cat "$pg_dir"/*.log
    export SKYMESH_TEST_POSTGRES="Host=127.0.0.1;Port=$port;Username=skymesh;Database=postgres"
  fi
}
stop_postgres() {
  [ -n "${pg_dir:-}" ] || return 0
  as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1
  rm -rf "$pg_dir"
}
trap stop_postgres EXIT
start_postgres

results=TestResults
rm -rf "$results"
if ! dotnet build Skymesh.slnx -c Release -v quiet -nologo; then
  echo "test.sh: build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

# Every platform's self-contained single file, from this one machine (publish.sh): a platform that does not build
# is a failure. The end-to-end tests run the linux-x64 one (SingleFileTests).
mkdir -p "$results"
publish_failed=0
publish_started=$SECONDS
if ./publish.sh >"$results/publish.log" 2>&1; then
  export SKYMESH_SINGLE_FILE=$PWD/artifacts/skymesh-linux-x64
  echo "test.sh: publish.sh built every platform in $((SECONDS - publish_started)) s"
else
  echo "test.sh: FAILED: publish.sh did not build every platform:"
  tail -n 30 "$results/publish.log"
  publish_failed=1
fi

# Each test project runs on its own, bounded in time: one that does not finish within 600 s is killed and
# counted as a failure (it hung), with a message naming it. Nothing is run twice.
status=0
timed_out=0
for proj in tests/*/*.csproj; do
  name=$(basename "$proj" .csproj)
  dir="$results/$name"
  started=$SECONDS
  # timeout signals its whole process group (dotnet test, the test host and the test process); whatever
  # ignores SIGTERM is killed 30 s later (exit 137).
  timeout --kill-after=30 600 dotnet test "$proj" -c Release --no-build --nologo --logger "trx" --results-directory "$dir"
  rc=$?
  if [ $rc -eq 124 ] || { [ $rc -eq 137 ] && [ $((SECONDS - started)) -ge 600 ]; }; then
    echo "test.sh: FAILED: $name did not finish within 600 s and was killed (a hang); its results are discarded"
    rm -rf "$dir"
    timed_out=$((timed_out + 1))
    status=124
  elif [ $rc -ne 0 ]; then
    status=$rc
  fi
done

passed=0; failed=0; skipped=0
shopt -s nullglob
trx_files=("$results"/*/*.trx)
for f in "${trx_files[@]}"; do
  line=$(grep -o '<Counters [^>]*>' "$f" | head -n 1)
  get() { echo "$line" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  p=$(get passed); fl=$(get failed); t=$(get total); e=$(get executed); to=$(get timeout); ab=$(get aborted)
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${fl:-0} + ${to:-0} + ${ab:-0}))
  skipped=$((skipped + ${t:-0} - ${e:-0}))
done
if [ ${#trx_files[@]} -eq 0 ]; then
  echo "test.sh: no test results were written"
  failed=$((failed + 1))
fi
# A project that timed out wrote no usable results: each counts as one failure; so does a platform that did not build.
failed=$((failed + timed_out + publish_failed))
if [ $status -ne 0 ] && [ $failed -eq 0 ]; then
  echo "test.sh: the test run failed without a failing test (crash or timeout)"
  failed=1
fi
if [ $skipped -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ $failed -eq 0 ]
