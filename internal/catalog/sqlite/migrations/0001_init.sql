-- Initial catalog schema (SQLite). Times are Unix nanoseconds (UTC); NULL is
-- "unset". Maps and lists are JSON text.
CREATE TABLE vaults (
	name          TEXT PRIMARY KEY,
	location      TEXT NOT NULL,
	key_ref       TEXT NOT NULL DEFAULT '',
	lock_mode     TEXT NOT NULL DEFAULT '',
	lock_min_days INTEGER NOT NULL DEFAULT 0,
	lock_max_days INTEGER NOT NULL DEFAULT 0,
	tags          TEXT NOT NULL DEFAULT '{}',
	created_at    INTEGER NOT NULL
);

CREATE TABLE resources (
	id         TEXT PRIMARY KEY,
	type       TEXT NOT NULL,
	name       TEXT NOT NULL DEFAULT '',
	settings   TEXT NOT NULL DEFAULT '{}',
	tags       TEXT NOT NULL DEFAULT '{}',
	created_at INTEGER NOT NULL
);
CREATE INDEX resources_type ON resources (type);

CREATE TABLE plans (
	name       TEXT PRIMARY KEY,
	tags       TEXT NOT NULL DEFAULT '{}',
	created_at INTEGER NOT NULL
);

CREATE TABLE rules (
	plan                      TEXT NOT NULL,
	name                      TEXT NOT NULL,
	position                  INTEGER NOT NULL,
	schedule                  TEXT NOT NULL DEFAULT '',
	timezone                  TEXT NOT NULL DEFAULT '',
	start_window_minutes      INTEGER NOT NULL DEFAULT 0,
	completion_window_minutes INTEGER NOT NULL DEFAULT 0,
	target_vault              TEXT NOT NULL DEFAULT '',
	move_to_cold_after_days   INTEGER NOT NULL DEFAULT 0,
	delete_after_days         INTEGER NOT NULL DEFAULT 0,
	copy_actions              TEXT NOT NULL DEFAULT '[]',
	continuous_backup         INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (plan, name)
);

CREATE TABLE selections (
	name          TEXT PRIMARY KEY,
	plan          TEXT NOT NULL,
	resources     TEXT NOT NULL DEFAULT '[]',
	not_resources TEXT NOT NULL DEFAULT '[]',
	conditions    TEXT NOT NULL DEFAULT '[]',
	created_at    INTEGER NOT NULL
);
CREATE INDEX selections_plan ON selections (plan);

CREATE TABLE jobs (
	id              TEXT PRIMARY KEY,
	kind            TEXT NOT NULL,
	state           TEXT NOT NULL,
	resource        TEXT NOT NULL DEFAULT '',
	vault           TEXT NOT NULL DEFAULT '',
	plan            TEXT NOT NULL DEFAULT '',
	rule            TEXT NOT NULL DEFAULT '',
	created_at      INTEGER NOT NULL,
	start_by        INTEGER,
	complete_by     INTEGER,
	started_at      INTEGER,
	finished_at     INTEGER,
	attempt         INTEGER NOT NULL DEFAULT 0,
	owner           TEXT NOT NULL DEFAULT '',
	heartbeat_at    INTEGER,
	recovery_point  TEXT NOT NULL DEFAULT '',
	message         TEXT NOT NULL DEFAULT '',
	bytes_processed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs (state, created_at);
CREATE INDEX jobs_resource ON jobs (resource, created_at);
CREATE INDEX jobs_vault ON jobs (vault, created_at);

CREATE TABLE recovery_points (
	vault           TEXT NOT NULL,
	id              TEXT NOT NULL,
	resource        TEXT NOT NULL DEFAULT '',
	created_at      INTEGER NOT NULL,
	status          TEXT NOT NULL DEFAULT '',
	size_bytes      INTEGER NOT NULL DEFAULT 0,
	tier            TEXT NOT NULL DEFAULT 'warm',
	move_to_cold_at INTEGER,
	delete_at       INTEGER,
	plan            TEXT NOT NULL DEFAULT '',
	rule            TEXT NOT NULL DEFAULT '',
	job_id          TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (vault, id)
);
CREATE INDEX recovery_points_resource ON recovery_points (resource, created_at);
CREATE INDEX recovery_points_delete_at ON recovery_points (delete_at);

CREATE TABLE audit_events (
	seq       INTEGER PRIMARY KEY,
	time      INTEGER NOT NULL,
	actor     TEXT NOT NULL DEFAULT '',
	action    TEXT NOT NULL DEFAULT '',
	object    TEXT NOT NULL DEFAULT '',
	outcome   TEXT NOT NULL DEFAULT '',
	detail    TEXT NOT NULL DEFAULT '',
	prev_hash TEXT NOT NULL DEFAULT '',
	hash      TEXT NOT NULL
);
