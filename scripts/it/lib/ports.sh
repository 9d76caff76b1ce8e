# Sourced by the scripts in scripts/it: `hold_ports N "$@"` runs the
# calling script again under internal/testkit/holdports with N loopback
# ports held for it (the kernel gives them to no other process while the
# script runs; Caddy binds them with SO_REUSEPORT), then sets PORTS to
# their numbers. So the script never meets a gateway someone runs on the
# quickstart's ports, nor another copy of the tests.
hold_ports() {
	local n=$1
	shift
	if [ -z "${PFR_PORTS:-}" ]; then
		local root bin
		root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
		# Built once (scripts/test.sh and scripts/twice.sh build it first,
		# so that copies running at once never write it together);
		# PFR_HOLDPORTS names another build of it.
		bin=${PFR_HOLDPORTS:-"$root/.build/holdports"}
		if [ ! -x "$bin" ] || [ -n "$(find "$root/internal/testkit" -name '*.go' -newer "$bin")" ]; then
			mkdir -p "$root/.build"
			(cd "$root" && go build -o "$bin" ./internal/testkit/holdports)
		fi
		exec "$bin" -n "$n" -- bash "$0" "$@"
	fi
	read -r -a PORTS <<<"$PFR_PORTS"
	[ "${#PORTS[@]}" -ge "$n" ] || { echo "PFR_PORTS has ${#PORTS[@]} ports, want $n" >&2; exit 1; }
}

# wait_ready URL PID: waits (at most 60 s) until URL answers, failing at
# once if process PID has exited (its log is the caller's to show).
wait_ready() {
	local url=$1 pid=$2
	for _ in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || { echo "the server (pid $pid) exited before $url answered" >&2; return 1; }
		curl -sk -o /dev/null --max-time 2 "$url" && return 0
		sleep 0.2
	done
	echo "nothing answered at $url within 60 s" >&2
	return 1
}
