#!/usr/bin/env bash
# The one test command: installs what the tests need (Go tools, npm packages)
# and runs every check and test. A missing component fails the run; nothing
# is skipped silently. (The inner loop is `go test -short ./...`: Go alone.)
#
#   bash scripts/test.sh
#
# The terminal shows one line per step and per Go package; a failure shows
# the failing test and its first error (or the end of the failing step's
# output). Every step's full output is in .build/logs/.
#
# It runs beside a gateway someone runs (the quickstart's ports 8443, 8080,
# 2019 are never used) and beside another copy of itself: every server the
# tests start listens on a loopback port held for it, with its state and
# Caddy's in temporary folders.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export PATH="$(go env GOPATH)/bin:$PATH"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

bin="$root/.build"
logs="$bin/logs"
rm -rf "$logs"
mkdir -p "$logs"
current=
step() {
	current=$(printf '%s' "$*" | tr -c 'A-Za-z0-9._-' '-' | tr -s '-' | sed 's/-$//')
	printf '\n== %s ==\n' "$*"
}
# quiet runs a command with its output in the current step's log; on
# failure it shows the end of that output and where the rest is.
quiet() {
	local log="$logs/$current.log"
	if ! "$@" >>"$log" 2>&1; then
		echo "FAILED: $*"
		tail -n 25 "$log" | sed 's/^/    /'
		echo "Full output: ${log#"$root/"}"
		exit 1
	fi
}

step "Go tools"
command -v staticcheck >/dev/null || quiet go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
command -v xcaddy >/dev/null || quiet go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
command -v pebble >/dev/null || quiet go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1
quiet go build -o "$bin/testreport" ./internal/testkit/testreport
quiet go build -o "$bin/holdports" ./internal/testkit/holdports

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
	quiet apt-get update -qq
	DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq bind9
fi
named -v

step "PostgreSQL 15 for the state tests"
# Debian's postgresql: internal/pgtest initdb's a throwaway cluster per test
# binary in a temporary folder (as the postgres user, since initdb refuses
# root), on 127.0.0.1 and an ephemeral port, and kills it when the tests end.
# The package's own service is not used. Tests needing PostgreSQL fail rather
# than skip (they skip only under -short).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
	quiet apt-get update -qq
	DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq postgresql
fi
ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || command -v initdb

step "Chromium for the browser test"
# Debian's chromium: e2e/authz_browser_test.go drives it headless (through
# puppeteer-core in test/smart) with a real SMART app against the built-in
# authorization server. puppeteer-core downloads no browser of its own.
if [ ! -x /usr/bin/chromium ]; then
	quiet apt-get update -qq
	DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq chromium
fi
/usr/bin/chromium --version

step "valgrind for the instruction counts"
# Debian's valgrind: bench/gateway -callgrind counts the instructions Caddy
# executes per request (TestBenchCallgrind runs it with a few requests);
# docs/developing.md counts the pipeline's with cachegrind.
if ! command -v valgrind >/dev/null; then
	quiet apt-get update -qq
	DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq valgrind
fi
valgrind --version

step "Node packages"
for dir in test/*/; do
	if [ -f "$dir/package.json" ]; then
		(cd "$dir" && quiet npm ci --no-audit --no-fund --loglevel=error)
	fi
done

step "HAPI FHIR JPA test server (Maven)"
(cd test/hapi && quiet mvn -q -B package -DskipTests)
test -f test/hapi/target/hapi-test-server.jar

step "Keycloak 26 for the identity-provider recipe (Maven Central)"
# docs/keycloak_test.go runs the Keycloak recipe of docs/smart.md as written,
# against this Keycloak (unpacked into .build, started by the test on a free
# port with an in-memory database). Keycloak 26 needs Java 21 or newer.
kc_version=26.0.7
if [ ! -x ".build/keycloak-$kc_version/bin/kc.sh" ]; then
	# Run inside .build: without a pom, the plugin writes its marker files
	# under a literal "${project.basedir}" folder of the working directory,
	# and skips an artifact whose marker it finds (a marker left without the
	# unpacked folder would leave no Keycloak): remove them first.
	mkdir -p .build
	rm -rf '.build/${project.basedir}'
	(cd .build && quiet mvn -q -B dependency:unpack -Dartifact="org.keycloak:keycloak-quarkus-dist:$kc_version:zip" -DoutputDirectory=.)
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
quiet go vet ./...
quiet staticcheck ./...

step "the JSON scanner without its assembly (purego, arm64): builds, and its tests pass"
# fhirjson walks JSON in 64-byte blocks with AVX2 assembly on amd64; the
# byte loop is the rule and every other machine's scanner.
quiet go vet -tags purego ./fhir/fhirjson
quiet env GOARCH=arm64 go vet ./fhir/fhirjson
quiet go test -count=1 -tags purego ./fhir/fhirjson

step "generated code is up to date (go generate ./...)"
generated=$(grep -rl --include='*.go' '^// Code generated .* DO NOT EDIT' . | sort)
before=$(sha256sum $generated)
go generate ./...
after=$(sha256sum $generated)
if [ "$before" != "$after" ]; then
	echo "go generate changed generated files: commit them"; diff <(echo "$before") <(echo "$after"); exit 1
fi

step "build cmd/pfr"
quiet go build -o "$bin/pfr" ./cmd/pfr

step "go test (every test: none may skip for a missing component)"
go test -json -count=1 -timeout 30m ./... 2>&1 | "$bin/testreport" -log "$logs/go-test.log"

step "xcaddy build --with github.com/pfrgateway/caddy-pfr@v0.0.0=."
quiet xcaddy build v2.11.9 --with github.com/pfrgateway/caddy-pfr@v0.0.0=. --output "$bin/caddy-xcaddy"
# list-modules once into a variable: `list-modules | grep -q` under pipefail
# fails at random when grep exits at its match and list-modules, still
# writing the lines after it, dies of SIGPIPE.
modules=$("$bin/caddy-xcaddy" list-modules)
for m in http.handlers.pfr tls.permission.pfr dns.providers.rfc2136 caddy.storage.postgres; do
	grep -qx "$m" <<<"$modules" || { echo "xcaddy build lacks $m"; exit 1; }
done

step "the README's benchmark and fuzz commands, briefly (nothing is judged by speed)"
quiet go run ./bench/gateway -pfr "$bin/pfr" -n 40 -round 20 -warmup 10
quiet go run ./bench/dopu -pfr "$bin/pfr" -c 1 -n50k 10 -n2m 3 -warmup 1 -rounds 1
quiet go test ./bench/store/ -run '^$' -bench . -benchtime 1x
quiet go run ./bench/store/record -n 2000 -runs 2 -scanruns 1 -writes 3 -bulk 1000
quiet go test ./bench/authz/ -run '^$' -bench . -benchtime 1x
quiet go run ./bench/bulk -pfr "$bin/pfr" -n 200 -rounds 1
quiet go run ./bench/cluster -pfr "$bin/pfr" -n 200 -records 5 -round 50
quiet go run ./bench/tls -pfr "$bin/pfr" -n 2
quiet go run ./bench/provision -pfr "$bin/pfr" -n 3 -nhapi 2 -records 1,100 -clients 20 -reads 5
# Budgets in executions, not seconds: with a duration, Go's fuzzing
# coordinator can report its own deadline as a failure ("context deadline
# exceeded", no input written) when a starved worker is still running at
# the end (FuzzCheckBundle did, on a busy machine). Each count is about
# five seconds here; FuzzWritePath runs a whole write through the pipeline.
for target in 'fhir FuzzCheckBundle 20000' 'fhir FuzzQuickBelongs 20000' 'backend FuzzRewriter 20000' 'fhir/fhirjson FuzzDecode 20000' 'fhir/fhirjson FuzzScanValue 20000' 'fhir/fhirjson FuzzScanValueNames 20000' 'fhir/fhirjson FuzzScanBlocks 20000' 'fhir FuzzScanEntry 20000' 'gateway FuzzWritePath 4000'; do
	set -- $target
	quiet go test "./$1" -run '^$' -fuzz "^$2\$" -fuzztime "$3x" -fuzzminimizetime 100x
done

for script in scripts/it/*.sh; do
	step "integration: $script"
	PFR_BIN="$bin/pfr" quiet bash "$script"
done

step "all tests passed"
