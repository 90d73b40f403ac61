#!/usr/bin/env bash
# Builds restart-sim as a static binary, puts it in a FROM scratch image (no
# base image to pull), and runs it in a container as PID 1.
#
#   cmd/restart-sim/docker.sh                    build, then a short run with every fault mode
#   cmd/restart-sim/docker.sh run [flags...]     build, then a run with restart-sim's flags
#   cmd/restart-sim/docker.sh stop               build, start a long run, `docker stop` it, and
#                                                check it stopped cleanly (exit 3, INTERRUPTED)
#   cmd/restart-sim/docker.sh build              build the image only
#
# The exit status is the container's, which is restart-sim's verdict: 0 pass,
# 1 fail, 2 bad usage, 3 interrupted. IMAGE names the image (default
# graceful-restart-sim).
set -euo pipefail

cd "$(dirname "$0")/../.."
image=${IMAGE:-graceful-restart-sim}
context=bin/docker
container=""

cleanup() {
	if [ -n "$container" ]; then
		docker rm -f "$container" >/dev/null 2>&1 || true
	fi
	rm -rf "$context"
	rmdir bin 2>/dev/null || true
}
trap cleanup EXIT

build() {
	rm -rf "$context"
	mkdir -p "$context/tmp"
	CGO_ENABLED=0 go build -trimpath -o "$context/restart-sim" ./cmd/restart-sim
	docker build -q -t "$image" . >/dev/null
	echo "docker.sh: built image $image"
}

check_pid1() { # the report must say the supervisor ran as PID 1
	if ! grep -q "supervisor pid 1 " "$1"; then
		echo "docker.sh: FAIL: restart-sim did not run as PID 1" >&2
		return 1
	fi
}

run() {
	local out status=0
	out=$(mktemp)
	if [ $# -eq 0 ]; then
		set -- -restarts 20 -baseline 2s -faults crash,hang,kill
	fi
	docker run --rm "$image" "$@" | tee "$out" || status=$?
	check_pid1 "$out" || status=1
	rm -f "$out"
	echo "docker.sh: container exit status $status"
	return "$status"
}

stop_test() {
	local name out status
	name="restart-sim-stop-$$"
	out=$(mktemp)
	container=$name
	docker run -d --name "$name" "$image" -restarts 100000 -baseline 1s >/dev/null
	# Wait (at most 30 s) for the restart phase, then let a few restarts happen.
	for _ in $(seq 300); do
		docker logs "$name" 2>&1 | grep -q "restart phase" && break
		sleep 0.1
	done
	sleep 2
	docker stop -t 30 "$name" >/dev/null
	status=$(docker wait "$name")
	docker logs "$name" >"$out" 2>&1
	cat "$out"
	if [ "$status" != 3 ] || ! grep -q "^INTERRUPTED" "$out"; then
		echo "docker.sh: FAIL: docker stop: want exit status 3 and INTERRUPTED, got $status" >&2
		rm -f "$out"
		return 1
	fi
	check_pid1 "$out" || { rm -f "$out"; return 1; }
	rm -f "$out"
	echo "docker.sh: docker stop: stopped cleanly (exit status 3, nothing lost)"
}

mode=${1:-run}
[ $# -gt 0 ] && shift
case "$mode" in
build) build ;;
run) build && run "$@" ;;
stop) build && stop_test ;;
-*) build && run "$mode" "$@" ;;
*)
	echo "usage: $0 [build | run [flags...] | stop]" >&2
	exit 2
	;;
esac
