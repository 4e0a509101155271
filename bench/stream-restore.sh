#!/usr/bin/env bash
# stream-restore.sh: restore one stream recovery point with several coffre
# builds in turn, cold cache, and print wall and CPU seconds per run.
#
#   bench/stream-restore.sh [-n RUNS] [-v VAULT] FILE BUILD...
#
# FILE is backed up once (with the first build) as a stream into VAULT (a
# new local directory under $BENCH_WORK by default, or any vault location,
# e.g. s3://127.0.0.1:PORT/bucket/prefix?path-style=true&insecure=true with
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set); each run then restores it
# to standard output with every BUILD in turn (A B A B …, so that drift hits
# every build alike) and checks the bytes against FILE. Dropping the page
# cache needs root; without it the runs are warm and the script says so.
set -euo pipefail
RUNS=3
VAULT=
while getopts n:v: o; do
	case $o in
	n) RUNS=$OPTARG ;;
	v) VAULT=$OPTARG ;;
	*) echo "usage: $0 [-n RUNS] [-v VAULT] FILE BUILD..." >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { echo "usage: $0 [-n RUNS] [-v VAULT] FILE BUILD..." >&2; exit 2; }
FILE=$1
shift
[ -f "$FILE" ] || { echo "$FILE: not a file" >&2; exit 2; }
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/coffre-bench}/stream-restore
mkdir -p "$WORK"
export COFFRE_PASSWORD=${COFFRE_PASSWORD:-bench}
if [ -z "$VAULT" ]; then
	VAULT=$WORK/vault
	rm -rf "$VAULT"
fi
"$1" --vault "$VAULT" init -q
"$1" --vault "$VAULT" backup --stdin --stdin-filename "$(basename "$FILE")" <"$FILE"
ID=$("$1" --vault "$VAULT" list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')

cold() {
	sync
	if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; else echo "warning: cannot drop the page cache (not root): warm runs" >&2; fi
}
for run in $(seq "$RUNS"); do
	for b in "$@"; do
		cold
		/usr/bin/time -f "run $run $(basename "$b"): %e s wall, %U s user, %S s system" \
			"$b" --vault "$VAULT" restore "${ID:0:12}" --stdout -q >"$WORK/out" 2>"$WORK/time" || { cat "$WORK/time" >&2; exit 1; }
		tail -1 "$WORK/time"
		cmp -s "$WORK/out" "$FILE" || { echo "run $run $(basename "$b"): restored bytes differ from $FILE" >&2; exit 1; }
	done
done
rm -f "$WORK/out"
