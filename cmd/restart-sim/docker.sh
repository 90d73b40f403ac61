#!/usr/bin/env bash
# Builds restart-sim as a static binary on the host, puts it in a FROM
# scratch image (the Dockerfile's "prebuilt" target: no base image to
# pull), and runs it in a container as PID 1.
#
#   cmd/restart-sim/docker.sh                    build, then a short run with every fault mode
#   cmd/restart-sim/docker.sh run [flags...]     build, then a run with restart-sim's flags
#   cmd/restart-sim/docker.sh stop               build, start a long run, `docker stop` it, and
#                                                check it stopped cleanly (exit 3, INTERRUPTED)
#   cmd/restart-sim/docker.sh build              build the image only
#   cmd/restart-sim/docker.sh source             build the default target, from source, as a
#                                                user with network access does, but offline:
#                                                the Go image is a stand-in made from this
#                                                host's Go and module cache; then a short run
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
	mkdir -p "$context"
	mkdir -m 1777 "$context/tmp"
	CGO_ENABLED=0 go build -trimpath -o "$context/restart-sim" ./cmd/restart-sim || return 1
	docker build -q --target prebuilt -t "$image" . >/dev/null || return 1
	echo "docker.sh: built image $image"
}

# source_build builds the Dockerfile's default target with GO_IMAGE set to
# a stand-in for the official Go image: this host's Go toolchain, module
# cache, /bin/sh and mkdir, with the proxy off (nothing is pulled).
source_build() {
	local goimage=graceful-restart-sim-go:local root goroot modcache
	goroot=$(go env GOROOT)
	modcache=$(go env GOMODCACHE)
	root=$(mktemp -d)
	mkdir -p "$root/bin" "$root/usr/local" "$root/go/pkg" "$root/tmp"
	cp -a "$goroot" "$root/usr/local/go"
	cp -a "$modcache" "$root/go/pkg/mod"
	cp /bin/sh /bin/mkdir /bin/cp "$root/bin/"
	for lib in $(ldd /bin/sh /bin/mkdir /bin/cp | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
	tar -C "$root" -c . | docker import \
		-c 'ENV PATH=/usr/local/go/bin:/bin GOPATH=/go GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local HOME=/tmp' \
		- "$goimage" >/dev/null || return 1
	rm -rf "$root"
	rm -rf "$context" # the default target must not need it
	local status=0
	docker build -q --build-arg GO_IMAGE="$goimage" -t "$image" . >/dev/null || status=$?
	docker rmi "$goimage" >/dev/null
	if [ "$status" != 0 ]; then
		echo "docker.sh: FAIL: the default target did not build" >&2
		return 1
	fi
	echo "docker.sh: built image $image from source (default target, stand-in Go image)"
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
		set -- -restarts 20 -baseline 2s -faults crash,hang,kill,sigkill,panic
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
source) source_build && run "$@" ;;
-*) build && run "$mode" "$@" ;;
*)
	echo "usage: $0 [build | run [flags...] | stop | source]" >&2
	exit 2
	;;
esac
