#!/usr/bin/env bash
# The one test command: installs what the tests need (Go tools, npm packages)
# and runs every check and test. A missing component fails the run; nothing
# is skipped silently.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export PATH="$(go env GOPATH)/bin:$PATH"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

step() { printf '\n== %s ==\n' "$*"; }

step "Go tools"
command -v staticcheck >/dev/null || go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
command -v xcaddy >/dev/null || go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
command -v pebble >/dev/null || go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1

step "a tmpfs can be mounted (crashtest's full-disk test needs root and mount)"
command -v mount >/dev/null && command -v umount >/dev/null || { echo "mount/umount missing (util-linux)"; exit 1; }
probe=$(mktemp -d)
if ! mount -t tmpfs -o size=1m tmpfs "$probe"; then
	rmdir "$probe"
	echo "cannot mount a tmpfs: run the tests as root in a container or VM that allows mount (CAP_SYS_ADMIN)"
	exit 1
fi
umount "$probe" && rmdir "$probe"

step "BIND (named) for the DNS-01 tests"
# Debian's bind9: internal/named runs it as a child process of the tests on a
# loopback port; the package's own service is not used (and not started where
# policy-rc.d forbids it, as in containers).
export PATH="$PATH:/usr/sbin"
if ! command -v named >/dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9 >/dev/null
fi
named -v

step "PostgreSQL 15 for the state tests"
# Debian's postgresql: internal/pgtest initdb's a throwaway cluster per test
# binary in a temporary folder (as the postgres user, since initdb refuses
# root), on 127.0.0.1 and an ephemeral port, and kills it when the tests end.
# The package's own service is not used. Tests needing PostgreSQL fail rather
# than skip (PFR_REQUIRE_POSTGRES=1).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb
export PFR_REQUIRE_POSTGRES=1

step "Chromium for the browser test"
# Debian's chromium: e2e/authz_browser_test.go drives it headless (through
# puppeteer-core in test/smart) with a real SMART app against the built-in
# authorization server. puppeteer-core downloads no browser of its own.
if [ ! -x /usr/bin/chromium ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version

step "Node packages"
for dir in test/*/; do
	if [ -f "$dir/package.json" ]; then
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	fi
done

step "HAPI FHIR JPA test server (Maven)"
(cd test/hapi && mvn -q -B package -DskipTests)
test -f test/hapi/target/hapi-test-server.jar

step "Keycloak 26 for the identity-provider recipe (Maven Central)"
# docs/keycloak_test.go runs the Keycloak recipe of docs/smart.md as written,
# against this Keycloak (unpacked into .build, started by the test on a free
# port with an in-memory database). Keycloak 26 needs Java 21 or newer.
kc_version=26.0.7
if [ ! -x ".build/keycloak-$kc_version/bin/kc.sh" ]; then
	mvn -q -B dependency:unpack -Dartifact="org.keycloak:keycloak-quarkus-dist:$kc_version:zip" -DoutputDirectory=.build
fi
kc_java=""
for jdk in /usr/lib/jvm/*; do
	[ -x "$jdk/bin/java" ] || continue
	v=$("$jdk/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/ *java.specification.version = //p')
	if [ "${v%%.*}" -ge 21 ] 2>/dev/null; then kc_java=$jdk; fi
done
[ -n "$kc_java" ] || { echo "Keycloak 26 needs Java 21 or newer; none found in /usr/lib/jvm"; exit 1; }
export PFR_KEYCLOAK_HOME="$root/.build/keycloak-$kc_version" PFR_KEYCLOAK_JAVA_HOME="$kc_java" PFR_REQUIRE_KEYCLOAK=1

step "gofmt, go vet, staticcheck"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
staticcheck ./...

step "generated code is up to date (go generate ./...)"
generated=$(grep -rl --include='*.go' '^// Code generated .* DO NOT EDIT' . | sort)
before=$(sha256sum $generated)
go generate ./...
after=$(sha256sum $generated)
if [ "$before" != "$after" ]; then
	echo "go generate changed generated files: commit them"; diff <(echo "$before") <(echo "$after"); exit 1
fi

step "build cmd/pfr"
bin="$root/.build"
mkdir -p "$bin"
go build -o "$bin/pfr" ./cmd/pfr

step "go test"
# Tests that drive Node clients fail instead of skipping when their packages are missing.
export PFR_REQUIRE_FHIRKIT=1
go test -count=1 -timeout 30m ./...

step "xcaddy build --with github.com/pfrgateway/caddy-pfr@v0.0.0=."
xcaddy build v2.11.9 --with github.com/pfrgateway/caddy-pfr@v0.0.0=. --output "$bin/caddy-xcaddy" >"$bin/xcaddy.log" 2>&1 ||
	{ tail -30 "$bin/xcaddy.log"; exit 1; }
"$bin/caddy-xcaddy" list-modules | grep -qx 'http.handlers.pfr' || { echo "xcaddy build lacks http.handlers.pfr"; exit 1; }
"$bin/caddy-xcaddy" list-modules | grep -qx 'tls.permission.pfr' || { echo "xcaddy build lacks tls.permission.pfr"; exit 1; }
"$bin/caddy-xcaddy" list-modules | grep -qx 'dns.providers.rfc2136' || { echo "xcaddy build lacks dns.providers.rfc2136"; exit 1; }
"$bin/caddy-xcaddy" list-modules | grep -qx 'caddy.storage.postgres' || { echo "xcaddy build lacks caddy.storage.postgres"; exit 1; }

step "the README's benchmark and fuzz commands, briefly (nothing is judged by speed)"
go run ./bench/gateway -pfr "$bin/pfr" -n 40 -round 20 -warmup 10 >"$bin/bench-gateway.txt" 2>&1 ||
	{ tail -30 "$bin/bench-gateway.txt"; exit 1; }
go run ./bench/dopu -pfr "$bin/pfr" -c 1 -n50k 10 -n2m 3 -warmup 1 -rounds 1 >"$bin/bench-dopu.txt" 2>&1 ||
	{ tail -30 "$bin/bench-dopu.txt"; exit 1; }
go test ./bench/store/ -run '^$' -bench . -benchtime 1x
go run ./bench/cluster -pfr "$bin/pfr" -n 200 -records 5 -round 50 >"$bin/bench-cluster.txt" 2>&1 ||
	{ tail -30 "$bin/bench-cluster.txt"; exit 1; }
go run ./bench/tls -pfr "$bin/pfr" -n 2 >"$bin/bench-tls.txt" 2>&1 ||
	{ tail -30 "$bin/bench-tls.txt"; exit 1; }
for target in 'fhir FuzzCheckBundle' 'fhir FuzzQuickBelongs' 'backend FuzzRewriter' 'fhir/fhirjson FuzzDecode' 'gateway FuzzWritePath'; do
	set -- $target
	go test "./$1" -run '^$' -fuzz "^$2\$" -fuzztime 5s -fuzzminimizetime 2s
done

for script in scripts/it/*.sh; do
	step "integration: $script"
	PFR_BIN="$bin/pfr" bash "$script"
done

step "all tests passed"
