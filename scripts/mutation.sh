#!/usr/bin/env bash
# Mutation testing of the library with gremlins
# (github.com/go-gremlins/gremlins v0.6.0): the packages graceful,
# graceful/wire and graceful/internal/fdpass, each by its own tests. It
# prints, per package, the efficacy (killed / (killed + lived)), the
# mutation coverage ((killed + lived) / (killed + lived + not covered)) and
# the counts, lists the mutants that lived, and exits 1 when a package's
# efficacy is below the threshold.
#
#   scripts/mutation.sh [-t THRESHOLD] [PACKAGE...]
#
# PACKAGE is wire, fdpass or graceful (default: all three); THRESHOLD
# defaults to 90 (percent). Environment:
#
#   WORKERS      gremlins workers (default 2: one per core of a 2-core
#                machine; more only makes the suites' waits flaky)
#   COEFFICIENT  timeout coefficient (default 10): a mutant's test run is
#                given COEFFICIENT times the coverage run's duration
#                before it counts as TIMED OUT
#   GREMLINS     the gremlins binary (default: gremlins on PATH, else
#                $(go env GOPATH)/bin/gremlins; install it with
#                go install github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0)
#   OUT          directory for the JSON results (default: a temporary one)
#
# How long it takes, on a quiet 2-core machine: wire about 2.5 minutes,
# fdpass about 2.5, graceful about 35 with COEFFICIENT=4 and up to 50 with
# the default 10 (see graceful/MUTATION.md for measured times).
# graceful's suite takes some 27 s per run, so it is
# mutated in groups of files, each a gremlins run of its own (the coverage
# is gathered again for each, which costs one run of the suite); a group
# can be run alone with MUTATION_GROUPS (see below).
#
# The suites honour GRACEFUL_FAIL_FAST=1 (Ginkgo's FailFast), set here, so
# that a killed mutant stops at its first failing spec.
#
# Files that cannot run on linux are left out: *_darwin.go and
# systemd_other.go (build-constrained away), so that they do not count as
# not covered.
set -euo pipefail

threshold=90
while getopts t: opt; do
	case $opt in
	t) threshold=$OPTARG ;;
	*)
		echo "usage: $0 [-t THRESHOLD] [wire|fdpass|graceful]..." >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
	packages=(wire fdpass graceful)
fi

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
workers=${WORKERS:-2}
coefficient=${COEFFICIENT:-10}
gremlins=${GREMLINS:-$(command -v gremlins || echo "$(go env GOPATH)/bin/gremlins")}
if [ ! -x "$gremlins" ]; then
	echo "gremlins not found: go install github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0" >&2
	exit 2
fi
command -v jq >/dev/null || {
	echo "jq is needed to read gremlins' results" >&2
	exit 2
}
out=${OUT:-$(mktemp -d -t mutation.XXXXXX)}
mkdir -p "$out"
export GRACEFUL_FAIL_FAST=1
# Never a cached test result: gremlins times its coverage run to set the
# mutants' timeout, and a cached run takes no time at all.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1"

# graceful is mutated in these groups of files (a regular expression on
# the file name each, without .go); MUTATION_GROUPS, a space-separated
# list, overrides them, e.g. MUTATION_GROUPS="client conn".
default_groups=(
	'client|spare'
	'conn'
	'server'
	'sender|send'
	'drain|handler|meta|errors|log'
	'listen|peercred|systemd|systemd_linux|sys_linux|conv|temporary_unix|doc'
)
if [ -n "${MUTATION_GROUPS:-}" ]; then
	read -r -a groups <<<"$MUTATION_GROUPS"
else
	groups=("${default_groups[@]}")
fi

# unleash runs gremlins on the package directory $1 (relative to the
# module root) and writes its JSON result to $2; the rest are more flags.
unleash() {
	local dir=$1 json=$2
	shift 2
	echo "== gremlins unleash $dir $*" >&2
	"$gremlins" unleash "./$dir" \
		--workers "$workers" --timeout-coefficient "$coefficient" \
		--exclude-files '_darwin\.go$' --exclude-files '^systemd_other\.go$' \
		--output "$json" "$@" >&2
}

status=0
summary=()
for pkg in "${packages[@]}"; do
	start=$(date +%s)
	case $pkg in
	wire)
		unleash graceful/wire "$out/wire.json"
		jsons=("$out/wire.json")
		;;
	fdpass)
		unleash graceful/internal/fdpass "$out/fdpass.json"
		jsons=("$out/fdpass.json")
		;;
	graceful)
		# The package's own files only: its subpackages are the other two.
		jsons=()
		mapfile -t files < <(cd graceful && ls -- *.go | grep -v '_test\.go$')
		# A file in no default group would never be mutated: say so.
		for f in "${files[@]}"; do
			[[ $f =~ _darwin\.go$ || $f == systemd_other.go ]] && continue
			found=""
			for g in "${default_groups[@]}"; do
				[[ ${f%.go} =~ ^($g)$ ]] && found=1
			done
			if [ -z "$found" ]; then
				echo "$0: graceful/$f is in no group of default_groups; add it to one" >&2
				exit 2
			fi
		done
		for i in "${!groups[@]}"; do
			excludes=(--exclude-files '^wire/' --exclude-files '^internal/')
			for f in "${files[@]}"; do
				if ! [[ ${f%.go} =~ ^(${groups[$i]})$ ]]; then
					excludes+=(--exclude-files "^${f//./\\.}\$")
				fi
			done
			unleash graceful "$out/graceful-$i.json" "${excludes[@]}"
			jsons+=("$out/graceful-$i.json")
		done
		;;
	*)
		echo "unknown package $pkg: wire, fdpass or graceful" >&2
		exit 2
		;;
	esac
	secs=$(($(date +%s) - start))
	# Counts by status over every run of the package.
	read -r killed lived notcovered timedout notviable < <(
		jq -s -r '[.[].files[]?.mutations[]?.status] as $s
			| [ ($s | map(select(. == "KILLED")) | length),
			    ($s | map(select(. == "LIVED")) | length),
			    ($s | map(select(. == "NOT COVERED")) | length),
			    ($s | map(select(. == "TIMED OUT")) | length),
			    ($s | map(select(. == "NOT VIABLE")) | length) ] | @tsv' "${jsons[@]}"
	)
	efficacy=$(awk -v k="$killed" -v l="$lived" 'BEGIN { printf "%.2f", (k + l) ? 100 * k / (k + l) : 100 }')
	coverage=$(awk -v k="$killed" -v l="$lived" -v n="$notcovered" 'BEGIN { printf "%.2f", (k + l + n) ? 100 * (k + l) / (k + l + n) : 100 }')
	line=$(printf '%-8s efficacy %6s%%  coverage %6s%%  killed %d lived %d not-covered %d timed-out %d not-viable %d  (%dm%02ds)' \
		"$pkg" "$efficacy" "$coverage" "$killed" "$lived" "$notcovered" "$timedout" "$notviable" $((secs / 60)) $((secs % 60)))
	summary+=("$line")
	echo "$line"
	jq -s -r --arg pkg "$pkg" '.[].files[]? | .file_name as $f | .mutations[]?
		| select(.status == "LIVED" or .status == "TIMED OUT")
		| "  \(.status) \(.type) \($f):\(.line):\(.column)"' "${jsons[@]}" | sort -t: -k1,1 -k2,2n
	if awk -v e="$efficacy" -v t="$threshold" 'BEGIN { exit !(e < t) }'; then
		status=1
	fi
done

echo
echo "results in $out; threshold $threshold%"
printf '%s\n' "${summary[@]}"
exit $status
