-- 001_initial: the first schema of the spind journal.
-- Times are float epoch seconds. JSON columns hold msgspec-encoded JSON text.
-- schema.py applies this inside one transaction and records it in schema_migrations.

-- One row per daemon start; job_log rows name the boot that ran the try.
CREATE TABLE boots (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    started_at REAL NOT NULL
);

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    user TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL CHECK (
        state IN ('PENDING', 'RUNNING', 'SUSPENDED', 'COMPLETE', 'FAIL', 'STOPPED')
    ),
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    trace_id TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT UNIQUE,
    body_hash TEXT
);

CREATE INDEX requests_created ON requests (created_at);
CREATE INDEX requests_type ON requests (type, created_at);
CREATE INDEX requests_user ON requests (user, created_at);
CREATE INDEX requests_unfinished ON requests (created_at)
    WHERE state IN ('PENDING', 'RUNNING', 'SUSPENDED');
CREATE INDEX requests_finished ON requests (finished_at)
    WHERE finished_at IS NOT NULL;

-- The chain as built (msgspec JSON of daemon.chain.Chain).
CREATE TABLE chains (
    request_id TEXT PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
    chain TEXT NOT NULL
);

-- Expansions of deferred nodes (daemon.chain.ChainPatch), applied in order of n.
CREATE TABLE chain_patches (
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    deferred TEXT NOT NULL,
    patch TEXT NOT NULL,
    PRIMARY KEY (request_id, n)
) WITHOUT ROWID;

-- Run state of every vertex of the chain (jobs and deferred placeholders).
CREATE TABLE jobs (
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('job', 'deferred')),
    state TEXT NOT NULL CHECK (
        state IN ('PENDING', 'RUNNING', 'COMPLETE', 'FAIL', 'STOPPED', 'SKIPPED')
    ),
    tries INTEGER NOT NULL DEFAULT 0,
    seq_try INTEGER NOT NULL DEFAULT 1,
    outputs TEXT,
    finish_order INTEGER,
    PRIMARY KEY (request_id, job_id)
) WITHOUT ROWID;

-- Sequence retry: tries used by each scope that was restarted (absent = first run).
CREATE TABLE scope_tries (
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    scope_id TEXT NOT NULL,
    tries INTEGER NOT NULL,
    PRIMARY KEY (request_id, scope_id)
) WITHOUT ROWID;

-- One row per try of a job.
CREATE TABLE job_log (
    request_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    try INTEGER NOT NULL CHECK (try >= 1),
    seq_try INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL CHECK (
        state IN ('RUNNING', 'COMPLETE', 'FAIL', 'STOPPED', 'INTERRUPTED')
    ),
    exit INTEGER,
    error TEXT NOT NULL DEFAULT '',
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL,
    boot_id TEXT NOT NULL REFERENCES boots (id),
    PRIMARY KEY (request_id, job_id, try),
    FOREIGN KEY (request_id, job_id) REFERENCES jobs (request_id, job_id) ON DELETE CASCADE
);

CREATE INDEX job_log_running ON job_log (request_id) WHERE state = 'RUNNING';

-- Append-only: the audit log and the source of the events stream.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('request', 'job', 'expand', 'skip', 'reset')),
    state TEXT NOT NULL,
    at REAL NOT NULL,
    job_id TEXT,
    try INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX events_request ON events (request_id, seq);

CREATE TRIGGER events_append_only BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
