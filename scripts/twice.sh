#!/usr/bin/env bash
# Shows that copies of the tests do not meet on one machine: runs two copies
# of the tests that start servers (in-process Caddy, the pfr binary, HAPI,
# Node, Pebble, BIND, PostgreSQL, the quickstart scripts) at the same time,
# beside a quickstart gateway on the example's ports 8443 and 8080, and
# checks that both copies pass and the quickstart still answers with none
# of the tests' records in its data.
#
#   bash scripts/twice.sh                  # e2e, crashtest, docs, caddymodule, scripts/it
#   bash scripts/twice.sh ./e2e ./store    # other packages
#   bash scripts/twice.sh --full           # the first copy is all of scripts/test.sh
#
# It is expensive (two full e2e runs at once): run it on an otherwise idle
# machine, or expect it to take a while. Logs: .build/twice/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$(go env GOPATH)/bin:$PATH:/usr/sbin"
full=
if [ "${1:-}" = --full ]; then full=1; shift; fi
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./e2e ./crashtest ./docs ./caddymodule)

# The copies' programs are their own builds (scripts/test.sh rebuilds
# .build/pfr and .build/holdports while a copy may be running them).
out="$root/.build/twice"
rm -rf "$out"
mkdir -p "$out"
go build -o "$out/pfr" ./cmd/pfr
go build -o "$out/testreport" ./internal/testkit/testreport
go build -o "$out/holdports" ./internal/testkit/holdports
export PFR_HOLDPORTS="$out/holdports"

# The quickstart, as the README runs it, in a folder of its own.
qs=$(mktemp -d)
qpid=
cleanup() {
	[ -z "$qpid" ] || { kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null || true; }
	rm -rf "$qs"
}
trap cleanup EXIT
if curl -s -o /dev/null --max-time 2 http://127.0.0.1:8080/; then
	echo "something already answers on 8080: using it as the quickstart is not possible; stop it first" >&2
	exit 1
fi
cp Caddyfile.example "$qs/"
(cd "$qs" && XDG_DATA_HOME="$qs/xdg-data" XDG_CONFIG_HOME="$qs/xdg-config" exec "$out/pfr" run --config Caddyfile.example) >"$out/quickstart.log" 2>&1 &
qpid=$!
for _ in $(seq 1 150); do
	curl -s -o /dev/null --max-time 2 http://127.0.0.1:8080/ && break
	kill -0 "$qpid" 2>/dev/null || { echo "the quickstart exited:"; tail -20 "$out/quickstart.log"; exit 1; }
	sleep 0.2
done
echo "quickstart running on 8443/8080 (pid $qpid)"

copy() { # n
	local n=$1 dir="$out/$1" rc=0
	mkdir -p "$dir"
	if [ "$n" = 1 ] && [ -n "$full" ]; then
		bash scripts/test.sh >"$dir/test.sh.log" 2>&1 || rc=1
		tail -n 40 "$dir/test.sh.log" >"$dir/summary.txt"
		echo "exit $rc" >>"$dir/summary.txt"
		return $rc
	fi
	if [ -n "$full" ]; then
		# scripts/test.sh first installs into this checkout (npm ci empties
		# test/*/node_modules, Maven rebuilds the HAPI jar): the second
		# copy starts when it starts testing.
		until grep -q '^== go test' "$out/1/test.sh.log" 2>/dev/null; do
			kill -0 "$p1" 2>/dev/null || { echo "scripts/test.sh ended before its tests" >"$dir/summary.txt"; return 1; }
			sleep 5
		done
	fi
	go test -json -count=1 -timeout 45m "${pkgs[@]}" 2>&1 | "$out/testreport" -log "$dir/go-test.log" >"$dir/summary.txt" || rc=1
	for script in scripts/it/*.sh; do
		PFR_BIN="$out/pfr" bash "$script" >"$dir/$(basename "$script").log" 2>&1 ||
			{ echo "FAIL  $script (see $dir/$(basename "$script").log)" >>"$dir/summary.txt"; rc=1; }
	done
	echo "exit $rc" >>"$dir/summary.txt"
	return $rc
}
start=$(date +%s)
copy 1 & p1=$!
copy 2 & p2=$!
rc=0
wait "$p1" || rc=1
wait "$p2" || rc=1
echo "both copies done in $(( $(date +%s) - start ))s"
for n in 1 2; do echo "--- copy $n"; cat "$out/$n/summary.txt"; done

# The quickstart is untouched: still running, and no TLS handshake ever
# reached it (each would have given it an on-demand certificate, for the
# apex or a record), then still serving.
kill -0 "$qpid" 2>/dev/null || { echo "the quickstart died during the tests"; tail -20 "$out/quickstart.log"; exit 1; }
# The quickstart obtains the apex's certificate for itself when it starts
# (its readiness check); any other TLS handshake would be a test's.
n=$(grep -c '"obtaining new certificate"' "$out/quickstart.log" || true)
if [ "$n" -gt 1 ] || find "$qs" -path '*certificates*' -name '*.crt' | grep -v '/pfr.localhost/pfr.localhost.crt$' | grep .; then
	echo "the quickstart was reached by a test ($n on-demand certificates)"; rc=1
fi
code=$(curl -sk -o /dev/null -w '%{http_code}' https://pfr.localhost:8443/pfr/v1/records) || true
[ "$code" = 401 ] || { echo "the quickstart's management API answered $code, want 401 (no token)"; rc=1; }
[ $rc = 0 ] && echo "twice: both copies passed beside the quickstart" || echo "twice: FAILED"
exit $rc
