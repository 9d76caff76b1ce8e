#!/usr/bin/env bash
# Runs the README's quickstart as a new user would: `pfr run --config
# Caddyfile.example` in a fresh directory, then every command of the README's
# walkthrough, verbatim. Fails if any command fails or prints an error.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
pfr=${PFR_BIN:?PFR_BIN must point at the pfr binary}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cp "$root/Caddyfile.example" "$work/"
cd "$work"
# Caddy's own data (the local CA) stays inside the work directory.
export XDG_DATA_HOME="$work/xdg-data" XDG_CONFIG_HOME="$work/xdg-config"
"$pfr" run --config Caddyfile.example >"$work/pfr.log" 2>&1 &
pid=$!
# Caddyfile.example turns the admin API off: wait for the site itself.
for _ in $(seq 1 50); do
	curl -s -o /dev/null http://127.0.0.1:8080/ && break
	sleep 0.2
done

# The README says `go run ./cmd/pfr`; here the binary built from the same source stands in.
mkdir -p "$work/bin"
cat >"$work/bin/go" <<SH
#!/usr/bin/env bash
[ "\$1 \$2" = "run ./cmd/pfr" ] || { echo "unexpected go command: \$*" >&2; exit 1; }
shift 2
exec "$pfr" "\$@"
SH
chmod +x "$work/bin/go"

# Extract the walkthrough's shell blocks (```sh, not the expected output) from the README and run them.
awk '/<!-- walkthrough:begin -->/{on=1} /<!-- walkthrough:end -->/{on=0}
     on && /^```sh/{inblock=1; next} on && /^```/{inblock=0; next} on && inblock' "$root/README.md" >"$work/walkthrough.sh"
[ -s "$work/walkthrough.sh" ] || { echo "README has no walkthrough block"; exit 1; }
echo "--- running the README walkthrough:"; cat "$work/walkthrough.sh"; echo "---"
PATH="$work/bin:$PATH" bash -euo pipefail "$work/walkthrough.sh" | tee "$work/out.txt"

grep -q '"resourceType":"Observation"' "$work/out.txt" || { echo "walkthrough did not read the Observation back"; exit 1; }
if grep -q '"severity":"error"' "$work/out.txt"; then echo "walkthrough printed an error"; exit 1; fi
grep -q '"status":"picked-up"' "$work/out.txt" || { echo "walkthrough did not pick up the drop-off"; exit 1; }
grep -q '"code":"2339-0"' "$work/out.txt" || { echo "the picked-up Observation is not in the record"; exit 1; }
echo "quickstart: OK"
