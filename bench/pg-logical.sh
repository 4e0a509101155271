#!/bin/bash
# Issue 4's PostgreSQL logical benchmark, same machine, same run, cold-ish:
#   a pgbench -i -s $SCALE database plus the events table of
#   ../shared/bench/make_pgdump.sh, then
#   backup:  coffre (backup job, in-process)  vs  pg_dump -Fc to a file  vs  pgbackrest full backup
#   restore: coffre (restore job into a new database)  vs  pg_restore -j 2 from a -Fd dump
#   floor:   every table read out of the server in binary by two psql sessions to
#            /dev/null, the bigger tables spread over both: what any logical backup costs
#            the server, with nothing stored (a ceiling for coffre_backup / pg_dump_Fc)
#   day 2:   ~1% of rows changed in clustered runs (make_pgdump.sh's v2 changes), then
#            what coffre's second backup stores  vs  what restic stores for the second plain dump
# Prints a TSV of medians over -n runs and writes it to $OUT.
#
# Usage: bench/pg-logical.sh [-n RUNS] [-s SCALE]     (as root; ~10 GB free under $BENCH_WORK)
#   COFFRE=path  the coffre binary (default: build bin/coffre)
#   RESTIC=path  restic (default: restic on PATH)
set -euo pipefail
RUNS=3
SCALE=${SCALE:-100}
while getopts n:s: o; do case $o in n) RUNS=$OPTARG ;; s) SCALE=$OPTARG ;; *) exit 2 ;; esac; done
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/coffre-bench}/pglogical
PGBIN=/usr/lib/postgresql/15/bin
EVENTS=${EVENTS:-2770000}
PORT=54339
COFFRE=${COFFRE:-$HERE/bin/coffre}
RESTIC=${RESTIC:-restic}
OUT=${OUT:-$HERE/docs/bench-pg-$(date +%Y%m%d-%H%M).tsv}

log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
as_pg() { runuser -u postgres -- "$@"; }
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as the postgres user)" >&2; exit 1; }
[ -x "$COFFRE" ] || (cd "$HERE" && go build -o "$COFFRE" ./cmd/coffre)
command -v pgbackrest >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbackrest >/dev/null
command -v "$RESTIC" >/dev/null || { echo "restic not found (set RESTIC=)" >&2; exit 1; }

mkdir -p "$WORK"
chown postgres: "$WORK"
DATA=$WORK/data SOCK=$WORK/sock
PSQL="as_pg $PGBIN/psql -h $SOCK -p $PORT -U postgres -v ON_ERROR_STOP=1 -q -X"

# ---------------------------------------------------------------- cluster
if [ ! -f "$DATA/PG_VERSION" ]; then
	log "initdb"
	as_pg $PGBIN/initdb -D "$DATA" -U postgres --no-locale -E UTF8 >/dev/null
	as_pg mkdir -p "$SOCK" "$WORK/pgbackrest"
	cat >>"$DATA/postgresql.conf" <<-CONF
		listen_addresses = '127.0.0.1'
		unix_socket_directories = '$SOCK'
		port = $PORT
		shared_buffers = 1GB
		maintenance_work_mem = 512MB
		max_wal_size = 8GB
		autovacuum = off
		wal_level = replica
		archive_mode = on
		archive_command = 'pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench archive-push %p'
	CONF
	echo "host all all 127.0.0.1/32 trust" >>"$DATA/pg_hba.conf"
fi
cat >"$WORK/pgbackrest.conf" <<-CONF
	[bench]
	pg1-path=$DATA
	pg1-socket-path=$SOCK
	pg1-port=$PORT
	[global]
	repo1-path=$WORK/pgbackrest
	repo1-retention-full=100
	log-level-console=warn
	start-fast=y
	compress-type=lz4
	process-max=2
CONF
chown postgres: "$WORK/pgbackrest.conf"
as_pg $PGBIN/pg_ctl -D "$DATA" -l "$WORK/log" -w start >/dev/null
trap 'as_pg $PGBIN/pg_ctl -D "$DATA" -m fast -w stop >/dev/null' EXIT

if ! $PSQL -d bench -c "SELECT 1 FROM events LIMIT 1" >/dev/null 2>&1; then
	log "creating bench: pgbench -i -s $SCALE + $EVENTS events"
	$PSQL -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
	as_pg $PGBIN/pgbench -h "$SOCK" -p $PORT -U postgres -i -s "$SCALE" -q bench >/dev/null 2>&1
	# The events table exactly as ../shared/bench/make_pgdump.sh makes it.
	sed -n '/^CREATE TABLE events/,/^VACUUM ANALYZE;/p' /work/shared/bench/make_pgdump.sh | sed "s/\$EVENTS/$EVENTS/g" |
		{ echo "SELECT setseed(0.42);"; cat; } | $PSQL -d bench
	as_pg pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench stanza-create >/dev/null
fi
# pgBackRest backs up the whole cluster, coffre and pg_dump one database:
# any other database makes pgBackRest's time longer than the comparison
# means (a 2 GB copy of bench made it 12.8 s instead of 7.1-8.1 s). The
# bench's own restore targets, left by an interrupted run, are dropped;
# anything else stops the bench.
$PSQL -c "DROP DATABASE IF EXISTS restored_pr" -c "DROP DATABASE IF EXISTS restored_co"
OTHER=$($PSQL -At -c "SELECT string_agg(datname, ', ') FROM pg_database WHERE datname NOT IN ('bench', 'postgres', 'template0', 'template1')")
if [ -n "$OTHER" ]; then
	echo "the bench cluster holds other databases ($OTHER): pgBackRest would back them up too; drop them first" >&2
	exit 1
fi
$PSQL -d bench -c "CHECKPOINT"
DBSIZE=$($PSQL -d bench -At -c "SELECT pg_database_size('bench')")
CLUSTER=$($PSQL -At -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
log "database bench: $((DBSIZE / 1048576)) MiB (cluster: $((CLUSTER / 1048576)) MiB)"

# ---------------------------------------------------------------- coffre setup
# coffre connects through the Unix socket, as pg_dump, pg_restore and
# pgBackRest do here (TCP on loopback cost coffre ~3 s more per backup:
# the kernel's TCP path for 1.7 GB).
CDIR=$WORK/coffre
rm -rf "$CDIR"
mkdir -p "$CDIR"
cat >"$CDIR/bench.hcl" <<-HCL
	vault "bench" {
	  location = "file://$CDIR/vault"
	}
	resource "postgres" "bench" {
	  settings = { host = "$SOCK", port = "$PORT", user = "postgres", database = "bench", sslmode = "disable" }
	}
HCL
export COFFRE_DATA_DIR=$CDIR/data
"$COFFRE" apply -f "$CDIR/bench.hcl" --auto-approve >/dev/null
RES=arn:coffre:postgres:::resource/bench

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# settle: the server quiet before a timed step, so that no step pays for the
# one before it: a checkpoint writes the dirty buffers the last load left
# (up to shared_buffers), and the archiver catches up with the WAL it made
# (archive_mode is on: pgbackrest archive-push runs once per segment, and a
# restore makes a hundred or more). Both used to run during the next step.
settle() {
	$PSQL -c "CHECKPOINT" >/dev/null
	local i
	for i in $(seq 600); do
		[ "$($PSQL -At -c "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")" = 0 ] && return 0
		sleep 1
	done
	log "WARNING: the archiver did not catch up in 600 s"
}
# t CMD...: runs CMD on a settled server with a cold cache, prints its wall
# seconds.
t() {
	settle
	cold
	local s e
	s=$(date +%s.%N)
	"$@" >/dev/null
	e=$(date +%s.%N)
	echo "$e - $s" | bc
}
# floor: the tables, biggest first, dealt to two psql sessions (each table
# to the one with fewer bytes so far), each copying its tables in binary to
# /dev/null.
floor() {
	local a=() b=() sa=0 sb=0 name size
	while IFS=$'\t' read -r name size; do
		if [ "$sa" -le "$sb" ]; then a+=(-c "COPY $name TO STDOUT (FORMAT binary)"); sa=$((sa + size))
		else b+=(-c "COPY $name TO STDOUT (FORMAT binary)"); sb=$((sb + size)); fi
	done < <($PSQL -d bench -At -F $'\t' -c "SELECT c.oid::regclass, pg_table_size(c.oid) FROM pg_class c
		WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace ORDER BY 2 DESC")
	$PSQL -d bench "${a[@]}" >/dev/null &
	local pa=$!
	[ ${#b[@]} -eq 0 ] || $PSQL -d bench "${b[@]}" >/dev/null
	wait $pa
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }

for run in $(seq "$RUNS"); do
	log "run $run/$RUNS"
	rm -f "$WORK/dump.fc"
	add pg_dump_Fc "$(t as_pg $PGBIN/pg_dump -h "$SOCK" -p $PORT -U postgres -Fc -f "$WORK/dump.fc" bench)"
	rm -rf "$WORK/dump.fd"
	as_pg $PGBIN/pg_dump -h "$SOCK" -p $PORT -U postgres -Fd -j 2 -f "$WORK/dump.fd" bench
	# Untimed: keep only the last full backup (and its WAL), or the
	# repository grows by a full backup every run until the disk is full.
	as_pg pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench expire --repo1-retention-full=1 >/dev/null
	add pgbackrest_full "$(t as_pg pgbackrest --config="$WORK/pgbackrest.conf" --stanza=bench --type=full backup)"
	rm -rf "$CDIR/vault" "$CDIR/data/catalog.db"* "$CDIR/data/keys"
	"$COFFRE" apply -f "$CDIR/bench.hcl" --auto-approve >/dev/null
	add coffre_backup "$(t "$COFFRE" backup start --resource "$RES" --vault bench)"
	add copy_floor "$(t floor)"
	ID=$("$COFFRE" points list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
	$PSQL -c "DROP DATABASE IF EXISTS restored_pr" -c "DROP DATABASE IF EXISTS restored_co" -c "CREATE DATABASE restored_pr"
	add pg_restore_j2 "$(t as_pg $PGBIN/pg_restore -h "$SOCK" -p $PORT -U postgres -j 2 -d restored_pr "$WORK/dump.fd")"
	add coffre_restore "$(t "$COFFRE" restore start --vault bench --recovery-point "${ID:0:12}" --target-setting database=restored_co)"
	$PSQL -c "DROP DATABASE restored_pr" -c "DROP DATABASE restored_co"
done

for k in "${!R[@]}"; do log "$k:${R[$k]}"; done

# ---------------------------------------------------------------- day 2
log "day 2: ~1% of rows changed in clustered runs"
V1=$(du -sb "$CDIR/vault" | cut -f1)
as_pg $PGBIN/pg_dump -h "$SOCK" -p $PORT -U postgres -Fp bench >"$WORK/dump.v1.sql"
# make_pgdump.sh's v2 changes, with a new seed every run: with its fixed
# seed, a database that already had a day 2 (an earlier run) would get the
# same event updates, deletes and inserts again, which change nothing, and
# only pgbench_accounts' additive updates would differ from the day before.
SEED=${SEED:-$(awk 'BEGIN { srand(); printf "%.6f", rand() }')}
log "day 2 seed: $SEED"
sed -n '/^# v2:/,/^\$DUMP > "\$OUT\/dump.v2.sql"/p' /work/shared/bench/make_pgdump.sh | sed -n '/^SELECT setseed/,/^SQL$/p' | sed '$d' |
	sed "s/\$SCALE/$SCALE/g; s/\$EVENTS/$EVENTS/g; s/^SELECT setseed([0-9.]*);/SELECT setseed($SEED);/" |
	# A database that already had a day 2 (an earlier run) gets its appended
	# events removed first, so that the INSERT does not collide.
	{ echo "DELETE FROM events WHERE id > $EVENTS;"; cat; } | $PSQL -d bench
as_pg $PGBIN/pg_dump -h "$SOCK" -p $PORT -U postgres -Fp bench >"$WORK/dump.v2.sql"
"$COFFRE" backup start --resource "$RES" --vault bench >/dev/null
V2=$(du -sb "$CDIR/vault" | cut -f1)
export RESTIC_PASSWORD=bench
rm -rf "$WORK/restic"
"$RESTIC" init -r "$WORK/restic" -q
"$RESTIC" -r "$WORK/restic" backup -q --stdin --stdin-filename dump.sql <"$WORK/dump.v1.sql"
R1=$(du -sb "$WORK/restic" | cut -f1)
"$RESTIC" -r "$WORK/restic" backup -q --stdin --stdin-filename dump.sql <"$WORK/dump.v2.sql"
R2=$(du -sb "$WORK/restic" | cut -f1)

{
	printf 'metric\tvalue\n'
	printf 'database_MiB\t%d\n' $((DBSIZE / 1048576))
	printf 'cluster_MiB\t%d\n' $((CLUSTER / 1048576))
	for k in pg_dump_Fc pgbackrest_full coffre_backup copy_floor pg_restore_j2 coffre_restore; do
		printf '%s_s\t%s\n' "$k" "$(echo ${R[$k]} | tr ' ' '\n' | median)"
	done
	printf 'coffre_day2_adds_MB\t%.1f\n' "$(echo "($V2 - $V1) / 1000000" | bc -l)"
	printf 'restic_day2_adds_MB\t%.1f\n' "$(echo "($R2 - $R1) / 1000000" | bc -l)"
	printf 'day2_seed\t%s\n' "$SEED"
	printf 'coffre_version\t%s\n' "$(cd "$HERE" && git rev-parse --short HEAD)"
	printf 'runs\t%d\n' "$RUNS"
} | tee "$OUT"
