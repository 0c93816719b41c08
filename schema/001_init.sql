-- 001_init.sql — results.db, version 1: sweeps, jobs, results, events, views.
--
-- kvsubmit (submit/results.c) is the only writer. It runs this file inside
-- one BEGIN IMMEDIATE transaction when PRAGMA user_version is 0; the last
-- statement sets user_version, and results.c checks it did before COMMIT.
-- Every table is STRICT: a value of the wrong type is an error
-- (SQLITE_CONSTRAINT_DATATYPE), never silently stored.
--
-- Conventions: times are unix epoch milliseconds (INTEGER); metrics that were
-- not measured are NULL (the worker sends NaN / -1 as nil); *_json columns
-- hold canonical JSON (keys sorted, compact) so equal params compare equal as
-- text. Identifiers: job_id = lowercase hex SHA-256 of the job's canonical
-- msgpack bytes (worker/job.h), stored in jobs.job.

CREATE TABLE sweeps (
    sweep      TEXT PRIMARY KEY NOT NULL CHECK (length(sweep) > 0),
    msgpack    BLOB NOT NULL,             -- the sweep file as canonical msgpack (latest submission)
    created_at INTEGER NOT NULL,          -- first submission
    updated_at INTEGER NOT NULL           -- last submission
) STRICT;

CREATE TABLE jobs (
    job_id           TEXT PRIMARY KEY NOT NULL CHECK (length(job_id) = 64),
    sweep            TEXT NOT NULL REFERENCES sweeps(sweep),
    model            TEXT NOT NULL,
    dataset          TEXT NOT NULL,
    doc              INTEGER NOT NULL,
    offset           INTEGER NOT NULL,    -- token offset in the document
    tokens           INTEGER NOT NULL,    -- tokens requested (0: to the end of the document)
    task             TEXT NOT NULL,
    policy           TEXT NOT NULL,
    params_json      TEXT NOT NULL CHECK (json_valid(params_json)),
    task_params_json TEXT NOT NULL CHECK (json_valid(task_params_json)),
    spec_json        TEXT CHECK (spec_json IS NULL OR json_valid(spec_json)), -- NULL: no spec block
    seed             INTEGER NOT NULL,
    repeat           INTEGER NOT NULL,
    nonce            TEXT NOT NULL DEFAULT '',  -- kvsubmit --rerun
    job              BLOB NOT NULL,       -- canonical msgpack bytes, exactly what goes on kv:jobs
    status           TEXT NOT NULL DEFAULT 'new'
                     CHECK (status IN ('new', 'queued', 'done', 'failed', 'dead')),
    stream_id        TEXT,                -- kv:jobs entry id of the latest enqueue
    attempts         INTEGER NOT NULL DEFAULT 0, -- delivery count reported with the outcome
    worker           TEXT,
    enqueued_at      INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    error            TEXT                 -- failed/dead: reason code first, e.g. "path_rejected: ..."
) STRICT;

CREATE INDEX jobs_sweep_status ON jobs(sweep, status);
CREATE INDEX jobs_baseline ON jobs(model, dataset, doc, offset, tokens, task, policy);

CREATE TABLE results (
    job_id                 TEXT PRIMARY KEY NOT NULL REFERENCES jobs(job_id),
    ppl                    REAL,
    nll_sum                REAL,
    tokens                 INTEGER,       -- tokens actually evaluated
    accuracy               REAL,
    ttft_ms                REAL,
    tpot_ms                REAL,
    tokens_per_s           REAL,
    cache_tokens_mean      REAL,
    cache_tokens_max       INTEGER,
    kv_bytes               INTEGER,
    evictions              INTEGER,
    peak_rss_bytes         INTEGER,
    spec_drafted           INTEGER,
    spec_accepted          INTEGER,
    spec_acceptance_rate   REAL,
    spec_mean_accepted_len REAL,
    spec_target_passes     INTEGER,
    spec_speedup           REAL,
    extras                 TEXT CHECK (extras IS NULL OR json_valid(extras)),
    engine_version         TEXT NOT NULL,
    model_fingerprint      TEXT,
    worker                 TEXT NOT NULL,
    attempt                INTEGER NOT NULL,  -- delivery count of the run that produced the row
    started_at             INTEGER NOT NULL,
    finished_at            INTEGER NOT NULL,
    stored_at              INTEGER NOT NULL   -- when the collector committed it
) STRICT;

-- One row per thing the collector saw happen to a job: observability only
-- (results stays one row per job). kind 'duplicate' = a result for a job that
-- already had its row (redelivery, stolen lease): counted as dup_results.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    sweep   TEXT NOT NULL,
    job_id  TEXT NOT NULL REFERENCES jobs(job_id),
    kind    TEXT NOT NULL CHECK (kind IN ('queued', 'requeued', 'result', 'failed', 'duplicate', 'dead')),
    worker  TEXT,
    attempt INTEGER,
    detail  TEXT
) STRICT;

CREATE INDEX events_sweep_kind ON events(sweep, kind);
CREATE INDEX events_job ON events(job_id);

-- Every result with the job it answers. jobs.tokens is exposed as
-- slice_tokens (what was asked); tokens is what the worker evaluated.
-- params_label is "key=value,..." in key order, for display.
CREATE VIEW v_results AS
SELECT j.sweep, j.job_id, j.model, j.dataset, j.doc, j.offset, j.tokens AS slice_tokens,
       j.task, j.task_params_json, j.policy, j.params_json,
       (SELECT group_concat(p.key || '=' || p.value, ',') FROM json_each(j.params_json) AS p) AS params_label,
       j.spec_json, j.seed, j.repeat, j.nonce,
       r.ppl, r.nll_sum, r.tokens, r.accuracy, r.ttft_ms, r.tpot_ms, r.tokens_per_s,
       r.cache_tokens_mean, r.cache_tokens_max, r.kv_bytes, r.evictions, r.peak_rss_bytes,
       r.spec_drafted, r.spec_accepted, r.spec_acceptance_rate, r.spec_mean_accepted_len,
       r.spec_target_passes, r.spec_speedup, r.extras,
       r.engine_version, r.model_fingerprint, r.worker, r.attempt, r.started_at, r.finished_at
FROM results AS r JOIN jobs AS j ON j.job_id = r.job_id;

-- Every result next to its full-cache baseline: the result of policy 'full'
-- on the same model, dataset slice (dataset, doc, offset, slice_tokens),
-- task, task_params, spec block, seed and repeat. When several runs qualify
-- (other sweeps, --rerun nonces) the one from the same sweep, then the same
-- nonce, then the latest wins, so each result appears exactly once. No
-- baseline yet: the full_* and ratio columns are NULL. Ratios:
--   ppl_ratio      = ppl / full_ppl           (1.0 = no quality loss)
--   speedup        = tokens_per_s / full_tokens_per_s
--   tpot_ratio     = tpot_ms / full_tpot_ms
--   kv_bytes_ratio = kv_bytes / full_kv_bytes (memory kept)
CREATE VIEW v_vs_full AS
WITH base AS (
    SELECT x.job_id AS job_id, f.job_id AS base_id,
           row_number() OVER (PARTITION BY x.job_id
                              ORDER BY f.sweep = x.sweep DESC, f.nonce = x.nonce DESC,
                                       fr.finished_at DESC, f.job_id) AS pick
    FROM results AS xr
    JOIN jobs AS x ON x.job_id = xr.job_id
    JOIN jobs AS f ON f.policy = 'full' AND f.model = x.model AND f.dataset = x.dataset
                  AND f.doc = x.doc AND f.offset = x.offset AND f.tokens = x.tokens
                  AND f.task = x.task AND f.task_params_json = x.task_params_json
                  AND f.spec_json IS x.spec_json AND f.seed = x.seed AND f.repeat = x.repeat
    JOIN results AS fr ON fr.job_id = f.job_id
)
SELECT v.*,
       b.job_id AS full_job_id,
       b.ppl AS full_ppl, b.tokens_per_s AS full_tokens_per_s, b.tpot_ms AS full_tpot_ms,
       b.kv_bytes AS full_kv_bytes,
       v.ppl / b.ppl AS ppl_ratio,
       v.ppl - b.ppl AS ppl_delta,
       v.tokens_per_s / b.tokens_per_s AS speedup,
       v.tpot_ms / b.tpot_ms AS tpot_ratio,
       CAST(v.kv_bytes AS REAL) / b.kv_bytes AS kv_bytes_ratio
FROM v_results AS v
LEFT JOIN base AS p ON p.job_id = v.job_id AND p.pick = 1
LEFT JOIN results AS b ON b.job_id = p.base_id;

-- One line per model × policy × params: how much quality and speed a policy
-- setting costs or buys, averaged over slices, tasks, seeds and repeats.
-- Means skip NULLs (a speed job has no ppl, a ppl job no tokens_per_s), so
-- n counts results while n_ppl / n_speed count what each mean is over.
CREATE VIEW v_policy_summary AS
SELECT model, policy, params_json, params_label,
       count(*) AS n,
       count(ppl) AS n_ppl,
       avg(ppl) AS mean_ppl,
       avg(ppl_ratio) AS mean_ppl_ratio,
       max(ppl_ratio) AS max_ppl_ratio,
       count(tokens_per_s) AS n_speed,
       avg(tokens_per_s) AS mean_tokens_per_s,
       avg(speedup) AS mean_speedup,
       avg(kv_bytes_ratio) AS mean_kv_bytes_ratio
FROM v_vs_full
GROUP BY model, policy, params_json
ORDER BY model, policy, params_json;

-- Per sweep: jobs by status, duplicates seen, percentage finished.
CREATE VIEW v_sweep_progress AS
SELECT s.sweep,
       count(j.job_id) AS total,
       count(j.job_id) FILTER (WHERE j.status = 'new') AS new,
       count(j.job_id) FILTER (WHERE j.status = 'queued') AS queued,
       count(j.job_id) FILTER (WHERE j.status = 'done') AS done,
       count(j.job_id) FILTER (WHERE j.status = 'failed') AS failed,
       count(j.job_id) FILTER (WHERE j.status = 'dead') AS dead,
       (SELECT count(*) FROM events AS e WHERE e.sweep = s.sweep AND e.kind = 'duplicate') AS dup_results,
       CASE WHEN count(j.job_id) = 0 THEN 100.0
            ELSE round(100.0 * count(j.job_id) FILTER (WHERE j.status IN ('done', 'failed', 'dead'))
                       / count(j.job_id), 1) END AS pct_finished,
       s.created_at, s.updated_at
FROM sweeps AS s LEFT JOIN jobs AS j ON j.sweep = s.sweep
GROUP BY s.sweep
ORDER BY s.created_at, s.sweep;

-- Jobs that did not produce a result, with why.
CREATE VIEW v_failures AS
SELECT sweep, job_id, model, dataset, doc, offset, tokens AS slice_tokens, task, policy, params_json,
       status, attempts, worker, error, finished_at
FROM jobs WHERE status IN ('failed', 'dead');

PRAGMA user_version = 1;
