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
#
# It is expensive (two full e2e runs at once): run it on an otherwise idle
# machine, or expect it to take a while. Logs: .build/twice/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$(go env GOPATH)/bin:$PATH:/usr/sbin"
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./e2e ./crashtest ./docs ./caddymodule)

out="$root/.build/twice"
rm -rf "$out"
mkdir -p "$out"
go build -o "$root/.build/pfr" ./cmd/pfr
go build -o "$root/.build/testreport" ./internal/testkit/testreport
go build -o "$root/.build/holdports" ./internal/testkit/holdports

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
(cd "$qs" && XDG_DATA_HOME="$qs/xdg-data" XDG_CONFIG_HOME="$qs/xdg-config" exec "$root/.build/pfr" run --config Caddyfile.example) >"$out/quickstart.log" 2>&1 &
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
	go test -json -count=1 -timeout 45m "${pkgs[@]}" 2>&1 | "$root/.build/testreport" -log "$dir/go-test.log" >"$dir/summary.txt" || rc=1
	for script in scripts/it/*.sh; do
		PFR_BIN="$root/.build/pfr" bash "$script" >"$dir/$(basename "$script").log" 2>&1 ||
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
if find "$qs" -path '*certificates*' -name '*.crt' | grep .; then
	echo "the quickstart holds certificates: a test reached it"; rc=1
fi
code=$(curl -sk -o /dev/null -w '%{http_code}' https://pfr.localhost:8443/pfr/v1/records) || true
[ "$code" = 401 ] || { echo "the quickstart's management API answered $code, want 401 (no token)"; rc=1; }
[ $rc = 0 ] && echo "twice: both copies passed beside the quickstart" || echo "twice: FAILED"
exit $rc
