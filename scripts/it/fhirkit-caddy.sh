#!/usr/bin/env bash
# fhir-kit-client, a third-party FHIR client, against the embedded store
# served by real Caddy (the pfr_store module, testdata/Caddyfile.store).
# Its port is held for the run (lib/ports.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/it/lib/ports.sh"
hold_ports 1 "$@"
port=${PORTS[0]}
pfr=${PFR_BIN:?PFR_BIN must point at the pfr binary}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

PFR_STORE_PORT=$port PFR_STORE_PATH="$work/store.db" XDG_DATA_HOME="$work/xdg-data" XDG_CONFIG_HOME="$work/xdg-config" \
	"$pfr" run --config "$root/testdata/Caddyfile.store" >"$work/store.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$port/fhir/metadata" "${pids[0]}" || { tail -30 "$work/store.log"; exit 1; }
curl -sf -X POST "http://127.0.0.1:$port/fhir/\$partition-management-create-partition" \
	-H 'X-Request-Partition-IDs: DEFAULT' -H 'Content-Type: application/fhir+json' \
	-d '{"resourceType":"Parameters","parameter":[{"name":"id","valueInteger":1},{"name":"name","valueCode":"kit"}]}' >/dev/null
(cd "$root/test/fhirkit" && PFR_STORE_URL="http://127.0.0.1:$port/fhir" PFR_STORE_PARTITION=1 npm test --silent)
echo "fhir-kit-client against pfr_store in Caddy: OK"
