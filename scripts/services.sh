#!/usr/bin/env bash
# Starts and stops the services coffre's tests use, all on 127.0.0.1.
#
# Usage:
#   scripts/services.sh start ENVFILE   start every service, write KEY=VALUE lines to ENVFILE
#   scripts/services.sh stop            stop every service and delete its data
#
# State (PIDs, logs, data) lives under ${COFFRE_SERVICES_DIR:-/tmp/coffre-services}.
# Each service has a start_<name> and a stop_<name> function; start_<name>
# appends its variables to the env file. Starting again while a service runs
# reuses it. Add a service by writing the two functions and listing its name in
# SERVICES.
#
# Run it (or source it to get the functions, e.g. start_versitygw, without
# running anything). Services:
#   versitygw  S3 gateway (posix backend)  COFFRE_TEST_S3_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY,REGION}
#   postgres   PostgreSQL 15                COFFRE_TEST_PG_DSN (no password in it), PGPASSWORD
#   redis      redis-server (Debian 12: 7.0) COFFRE_TEST_REDIS_ADDR (host:port), COFFRE_TEST_REDIS_PASSWORD

SERVICES=(versitygw postgres redis)

SERVICES_DIR=${COFFRE_SERVICES_DIR:-/tmp/coffre-services}
VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}
VERSITYGW_BUCKET=${VERSITYGW_BUCKET:-coffre-test}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	local port i
	for ((i = 0; i < 100; i++)); do
		port=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	die "no free port found"
}

# random_token prints n random alphanumeric characters.
random_token() {
	local n=$1 out=""
	while ((${#out} < n)); do
		out+=$(head -c 64 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
	done
	echo "${out:0:n}"
}

# pid_alive PIDFILE NAME: the pid in PIDFILE runs a command containing NAME.
pid_alive() {
	local pidfile=$1 name=$2 pid
	[[ -s $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"
}

# stop_pid PIDFILE NAME: stops the process of PIDFILE if it still is NAME.
stop_pid() {
	local pidfile=$1 name=$2 pid i
	if pid_alive "$pidfile" "$name"; then
		pid=$(<"$pidfile")
		kill "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			pid_alive "$pidfile" "$name" || break
			sleep 0.1
		done
		if pid_alive "$pidfile" "$name"; then
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
}

# wait_http URL SECONDS: waits until URL answers any HTTP status.
wait_http() {
	local url=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		if curl -s -o /dev/null --max-time 2 "$url"; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# ---------------------------------------------------------------- versitygw

# versitygw_bin prints the path of an installed versitygw, if any.
versitygw_bin() {
	local gobin
	gobin=$(go env GOBIN 2>/dev/null || true)
	[[ -n $gobin ]] || gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
	if [[ -x $gobin/versitygw ]]; then
		echo "$gobin/versitygw"
	elif command -v versitygw >/dev/null 2>&1; then
		command -v versitygw
	elif [[ -x $HOME/go/bin/versitygw ]]; then
		echo "$HOME/go/bin/versitygw"
	else
		return 1
	fi
}

install_versitygw() {
	local i start
	# Another job may be installing it already: wait for that to finish.
	for ((i = 0; i < 900; i++)); do
		pgrep -f "go install github.com/versity/versitygw/cmd/versitygw" >/dev/null 2>&1 || break
		((i % 30 == 0)) && log "waiting for a running go install of versitygw"
		sleep 1
	done
	versitygw_bin >/dev/null && return 0
	mkdir -p "$SERVICES_DIR"
	# The lock keeps concurrent runs of this script from installing twice.
	(
		flock 9
		versitygw_bin >/dev/null && exit 0
		log "installing versitygw $VERSITYGW_VERSION (takes a few minutes)"
		start=$SECONDS
		GOFLAGS=-buildvcs=false go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
		log "installed versitygw in $((SECONDS - start))s"
	) 9>"$SERVICES_DIR/versitygw.install.lock"
	versitygw_bin >/dev/null || die "versitygw not found after go install"
}

start_versitygw() {
	local envfile=$1 dir="$SERVICES_DIR/versitygw" bin port access secret try
	mkdir -p "$dir"
	if pid_alive "$dir/pid" versitygw && [[ -s $dir/env ]]; then
		# shellcheck disable=SC1091
		if (set -a && . "$dir/env" && wait_http "$COFFRE_TEST_S3_ENDPOINT" 5); then
			log "versitygw already running (pid $(<"$dir/pid"))"
			cat "$dir/env" >>"$envfile"
			return 0
		fi
	fi
	stop_pid "$dir/pid" versitygw
	install_versitygw
	bin=$(versitygw_bin)

	rm -rf "$dir/root" "$dir/sidecar"
	mkdir -p "$dir/root/$VERSITYGW_BUCKET" "$dir/sidecar"
	access="coffre$(random_token 12)"
	secret=$(random_token 40)

	for try in 1 2 3; do
		port=$(free_port)
		# Credentials go through the environment, not argv, so ps does not show them.
		ROOT_ACCESS_KEY="$access" ROOT_SECRET_KEY="$secret" \
			setsid "$bin" --port "127.0.0.1:$port" --region us-east-1 --quiet \
			posix --sidecar "$dir/sidecar" "$dir/root" \
			>"$dir/log" 2>&1 </dev/null &
		echo $! >"$dir/pid"
		if wait_http "http://127.0.0.1:$port" 30; then
			break
		fi
		log "versitygw did not start on port $port (try $try):"
		tail -n 20 "$dir/log" >&2 || true
		stop_pid "$dir/pid" versitygw
		((try < 3)) || die "versitygw did not start; log: $dir/log"
	done

	(umask 077 && : >"$dir/env")
	chmod 600 "$dir/env"
	cat >"$dir/env" <<-EOF
		COFFRE_TEST_S3_ENDPOINT=http://127.0.0.1:$port
		COFFRE_TEST_S3_BUCKET=$VERSITYGW_BUCKET
		COFFRE_TEST_S3_ACCESS_KEY=$access
		COFFRE_TEST_S3_SECRET_KEY=$secret
		COFFRE_TEST_S3_REGION=us-east-1
	EOF
	cat "$dir/env" >>"$envfile"
	log "versitygw $("$bin" --version 2>/dev/null | awk '/Version/ {print $3; exit}') listening on 127.0.0.1:$port (pid $(<"$dir/pid")), bucket $VERSITYGW_BUCKET, data $dir/root"
}

stop_versitygw() {
	local dir="$SERVICES_DIR/versitygw"
	stop_pid "$dir/pid" versitygw
	rm -rf "$dir/root" "$dir/sidecar" "$dir/env"
}

# ---------------------------------------------------------------- postgres

# PostgreSQL 15 runs as the postgres user from $SERVICES_DIR/postgres/data,
# listening on 127.0.0.1 only (and a Unix socket in $SERVICES_DIR/postgres
# for setup). TCP clients authenticate with scram-sha-256; the user coffre
# gets a random password, written to the env file as PGPASSWORD, never into
# the DSN (the env file is shell syntax: source it). coffre may create
# schemas and databases, so each test can use its own.

install_postgres() {
	[[ -x $PG_BIN/pg_ctl ]] && return 0
	log "installing postgresql-15 (apt-get)"
	(
		flock 9
		[[ -x $PG_BIN/pg_ctl ]] && exit 0
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
	) 9>"$SERVICES_DIR/postgres.install.lock"
	[[ -x $PG_BIN/pg_ctl ]] || die "postgresql-15 installed, but $PG_BIN/pg_ctl is missing"
}

pg_as() { runuser -u postgres -- "$@"; }

# wait_pg PORT SECONDS: waits until PostgreSQL accepts connections on PORT.
wait_pg() {
	local port=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 && return 0
		sleep 0.1
	done
	return 1
}

start_postgres() {
	local envfile=$1 dir="$SERVICES_DIR/postgres" port password try
	mkdir -p "$dir"
	if [[ -s $dir/env && -s $dir/data/postmaster.pid ]] && pid_alive_pg "$dir"; then
		# shellcheck disable=SC1091
		if (set -a && . "$dir/env" && wait_pg "$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$COFFRE_TEST_PG_DSN")" 5); then
			log "postgres already running (pid $(head -n1 "$dir/data/postmaster.pid"))"
			cat "$dir/env" >>"$envfile"
			return 0
		fi
	fi
	stop_postgres
	install_postgres
	id postgres >/dev/null 2>&1 || die "no postgres user (the postgresql-15 package creates it)"

	mkdir -p "$dir"
	chown postgres: "$dir"
	chmod 700 "$dir"
	pg_as "$PG_BIN/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
		--auth-local=peer --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
		die "initdb failed; log: $dir/initdb.log"
	password=$(random_token 32)

	for try in 1 2 3; do
		port=$(free_port)
		# Speed over durability: this database is thrown away after the tests.
		if pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start -o \
			"-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
			>/dev/null && wait_pg "$port" 30; then
			break
		fi
		log "postgres did not start on port $port (try $try):"
		tail -n 20 "$dir/log" >&2 || true
		pg_as "$PG_BIN/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
		((try < 3)) || die "postgres did not start; log: $dir/log"
	done

	# The password goes through stdin, not argv, so ps does not show it.
	pg_as "$PG_BIN/psql" -q -X -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres >/dev/null <<-EOF ||
		CREATE ROLE coffre LOGIN CREATEDB PASSWORD '$password';
		GRANT CREATE ON DATABASE postgres TO coffre;
		GRANT CREATE ON SCHEMA public TO coffre;
	EOF
		die "creating the coffre role failed; log: $dir/log"

	(umask 077 && : >"$dir/env")
	chmod 600 "$dir/env"
	cat >"$dir/env" <<-EOF
		COFFRE_TEST_PG_DSN='host=127.0.0.1 port=$port user=coffre dbname=postgres sslmode=disable'
		PGPASSWORD=$password
	EOF
	cat "$dir/env" >>"$envfile"
	log "postgres $("$PG_BIN/postgres" --version | awk '{print $3}') listening on 127.0.0.1:$port (pid $(head -n1 "$dir/data/postmaster.pid")), user coffre, data $dir/data"
}

# pid_alive_pg DIR: the postmaster of DIR/data runs.
pid_alive_pg() {
	local dir=$1 pid
	pid=$(head -n1 "$dir/data/postmaster.pid" 2>/dev/null) || return 1
	[[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- postgres
}

stop_postgres() {
	local dir="$SERVICES_DIR/postgres"
	if [[ -d $dir/data ]] && pid_alive_pg "$dir"; then
		pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -w -t 30 stop -m fast >/dev/null 2>&1 ||
			pg_as "$PG_BIN/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
}

# ---------------------------------------------------------------- redis

# redis-server (Debian's package) runs from $SERVICES_DIR/redis, listening on
# 127.0.0.1 only, without persistence (save "", appendonly no), with a random
# requirepass kept in redis.conf (mode 600) and the env file, never on argv.
# Tests use its 16 databases and start further instances of the same binary
# (restore targets) themselves.

redis_installed() { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; }

install_redis() {
	redis_installed && return 0
	mkdir -p "$SERVICES_DIR"
	log "installing redis-server (apt-get)"
	(
		flock 9
		redis_installed && exit 0
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
	) 9>"$SERVICES_DIR/redis.install.lock"
	redis_installed || die "redis-server installed, but redis-server or redis-cli is not on PATH"
}

# wait_redis PORT PASSWORD SECONDS: waits until redis on PORT answers PING.
wait_redis() {
	local port=$1 password=$2 secs=$3 i
	for ((i = 0; i < secs * 10; i++)); do
		# REDISCLI_AUTH keeps the password off argv (unlike redis-cli -a).
		if [[ $(REDISCLI_AUTH="$password" redis-cli -h 127.0.0.1 -p "$port" --no-auth-warning ping 2>/dev/null) == PONG ]]; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

start_redis() {
	local envfile=$1 dir="$SERVICES_DIR/redis" port password try
	mkdir -p "$dir"
	if pid_alive "$dir/pid" redis-server && [[ -s $dir/env ]]; then
		# shellcheck disable=SC1091
		if (set -a && . "$dir/env" && wait_redis "${COFFRE_TEST_REDIS_ADDR##*:}" "$COFFRE_TEST_REDIS_PASSWORD" 5); then
			log "redis already running (pid $(<"$dir/pid"))"
			cat "$dir/env" >>"$envfile"
			return 0
		fi
	fi
	stop_redis
	install_redis
	mkdir -p "$dir"
	chmod 700 "$dir"
	password=$(random_token 32)

	for try in 1 2 3; do
		port=$(free_port)
		(umask 077 && : >"$dir/redis.conf")
		cat >"$dir/redis.conf" <<-EOF
			bind 127.0.0.1
			port $port
			protected-mode yes
			requirepass $password
			save ""
			appendonly no
			daemonize no
			dir $dir
			logfile ""
		EOF
		setsid redis-server "$dir/redis.conf" >"$dir/log" 2>&1 </dev/null &
		echo $! >"$dir/pid"
		if wait_redis "$port" "$password" 30; then
			break
		fi
		log "redis did not start on port $port (try $try):"
		tail -n 20 "$dir/log" >&2 || true
		stop_pid "$dir/pid" redis-server
		((try < 3)) || die "redis did not start; log: $dir/log"
	done

	(umask 077 && : >"$dir/env")
	chmod 600 "$dir/env"
	cat >"$dir/env" <<-EOF
		COFFRE_TEST_REDIS_ADDR=127.0.0.1:$port
		COFFRE_TEST_REDIS_PASSWORD=$password
	EOF
	cat "$dir/env" >>"$envfile"
	log "redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') listening on 127.0.0.1:$port (pid $(<"$dir/pid")), no persistence"
}

stop_redis() {
	local dir="$SERVICES_DIR/redis"
	stop_pid "$dir/pid" redis-server
	rm -rf "$dir"
}

# ---------------------------------------------------------------- main

cmd_start() {
	local envfile=${1:-}
	[[ -n $envfile ]] || die "usage: $0 start ENVFILE"
	mkdir -p "$SERVICES_DIR"
	(umask 077 && : >"$envfile")
	chmod 600 "$envfile"
	local s
	for s in "${SERVICES[@]}"; do
		"start_$s" "$envfile"
	done
}

cmd_stop() {
	local s
	for s in "${SERVICES[@]}"; do
		"stop_$s"
	done
}

# When sourced, only define the functions; when run, do the command.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start) shift && cmd_start "$@" ;;
	stop) cmd_stop ;;
	*) die "usage: $0 start ENVFILE | $0 stop" ;;
	esac
fi
