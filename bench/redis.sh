#!/bin/bash
# Issue 4's Redis benchmark: 1 M keys, same machine, same run.
#   backup:  coffre (backup job, in-process), PSYNC (the default here) and mode=scan (SCAN + DUMP +
#            PEXPIRETIME, what ElastiCache allows)  vs  redis-cli --rdb (full sync)
#   restore: coffre (restore job into a new, empty instance, validated)  vs  starting redis-server on the RDB file
# Prints a TSV of medians (seconds, keys/s, MB/s of the dataset) and writes it to $OUT.
#
# Usage: bench/redis.sh [-n RUNS] [-k KEYS]
#   COFFRE=path  the coffre binary (default: build bin/coffre)
set -euo pipefail
RUNS=3
KEYS=1000000
while getopts n:k: o; do case $o in n) RUNS=$OPTARG ;; k) KEYS=$OPTARG ;; *) exit 2 ;; esac; done
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/coffre-bench}/redis
COFFRE=${COFFRE:-$HERE/bin/coffre}
OUT=${OUT:-$HERE/docs/bench-redis-$(date +%Y%m%d-%H%M).tsv}
SRC_PORT=56379 DST_PORT=56380 RDB_PORT=56381
log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
[ -x "$COFFRE" ] || (cd "$HERE" && go build -o "$COFFRE" ./cmd/coffre)
command -v redis-server >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null

rm -rf "$WORK"
mkdir -p "$WORK"/{src,dst,rdb}
start() { # start PORT DIR [RDBFILE]
	redis-server --port "$1" --bind 127.0.0.1 --dir "$2" --dbfilename "${3:-none.rdb}" --save "" --appendonly no --repl-diskless-sync-delay 0 \
		--daemonize yes --pidfile "$2/pid" --logfile "$2/log"
}
stop() { redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || true; while redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.05; done; }
wait_loaded() { until [ "$(redis-cli -p "$1" info persistence 2>/dev/null | tr -d '\r' | sed -n 's/^loading://p')" = 0 ]; do sleep 0.01; done; }
trap 'stop $SRC_PORT; stop $DST_PORT; stop $RDB_PORT' EXIT

start $SRC_PORT "$WORK/src"
wait_loaded $SRC_PORT
log "loading $KEYS keys"
python3 - "$KEYS" <<'PY' | redis-cli -p $SRC_PORT --pipe >/dev/null
import random, sys
n = int(sys.argv[1]); random.seed(4)
w = sys.stdout.buffer
def cmd(*a):
    w.write(b"*%d\r\n" % len(a))
    for x in a:
        x = x if isinstance(x, bytes) else str(x).encode()
        w.write(b"$%d\r\n%s\r\n" % (len(x), x))
words = [b"login", b"logout", b"view", b"click", b"purchase", b"refund", b"search", b"error"]
for i in range(n):
    r = i % 10
    if r < 6:
        cmd("SET", "session:%d" % i, b'{"user":%d,"kind":"%s","ttl":3600,"pad":"%s"}' % (random.randrange(10**6), random.choice(words), b"x" * random.randrange(20, 120)))
    elif r < 8:
        cmd("HSET", "user:%d" % i, "name", "user%d" % i, "email", "u%d@example.com" % i, "plan", random.choice(words))
    elif r == 8:
        cmd("RPUSH", "events:%d" % i, *[random.choice(words) for _ in range(8)])
    else:
        cmd("SET", "cache:%d" % i, b"v" * random.randrange(50, 400))
        cmd("PEXPIRE", "cache:%d" % i, 3600000 + i)
PY
DBSIZE=$(redis-cli -p $SRC_PORT dbsize)
MB=$(redis-cli -p $SRC_PORT info memory | tr -d '\r' | sed -n 's/^used_memory_dataset://p')
log "$DBSIZE keys, dataset $((MB / 1048576)) MiB"

cat >"$WORK/bench.hcl" <<-HCL
	vault "bench" {
	  location = "file://$WORK/vault"
	}
	resource "redis" "bench" {
	  settings = { host = "127.0.0.1", port = "$SRC_PORT" }
	}
	resource "redis" "scan" {
	  settings = { host = "127.0.0.1", port = "$SRC_PORT", mode = "scan" }
	}
HCL
export COFFRE_DATA_DIR=$WORK/data
RES=arn:coffre:redis:::resource/bench
RES_SCAN=arn:coffre:redis:::resource/scan
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
t() { cold; local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A R V
add() { R[$1]="${R[$1]:-} $2"; }
rdb_restore() { start $RDB_PORT "$WORK/rdb" dump.rdb; until redis-cli -p $RDB_PORT ping >/dev/null 2>&1; do sleep 0.01; done; wait_loaded $RDB_PORT; }

for run in $(seq "$RUNS"); do
	log "run $run/$RUNS"
	rm -f "$WORK/rdb/dump.rdb"
	add rdb_backup "$(t redis-cli -p $SRC_PORT --rdb "$WORK/rdb/dump.rdb")"
	add rdb_restore "$(t rdb_restore)"
	[ "$(redis-cli -p $RDB_PORT dbsize)" = "$DBSIZE" ] || { echo "RDB restore has $(redis-cli -p $RDB_PORT dbsize) keys" >&2; exit 1; }
	stop $RDB_PORT
	# The default (mode=auto) takes the PSYNC path on this server; mode=scan
	# is what ElastiCache allows.
	for mode in psync scan; do
		rm -rf "$WORK/vault" "$WORK/data"
		"$COFFRE" apply -f "$WORK/bench.hcl" --auto-approve >/dev/null
		res=$RES
		[ $mode = scan ] && res=$RES_SCAN
		add coffre_${mode}_backup "$(t "$COFFRE" backup start --resource "$res" --vault bench)"
		ID=$("$COFFRE" points list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
		start $DST_PORT "$WORK/dst"
		wait_loaded $DST_PORT
		add coffre_${mode}_restore "$(t "$COFFRE" restore start --vault bench --recovery-point "${ID:0:12}" --target-setting port=$DST_PORT)"
		[ "$(redis-cli -p $DST_PORT dbsize)" = "$DBSIZE" ] || { echo "coffre ($mode) restore has $(redis-cli -p $DST_PORT dbsize) keys" >&2; exit 1; }
		stop $DST_PORT
		V[$mode]=$(du -sb "$WORK/vault" | cut -f1)
	done
done

{
	printf 'metric\tvalue\n'
	printf 'keys\t%d\n' "$DBSIZE"
	printf 'dataset_MiB\t%d\n' $((MB / 1048576))
	for k in rdb_backup coffre_psync_backup coffre_scan_backup rdb_restore coffre_psync_restore coffre_scan_restore; do
		m=$(echo ${R[$k]} | tr ' ' '\n' | median)
		printf '%s_s\t%s\n' "$k" "$m"
		printf '%s_keys_per_s\t%.0f\n' "$k" "$(echo "$DBSIZE / $m" | bc -l)"
		printf '%s_MB_per_s\t%.1f\n' "$k" "$(echo "$MB / 1000000 / $m" | bc -l)"
	done
	printf 'vault_psync_MB\t%.1f\n' "$(echo "${V[psync]} / 1000000" | bc -l)"
	printf 'vault_scan_MB\t%.1f\n' "$(echo "${V[scan]} / 1000000" | bc -l)"
	printf 'rdb_MB\t%.1f\n' "$(echo "$(stat -c %s "$WORK/rdb/dump.rdb") / 1000000" | bc -l)"
	printf 'coffre_version\t%s\n' "$(cd "$HERE" && git rev-parse --short HEAD)"
	printf 'runs\t%d\n' "$RUNS"
} | tee "$OUT"
