"""Every SQL statement the journal runs (the schema itself lives in migrations/*.sql).

Parameters are named (`:name`). Variable-length lists (states, job ids, filters) are passed
as one JSON array or object and unpacked with `json_each`, so that every statement here is
a constant and is prepared once per connection.
"""

from __future__ import annotations

#: `PRAGMA application_id` of every spind journal ("SPIN" in ASCII).
APPLICATION_ID = 0x5350494E

# -- opening ---------------------------------------------------------------------------------

READ_APPLICATION_ID = "PRAGMA application_id"
SET_APPLICATION_ID = f"PRAGMA application_id = {APPLICATION_ID}"
SET_WAL = "PRAGMA journal_mode = WAL"
SET_SYNCHRONOUS = "PRAGMA synchronous = {level}"  # level checked against SYNCHRONOUS_LEVELS
SYNCHRONOUS_LEVELS = ("NORMAL", "FULL", "EXTRA")
SET_BUSY_TIMEOUT = "PRAGMA busy_timeout = {ms:d}"
SET_FOREIGN_KEYS = "PRAGMA foreign_keys = ON"
SET_QUERY_ONLY = "PRAGMA query_only = ON"
INTEGRITY_CHECK = "PRAGMA integrity_check"

LIST_SCHEMA = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master"
    " WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
)
HAS_MIGRATIONS_TABLE = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
)
CREATE_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""
APPLIED_MIGRATIONS = "SELECT version, name FROM schema_migrations ORDER BY version"
RECORD_MIGRATION = (
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :at)"
)

# -- transactions ------------------------------------------------------------------------------

BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
BEGIN_READ = "BEGIN DEFERRED"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
SAVEPOINT = "SAVEPOINT journal_item"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT journal_item"
RELEASE_SAVEPOINT = "RELEASE SAVEPOINT journal_item"

# -- writes ------------------------------------------------------------------------------------

INSERT_BOOT = (
    "INSERT INTO boots (id, pid, version, started_at) VALUES (:id, :pid, :version, :started_at)"
)

INSERT_REQUEST = """INSERT INTO requests (
    id, type, user, args, state, created_at, started_at, finished_at, trace_id, reason,
    idempotency_key, body_hash
) VALUES (
    :id, :type, :user, :args, :state, :created_at, :started_at, :finished_at, :trace_id,
    :reason, :idempotency_key, :body_hash
)"""

INSERT_CHAIN = "INSERT INTO chains (request_id, chain) VALUES (:request_id, :chain)"

#: :jobs = [[job_id, name, type, scope, kind], ...], all PENDING (one statement: see START_JOBS)
INSERT_JOBS = """INSERT INTO jobs (request_id, job_id, name, type, scope, kind, state)
SELECT :request_id, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
    json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), 'PENDING'
FROM json_each(:jobs) ORDER BY key"""

INSERT_EVENT = """INSERT INTO events (request_id, kind, state, at, job_id, try, detail)
VALUES (:request_id, :kind, :state, :at, :job_id, :try, :detail)"""

#: CAS: the new state only if the current one is in the JSON array :expect.
SET_REQUEST_STATE = """UPDATE requests SET
    state = :state,
    reason = :reason,
    started_at = CASE
        WHEN :state = 'RUNNING' AND started_at IS NULL THEN :at ELSE started_at END,
    finished_at = CASE
        WHEN :state IN ('COMPLETE', 'FAIL', 'STOPPED') THEN :at ELSE NULL END
WHERE id = :request_id AND state IN (SELECT value FROM json_each(:expect))"""

REQUEST_STATE = "SELECT state FROM requests WHERE id = :request_id"
JOB_STATE = "SELECT state FROM jobs WHERE request_id = :request_id AND job_id = :job_id"
LOG_STATE = """SELECT state FROM job_log
WHERE request_id = :request_id AND job_id = :job_id AND try = :try"""

START_JOB = """UPDATE jobs SET state = 'RUNNING', tries = :try, seq_try = :seq_try
WHERE request_id = :request_id AND job_id = :job_id AND state = 'PENDING'"""

INSERT_LOG = """INSERT INTO job_log (
    request_id, job_id, try, seq_try, state, started_at, boot_id
) VALUES (:request_id, :job_id, :try, :seq_try, 'RUNNING', :at, :boot_id)"""

#: CAS RUNNING -> :state; outputs and a finish order only when the job completed.
FINISH_JOB = """UPDATE jobs SET
    state = :state,
    outputs = CASE WHEN :state = 'COMPLETE' THEN :outputs ELSE NULL END,
    finish_order = CASE WHEN :state = 'COMPLETE' THEN (
        SELECT COALESCE(MAX(finish_order), 0) + 1 FROM jobs WHERE request_id = :request_id
    ) ELSE NULL END
WHERE request_id = :request_id AND job_id = :job_id AND state = 'RUNNING'"""

FINISH_LOG = """UPDATE job_log SET
    state = :state, exit = :exit, error = :error, stdout = :stdout, stderr = :stderr,
    finished_at = :at
WHERE request_id = :request_id AND job_id = :job_id AND try = :try AND state = 'RUNNING'"""

# ---- many jobs of one request in one statement each (a fan-out's starts and ends). The rows
# come as one JSON array of arrays; the MATERIALIZED CTE makes SQLite walk the array and look
# each job up by its primary key (without it, it scans the request's jobs for every element).
# One statement steps through every row without returning to Python: the GIL stays free.

#: :starts = [[job_id, try, seq_try], ...]
START_JOBS = """WITH s(job_id, try, seq_try) AS MATERIALIZED (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
    FROM json_each(:starts)
)
UPDATE jobs SET state = 'RUNNING', tries = s.try, seq_try = s.seq_try FROM s
WHERE jobs.request_id = :request_id AND jobs.job_id = s.job_id AND jobs.state = 'PENDING'"""

INSERT_LOGS = """INSERT INTO job_log (request_id, job_id, try, seq_try, state, started_at, boot_id)
SELECT :request_id, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
    json_extract(value, '$[2]'), 'RUNNING', :at, :boot_id
FROM json_each(:starts) ORDER BY key"""

#: :events = [[kind, state, job_id, try, detail], ...]; rows numbered in array order
INSERT_EVENTS = """INSERT INTO events (request_id, kind, state, at, job_id, try, detail)
SELECT :request_id, json_extract(value, '$[0]'), json_extract(value, '$[1]'), :at,
    json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]')
FROM json_each(:events) ORDER BY key"""

#: :ends = [[job_id, state, outputs JSON text or null, n-th completion in the batch or null],
#: ...]; a completed job's finish order is the request's highest so far + n (the scalar
#: subquery is not correlated: SQLite evaluates it once, before the first row changes; the
#: index jobs_finish_order makes it one lookup)
FINISH_JOBS = """WITH s(job_id, state, outputs, n) AS MATERIALIZED (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]')
    FROM json_each(:ends)
)
UPDATE jobs SET
    state = s.state,
    outputs = s.outputs,
    finish_order = CASE WHEN s.n IS NULL THEN NULL ELSE (
        SELECT COALESCE(MAX(finish_order), 0) FROM jobs WHERE request_id = :request_id
    ) + s.n END
FROM s
WHERE jobs.request_id = :request_id AND jobs.job_id = s.job_id AND jobs.state = 'RUNNING'"""

#: :logs = [[job_id, try, state, exit, error, stdout, stderr], ...]
FINISH_LOGS = """WITH s(job_id, try, state, exit, error, stdout, stderr) AS MATERIALIZED (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
        json_extract(value, '$[6]')
    FROM json_each(:logs)
)
UPDATE job_log SET
    state = s.state, exit = s.exit, error = s.error, stdout = s.stdout, stderr = s.stderr,
    finished_at = :at
FROM s
WHERE job_log.request_id = :request_id AND job_log.job_id = s.job_id AND job_log.try = s.try
    AND job_log.state = 'RUNNING'"""

# ---- the single-end writes of several requests in one statement each (`daemon.journal.merged`):
# the same statements with the request id (and the time) in every row.

#: :ends = [[request_id, job_id, state, outputs JSON text or null, n or null], ...]: n is the
#: completion's rank among the request's completions in the array; the request's highest
#: finish order so far is read for every request named, once, before any row changes
FINISH_JOBS_MANY = """WITH s(request_id, job_id, state, outputs, n) AS MATERIALIZED (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]')
    FROM json_each(:ends)
), b(request_id, base) AS MATERIALIZED (
    SELECT r.request_id, (
        SELECT COALESCE(MAX(finish_order), 0) FROM jobs WHERE jobs.request_id = r.request_id
    ) FROM (SELECT DISTINCT request_id FROM s) AS r
)
UPDATE jobs SET
    state = s.state,
    outputs = s.outputs,
    finish_order = CASE WHEN s.n IS NULL THEN NULL ELSE b.base + s.n END
FROM s JOIN b ON b.request_id = s.request_id
WHERE jobs.request_id = s.request_id AND jobs.job_id = s.job_id AND jobs.state = 'RUNNING'"""

#: :logs = [[request_id, job_id, try, state, exit, error, stdout, stderr, at], ...]
FINISH_LOGS_MANY = """WITH s(request_id, job_id, try, state, exit, error, stdout, stderr, at)
AS MATERIALIZED (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
        json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]')
    FROM json_each(:logs)
)
UPDATE job_log SET
    state = s.state, exit = s.exit, error = s.error, stdout = s.stdout, stderr = s.stderr,
    finished_at = s.at
FROM s
WHERE job_log.request_id = s.request_id AND job_log.job_id = s.job_id AND job_log.try = s.try
    AND job_log.state = 'RUNNING'"""

#: :starts = [[request_id, job_id, try, seq_try, at], ...]
START_JOBS_MANY = """WITH s(request_id, job_id, try, seq_try) AS MATERIALIZED (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]')
    FROM json_each(:starts)
)
UPDATE jobs SET state = 'RUNNING', tries = s.try, seq_try = s.seq_try FROM s
WHERE jobs.request_id = s.request_id AND jobs.job_id = s.job_id AND jobs.state = 'PENDING'"""

INSERT_LOGS_MANY = """INSERT INTO job_log (
    request_id, job_id, try, seq_try, state, started_at, boot_id
)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
    json_extract(value, '$[3]'), 'RUNNING', json_extract(value, '$[4]'), :boot_id
FROM json_each(:starts) ORDER BY key"""

#: :events = [[request_id, kind, state, at, job_id, try, detail], ...]; numbered in array order
INSERT_EVENTS_MANY = """INSERT INTO events (request_id, kind, state, at, job_id, try, detail)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
    json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
    json_extract(value, '$[6]')
FROM json_each(:events) ORDER BY key"""

NEXT_PATCH_NUMBER = """SELECT COALESCE(MAX(n), 0) + 1 FROM chain_patches
WHERE request_id = :request_id"""

INSERT_PATCH = """INSERT INTO chain_patches (request_id, n, deferred, patch)
VALUES (:request_id, :n, :deferred, :patch)"""

#: CAS PENDING|RUNNING -> COMPLETE for the deferred node a patch replaced.
COMPLETE_DEFERRED = """UPDATE jobs SET
    state = 'COMPLETE',
    outputs = '{}',
    finish_order = (
        SELECT COALESCE(MAX(finish_order), 0) + 1 FROM jobs WHERE request_id = :request_id
    )
WHERE request_id = :request_id AND job_id = :job_id AND kind = 'deferred'
    AND state IN ('PENDING', 'RUNNING')"""

#: Jobs in :job_ids (JSON array) that are not RUNNING go back to PENDING; tries are kept and
#: seq_try (the job's run epoch: its retry budget counts failed tries of the current epoch)
#: goes up by one, so that a reset job gets a fresh budget, also after a restart.
RESET_JOBS = """UPDATE jobs SET
    state = 'PENDING',
    outputs = NULL,
    finish_order = NULL,
    seq_try = seq_try + 1
WHERE request_id = :request_id AND state != 'RUNNING'
    AND job_id IN (SELECT value FROM json_each(:job_ids))"""

JOB_STATES_OF = """SELECT job_id, state FROM jobs
WHERE request_id = :request_id AND job_id IN (SELECT value FROM json_each(:job_ids))"""

UPSERT_SCOPE_TRIES = """INSERT INTO scope_tries (request_id, scope_id, tries)
VALUES (:request_id, :scope_id, :tries)
ON CONFLICT (request_id, scope_id) DO UPDATE SET tries = excluded.tries"""

SKIP_JOB = """UPDATE jobs SET state = 'SKIPPED', outputs = NULL, finish_order = NULL
WHERE request_id = :request_id AND job_id = :job_id
    AND state IN ('PENDING', 'FAIL', 'STOPPED')"""

#: Interrupt a try: the log row RUNNING -> INTERRUPTED, the job RUNNING -> :state.
INTERRUPT_LOG = """UPDATE job_log SET state = 'INTERRUPTED', error = :error, finished_at = :at
WHERE request_id = :request_id AND job_id = :job_id AND try = :try AND state = 'RUNNING'"""

INTERRUPT_JOB = """UPDATE jobs SET state = :state, outputs = NULL, finish_order = NULL
WHERE request_id = :request_id AND job_id = :job_id AND state = 'RUNNING'"""

#: One small batch of finished requests older than :before; child rows go by cascade.
PRUNE_FINISHED = """DELETE FROM requests WHERE id IN (
    SELECT id FROM requests
    WHERE finished_at IS NOT NULL AND finished_at < :before
        AND state IN ('COMPLETE', 'FAIL', 'STOPPED')
    LIMIT :batch
)"""

# -- reads -------------------------------------------------------------------------------------

_REQUEST_COLUMNS = """r.id, r.type, r.user, r.args, r.state, r.created_at, r.started_at,
    r.finished_at, r.trace_id, r.reason"""

_TOTALS = """(SELECT COUNT(*) FROM jobs j
        WHERE j.request_id = r.id AND j.kind = 'job') AS total_jobs,
    (SELECT COUNT(*) FROM jobs j
        WHERE j.request_id = r.id AND j.kind = 'job'
            AND j.state IN ('COMPLETE', 'SKIPPED')) AS finished_jobs"""

GET_REQUEST = f"SELECT {_REQUEST_COLUMNS} FROM requests r WHERE r.id = :request_id"

GET_VIEW = f"SELECT {_REQUEST_COLUMNS}, {_TOTALS} FROM requests r WHERE r.id = :request_id"

GET_CHAIN = "SELECT chain FROM chains WHERE request_id = :request_id"

GET_PATCHES = "SELECT patch FROM chain_patches WHERE request_id = :request_id ORDER BY n"

#: every job's run state as one JSON array of objects (JobRow's fields): SQLite builds it in
#: one step with the GIL free, msgspec decodes it in one call (not a Python row per job)
GET_JOBS = """SELECT json_group_array(json_object(
    'job_id', job_id, 'state', state, 'tries', tries, 'seq_try', seq_try,
    'outputs', json(COALESCE(outputs, '{}')), 'finish_order', finish_order
)) FROM jobs WHERE request_id = :request_id"""

#: a request's view, chain, patches (one JSON array of [n, patch]: the aggregate's order is
#: not promised) and job rows (GET_JOBS's array) in ONE statement: one snapshot without
#: BEGIN/ROLLBACK, and a reader thread gives up the GIL twice (the step and the fetch)
#: instead of a dozen times; each hand-back waits for the event loop to let go of it
GET_DETAIL = f"""SELECT {_REQUEST_COLUMNS}, {_TOTALS},
    (SELECT chain FROM chains WHERE request_id = r.id) AS chain,
    (SELECT json_group_array(json_array(n, json(patch))) FROM chain_patches
        WHERE request_id = r.id) AS patches,
    ({GET_JOBS.replace(":request_id", "r.id")}) AS jobs
FROM requests r WHERE r.id = :request_id"""

GET_SCOPE_TRIES = "SELECT scope_id, tries FROM scope_tries WHERE request_id = :request_id"

RUNNING_TRIES = """SELECT job_id, try, boot_id FROM job_log
WHERE request_id = :request_id AND state = 'RUNNING' ORDER BY started_at, job_id, try"""

#: Tries journaled RUNNING by another boot than :boot_id (at start: those a crash interrupted).
STALE_RUNNING_TRIES = """SELECT request_id, job_id, try, boot_id FROM job_log
WHERE state = 'RUNNING' AND boot_id != :boot_id"""

UNFINISHED_REQUESTS = """SELECT id FROM requests
WHERE state IN ('PENDING', 'RUNNING', 'SUSPENDED') ORDER BY created_at, id"""

#: Every filter is optional: NULL (or an empty JSON array/object) matches everything. An arg
#: filter matches the arg's JSON value as text: strings as they are, numbers in decimal,
#: true/false/null as those words.
FIND_REQUESTS = f"""SELECT {_REQUEST_COLUMNS}, {_TOTALS} FROM requests r
WHERE (:type IS NULL OR r.type = :type)
    AND (:user IS NULL OR r.user = :user)
    AND (json_array_length(:states) = 0
        OR r.state IN (SELECT value FROM json_each(:states)))
    AND (:since IS NULL OR r.created_at >= :since)
    AND (:until IS NULL OR r.created_at < :until)
    AND NOT EXISTS (
        SELECT 1 FROM json_each(:args) f
        WHERE NOT EXISTS (
            SELECT 1 FROM json_each(r.args) a
            WHERE a.key = f.key AND (
                CASE WHEN a.type IN ('true', 'false', 'null') THEN a.type
                ELSE CAST(a.value AS TEXT) END
            ) = f.value
        )
    )
ORDER BY r.created_at DESC, r.id DESC
LIMIT :limit OFFSET :offset"""

JOB_LOG = """SELECT l.request_id, l.job_id, j.name, j.type, l.try, l.state, l.exit, l.error,
    l.stdout, l.stderr, l.started_at, l.finished_at, l.seq_try, l.boot_id
FROM job_log l JOIN jobs j ON j.request_id = l.request_id AND j.job_id = l.job_id
WHERE l.request_id = :request_id AND (:job_id IS NULL OR l.job_id = :job_id)
ORDER BY l.started_at, l.rowid"""

#: Failed tries per job and run epoch (a job's retry budget counts those of its epoch).
FAILED_TRIES = """SELECT job_id, seq_try, COUNT(*) FROM job_log
WHERE request_id = :request_id AND state = 'FAIL' GROUP BY job_id, seq_try"""

EVENTS_AFTER = """SELECT seq, request_id, kind, state, at, job_id, try, detail FROM events
WHERE request_id = :request_id AND seq > :after ORDER BY seq LIMIT :limit"""

FIND_IDEMPOTENT = "SELECT id, body_hash FROM requests WHERE idempotency_key = :key"

#: How many requests are in each state (for metrics).
COUNT_BY_STATE = "SELECT state, COUNT(*) FROM requests GROUP BY state"
