#!/usr/bin/env bash
# Runs the quickstart as a new user would: `pfr run --config
# Caddyfile.example` in a fresh directory, then every command of docs/walkthrough.md's
# walkthrough, verbatim but for the ports. Fails if any command fails or
# prints an error.
#
# The example's ports (8443, 8080) become two loopback ports held for this
# run (lib/ports.sh), so the test runs beside a quickstart someone has
# running, and beside another copy of itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/it/lib/ports.sh"
hold_ports 2 "$@"
https_port=${PORTS[0]} http_port=${PORTS[1]}
pfr=${PFR_BIN:?PFR_BIN must point at the pfr binary}
work=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }; rm -rf "$work"' EXIT

# ports replaces the example's ports in a file by this run's.
ports() { sed -e "s/\b8443\b/$https_port/g" -e "s/\b8080\b/$http_port/g" "$1"; }
ports "$root/Caddyfile.example" >"$work/Caddyfile.example"
grep -q ":$https_port" "$work/Caddyfile.example" || { echo "Caddyfile.example no longer serves on 8443"; exit 1; }
cd "$work"
# Caddy's own data (the local CA) and autosaved config stay inside the work directory.
export XDG_DATA_HOME="$work/xdg-data" XDG_CONFIG_HOME="$work/xdg-config"
"$pfr" run --config Caddyfile.example >"$work/pfr.log" 2>&1 &
pid=$!
# The port is held for this run: what answers there is this pfr.
wait_ready "http://127.0.0.1:$http_port/" "$pid" || { tail -30 "$work/pfr.log"; exit 1; }

# The walkthrough says `go run ./cmd/pfr`; here the binary built from the same source stands in.
mkdir -p "$work/bin"
cat >"$work/bin/go" <<SH
#!/usr/bin/env bash
[ "\$1 \$2" = "run ./cmd/pfr" ] || { echo "unexpected go command: \$*" >&2; exit 1; }
shift 2
exec "$pfr" "\$@"
SH
chmod +x "$work/bin/go"

# Extract the walkthrough's shell blocks (```sh, not the expected output) from docs/walkthrough.md and run them.
awk '/<!-- walkthrough:begin -->/{on=1} /<!-- walkthrough:end -->/{on=0}
     on && /^```sh/{inblock=1; next} on && /^```/{inblock=0; next} on && inblock' "$root/docs/walkthrough.md" >"$work/walkthrough.md.sh"
ports "$work/walkthrough.md.sh" >"$work/walkthrough.sh"
[ -s "$work/walkthrough.sh" ] || { echo "docs/walkthrough.md has no walkthrough block"; exit 1; }
echo "--- running the walkthrough (docs/walkthrough.md):"; cat "$work/walkthrough.sh"; echo "---"
# `pfr records` finds the gateway at the quickstart's address unless told otherwise.
PATH="$work/bin:$PATH" PFR_API="https://pfr.localhost:$https_port" PFR_TOKEN= PFR_CACERT= \
	bash -euo pipefail "$work/walkthrough.sh" | tee "$work/out.txt"

grep -q '"resourceType":"Observation"' "$work/out.txt" || { echo "walkthrough did not read the Observation back"; exit 1; }
if grep -q '"severity":"error"' "$work/out.txt"; then echo "walkthrough printed an error"; exit 1; fi
grep -q '"status":"picked-up"' "$work/out.txt" || { echo "walkthrough did not pick up the drop-off"; exit 1; }
grep -q '"code":"2339-0"' "$work/out.txt" || { echo "the picked-up Observation is not in the record"; exit 1; }
echo "quickstart: OK"
