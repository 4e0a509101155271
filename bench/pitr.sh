#!/bin/bash
# Issue 4's PITR measurement, end to end through `coffre server`:
#   a continuous-backup rule on the pgbench database of bench/pg-logical.sh (run it first),
#   the initial base backup, WAL streamed while `pgbench -c 2 -T $LOAD` writes; the WAL
#   archive lag (now - newest WAL point in the vault) sampled every 5 s under that load;
#   then a restore to a second T chosen during the load, timed, into a new data directory
#   on a new port, checked with marker rows written just before and just after T.
#   At the end, and on failure, the WAL supervisor's replication slot is dropped (a
#   shutdown keeps it, and a slot nobody streams from makes PostgreSQL keep all WAL).
# Usage: bench/pitr.sh [-l LOAD_SECONDS]     (as root)
set -euo pipefail
LOAD=60
while getopts l: o; do case $o in l) LOAD=$OPTARG ;; *) exit 2 ;; esac; done
HERE=$(cd "$(dirname "$0")/.." && pwd)
PG=${BENCH_WORK:-${TMPDIR:-/tmp}/coffre-bench}/pglogical
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/coffre-bench}/pitr
PGBIN=/usr/lib/postgresql/15/bin
PORT=54339 RPORT=54340
COFFRE=${COFFRE:-$HERE/bin/coffre}
OUT=${OUT:-$HERE/docs/bench-pitr-$(date +%Y%m%d-%H%M).tsv}
log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
as_pg() { runuser -u postgres -- "$@"; }
[ -f "$PG/data/PG_VERSION" ] || { echo "run bench/pg-logical.sh first (it creates the database)" >&2; exit 1; }
[ -x "$COFFRE" ] || (cd "$HERE" && go build -o "$COFFRE" ./cmd/coffre)
grep -q "^host replication" "$PG/data/pg_hba.conf" || echo "host replication all 127.0.0.1/32 trust" >>"$PG/data/pg_hba.conf"
as_pg $PGBIN/pg_ctl -D "$PG/data" -l "$PG/log" -w start >/dev/null 2>&1 || as_pg $PGBIN/pg_ctl -D "$PG/data" reload >/dev/null
PSQL="as_pg $PGBIN/psql -h $PG/sock -p $PORT -U postgres -d bench -v ON_ERROR_STOP=1 -q -X -At"
RES=arn:coffre:postgres:::resource/bench
SLOT=coffre_$(printf '%s\0%s' "$RES" pitr | sha256sum | cut -c1-16) # jobs.Slot(resource, vault)
# drop_slot drops $SLOT once no WAL sender uses it (the server's just stopped).
drop_slot() {
	local i
	for ((i = 0; i < 20; i++)); do
		[ -z "$($PSQL -c "SELECT 1 FROM pg_replication_slots WHERE slot_name = '$SLOT'" 2>/dev/null)" ] && return 0
		$PSQL -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$SLOT' AND NOT active" >/dev/null 2>&1 || true
		sleep 0.5
	done
	log "could not drop replication slot $SLOT; run: SELECT pg_drop_replication_slot('$SLOT');"
	return 1
}
drop_slot || exit 1 # left by an earlier run that could not clean up ($WORK, with its catalog, is recreated)
$PSQL -c "CREATE TABLE IF NOT EXISTS pitr_marker (name text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())" -c "TRUNCATE pitr_marker"

rm -rf "$WORK"
mkdir -p "$WORK"
chown postgres: "$WORK"
cat >"$WORK/pitr.hcl" <<-HCL
	vault "pitr" {
	  location = "file://$WORK/vault"
	}
	resource "postgres" "bench" {
	  settings = { host = "127.0.0.1", port = "$PORT", user = "postgres", database = "bench", sslmode = "disable" }
	}
	plan "pitr" {
	  rule "continuous" {
	    schedule          = "cron(0 3 * * ? *)"
	    target_vault      = "pitr"
	    continuous_backup = true
	    lifecycle {
	      delete_after_days = 35
	    }
	  }
	  selection "db" {
	    resources = ["arn:coffre:postgres:::resource/bench"]
	  }
	}
HCL
export COFFRE_DATA_DIR=$WORK/data
"$COFFRE" apply -f "$WORK/pitr.hcl" --auto-approve >/dev/null
"$COFFRE" server --listen 127.0.0.1:0 --tick 2s >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER=$!
cleanup() {
	set +e
	kill $SERVER 2>/dev/null
	wait $SERVER 2>/dev/null
	drop_slot
	as_pg $PGBIN/pg_ctl -D "$WORK/restored" -m immediate stop >/dev/null 2>&1
	as_pg $PGBIN/pg_ctl -D "$PG/data" -m fast -w stop >/dev/null 2>&1
}
trap cleanup EXIT

log "waiting for the initial base backup"
s=$(date +%s.%N)
until "$COFFRE" jobs list --kind backup --state completed --json 2>/dev/null | grep -q '"state": *"COMPLETED"'; do
	sleep 1
	if "$COFFRE" jobs list --kind backup --state failed --json 2>/dev/null | grep -q FAILED; then echo "base backup failed" >&2; exit 1; fi
done
BASE_S=$(echo "$(date +%s.%N) - $s" | bc)
log "base backup done in ${BASE_S}s; pgbench -c 2 -T $LOAD"
as_pg $PGBIN/pgbench -h "$PG/sock" -p $PORT -U postgres -c 2 -j 2 -T "$LOAD" -n bench >"$WORK/pgbench.log" 2>&1 &
LOADPID=$!
newest_wal() { "$COFFRE" points list --json | python3 -c '
import json,sys,datetime
ps=[p for p in json.load(sys.stdin) if not p.get("job_id")]
print(max((p["created_at"] for p in ps), default=""))'; }
lags=()
T=""
for ((i = 0; i < LOAD / 5; i++)); do
	sleep 5
	n=$(newest_wal)
	[ -n "$n" ] && lags+=("$(python3 -c "import datetime,sys; n=datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')); print(round((datetime.datetime.now(datetime.timezone.utc)-n).total_seconds(),1))" "$n")")
	if ((i == LOAD / 10)); then
		$PSQL -c "INSERT INTO pitr_marker (name) VALUES ('before')"
		sleep 1.1
		T=$($PSQL -c "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
		sleep 1.1
		$PSQL -c "INSERT INTO pitr_marker (name) VALUES ('after')"
	fi
done
wait $LOADPID
TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.log" | head -1)
log "load done ($TPS tps); waiting for the WAL past T=$T to be archived"
$PSQL -c "SELECT pg_switch_wal()" >/dev/null
sleep 35 # one FlushEvery (30 s) and some
log "restoring to $T"
s=$(date +%s.%N)
"$COFFRE" restore start --vault pitr --resource arn:coffre:postgres:::resource/bench --to-time "$T" \
	--target-setting data_dir="$WORK/restored" --target-setting port=$RPORT >"$WORK/restore.out"
RESTORE_S=$(echo "$(date +%s.%N) - $s" | bc)
RP="as_pg $PGBIN/psql -h 127.0.0.1 -p $RPORT -U postgres -d bench -At -X"
MARKERS=$($RP -c "SELECT string_agg(name, ',' ORDER BY name) FROM pitr_marker")
[ "$MARKERS" = before ] || { echo "restored markers: '$MARKERS', want 'before'" >&2; cat "$WORK/restore.out" >&2; exit 1; }
MAXLAG=$(printf '%s\n' "${lags[@]}" | sort -g | tail -1)
MEDLAG=$(printf '%s\n' "${lags[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
{
	printf 'metric\tvalue\n'
	printf 'database_MiB\t%d\n' $(($($PSQL -c "SELECT pg_database_size('bench')") / 1048576))
	printf 'base_backup_s\t%s\n' "$BASE_S"
	printf 'pgbench_tps\t%s\n' "$TPS"
	printf 'wal_lag_median_s\t%s\n' "$MEDLAG"
	printf 'wal_lag_max_s\t%s\n' "$MAXLAG"
	printf 'wal_points\t%s\n' "$("$COFFRE" points list --json | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin) if not p.get("job_id")))')"
	printf 'restore_to_time_s\t%s\n' "$RESTORE_S"
	printf 'restored_markers\t%s\n' "$MARKERS"
	printf 'coffre_version\t%s\n' "$(cd "$HERE" && git rev-parse --short HEAD)"
} | tee "$OUT"
