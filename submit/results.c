/* results.c — results.db: the SQLite file the collector (kvsubmit) writes and
 * users query.
 *
 * Opening applies journal_mode=WAL, synchronous=FULL (after an XACK the
 * Redis entry is gone, so a committed row must survive power loss),
 * foreign_keys=ON and a 5 s busy timeout, then runs the embedded
 * schema/NNN_*.sql migrations: migration i+1 runs when user_version == i, in
 * one BEGIN IMMEDIATE transaction, and the file itself sets user_version
 * (checked before COMMIT, so no SQL is ever formatted here). A file newer
 * than this build is refused. Every write is a BEGIN IMMEDIATE transaction
 * (or a SAVEPOINT inside the caller's kv_db_begin batch); every statement is
 * a prepared constant with bound values of explicit length.
 *
 * Exactly-once effect: results has job_id as primary key and the insert is
 * ON CONFLICT(job_id) DO NOTHING; changes() == 0 means a duplicate delivery,
 * recorded as an events row of kind 'duplicate' (the dup_results count).
 * This file does not talk to Redis and never decides what to ack: the
 * caller acks only after a kv_db_* write returned KV_OK. */
#include "results.h"

#include "canon_json.h"

#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Generated from schema/NNN_name.sql by ops/embed-sql.sh. */
extern const char *const kv_schema_sql[];
extern const char *const kv_schema_names[];
extern const size_t kv_schema_count;

enum {
    S_USER_VERSION,
    S_ADD_SWEEP,
    S_ADD_JOB,
    S_JOB_QUEUED,
    S_JOB_STATUS,
    S_EVENT,
    S_EACH_UNQUEUED,
    S_EACH_FAILED,
    S_INSERT_RESULT,
    S_JOB_DONE,
    S_HAS_RESULT,
    S_JOB_FAILED,
    S_JOB_DEAD,
    S_PROGRESS,
    S_DUPS,
    S_REQUEUE_EVENTS,
    S_REQUEUE,
    S_EACH_PROGRESS,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_USER_VERSION] = "PRAGMA user_version",
    [S_ADD_SWEEP] = "INSERT INTO sweeps(sweep, msgpack, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) "
                    "ON CONFLICT(sweep) DO UPDATE SET msgpack = excluded.msgpack, updated_at = excluded.updated_at",
    [S_ADD_JOB] = "INSERT INTO jobs(job_id, sweep, model, dataset, doc, offset, tokens, task, policy, params_json, "
                  "task_params_json, spec_json, seed, repeat, nonce, job, status) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 'new') "
                  "ON CONFLICT(job_id) DO NOTHING",
    [S_JOB_QUEUED] = "UPDATE jobs SET status = 'queued', stream_id = ?2, enqueued_at = ?3 "
                     "WHERE job_id = ?1 AND status = 'new'",
    [S_JOB_STATUS] = "SELECT sweep, status FROM jobs WHERE job_id = ?1",
    [S_EVENT] = "INSERT INTO events(at, sweep, job_id, kind, worker, attempt, detail) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_EACH_UNQUEUED] = "SELECT rowid, job_id, job FROM jobs WHERE sweep = ?1 AND status = 'new' AND rowid > ?2 "
                        "ORDER BY rowid LIMIT 256",
    [S_EACH_FAILED] = "SELECT rowid, job_id, job FROM jobs WHERE sweep = ?1 AND status IN ('failed', 'dead') "
                      "AND rowid > ?2 ORDER BY rowid LIMIT 256",
    [S_INSERT_RESULT] =
        "INSERT INTO results(job_id, ppl, nll_sum, tokens, accuracy, ttft_ms, tpot_ms, tokens_per_s, "
        "cache_tokens_mean, cache_tokens_max, kv_bytes, evictions, peak_rss_bytes, spec_drafted, spec_accepted, "
        "spec_acceptance_rate, spec_mean_accepted_len, spec_target_passes, spec_speedup, extras, engine_version, "
        "model_fingerprint, worker, attempt, started_at, finished_at, stored_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, "
        "CASE WHEN ?20 IS NULL THEN NULL WHEN json_valid(?20) THEN json(?20) "
        "ELSE json_object('unparsed_extras', ?20) END, "
        "?21, ?22, ?23, ?24, ?25, ?26, ?27) ON CONFLICT(job_id) DO NOTHING",
    [S_JOB_DONE] = "UPDATE jobs SET status = 'done', attempts = ?2, worker = ?3, started_at = ?4, "
                   "finished_at = ?5, error = NULL WHERE job_id = ?1",
    [S_HAS_RESULT] = "SELECT 1 FROM results WHERE job_id = ?1",
    [S_JOB_FAILED] = "UPDATE jobs SET status = 'failed', attempts = ?2, worker = ?3, started_at = ?4, "
                     "finished_at = ?5, error = ?6 WHERE job_id = ?1",
    [S_JOB_DEAD] = "UPDATE jobs SET status = 'dead', attempts = ?2, worker = ?3, finished_at = ?4, error = ?5 "
                   "WHERE job_id = ?1",
    [S_PROGRESS] = "SELECT count(*), "
                   "coalesce(sum(status = 'done'), 0), coalesce(sum(status = 'failed'), 0), "
                   "coalesce(sum(status = 'dead'), 0), coalesce(sum(status IN ('new', 'queued')), 0) "
                   "FROM jobs WHERE ?1 IS NULL OR sweep = ?1",
    [S_DUPS] = "SELECT count(*) FROM events WHERE kind = 'duplicate' AND (?1 IS NULL OR sweep = ?1)",
    [S_REQUEUE_EVENTS] = "INSERT INTO events(at, sweep, job_id, kind, worker, attempt, detail) "
                         "SELECT ?2, sweep, job_id, 'requeued', worker, attempts, status || ': ' || "
                         "coalesce(error, '') FROM jobs WHERE sweep = ?1 AND status IN ('failed', 'dead')",
    [S_REQUEUE] = "UPDATE jobs SET status = 'new', stream_id = NULL WHERE sweep = ?1 "
                  "AND status IN ('failed', 'dead')",
    [S_EACH_PROGRESS] = "SELECT sweep, total, done, failed, dead, new + queued, dup_results FROM v_sweep_progress "
                        "WHERE ?1 IS NULL OR sweep = ?1",
};

struct kv_db {
    sqlite3 *sq;
    int depth; /* open transaction levels: 1 = BEGIN IMMEDIATE, more = SAVEPOINTs */
    sqlite3_stmt *st[S_COUNT];
    char err[512];
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void errf(char *err, size_t n_err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t n_err, const char *fmt, ...) {
    if (!err || n_err == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n_err, fmt, ap);
    va_end(ap);
}

/* Maps an SQLite result code to a KV_ status. */
static int kv_status_of(int rc) {
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return KV_ERR_INVAL;
    case SQLITE_NOMEM: return KV_ERR_NOMEM;
    case SQLITE_TOOBIG: return KV_ERR_LIMIT;
    default: return KV_ERR_IO;
    }
}

/* Records "what: sqlite message (extended code)" and returns the KV_ status. */
static int db_fail(kv_db *db, int rc, const char *what) {
    errf(db->err, sizeof db->err, "results.db: %s: %s (%d)", what, sqlite3_errmsg(db->sq),
         sqlite3_extended_errcode(db->sq));
    return kv_status_of(rc);
}

static int db_inval(kv_db *db, int st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int db_inval(kv_db *db, int st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->err, sizeof db->err, fmt, ap);
    va_end(ap);
    return st;
}

/* The cached statement id, reset and with bindings cleared; NULL on error
 * (message in db->err). */
static sqlite3_stmt *db_stmt(kv_db *db, int id) {
    if (!db->st[id]) {
        int rc = sqlite3_prepare_v3(db->sq, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &db->st[id], NULL);
        if (rc != SQLITE_OK) {
            db_fail(db, rc, "prepare");
            return NULL;
        }
    }
    sqlite3_reset(db->st[id]);
    sqlite3_clear_bindings(db->st[id]);
    return db->st[id];
}

/* Steps a statement that returns no rows; SQLITE_DONE → KV_OK. */
static int db_run(kv_db *db, sqlite3_stmt *st, const char *what) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? KV_OK : db_fail(db, rc, what);
}

static int db_exec(kv_db *db, const char *sql, const char *what) {
    int rc = sqlite3_exec(db->sq, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? KV_OK : db_fail(db, rc, what);
}

/* ---- binding with explicit lengths -------------------------------------- */

static int bind_str(sqlite3_stmt *st, int i, const char *s, size_t max) {
    if (!s) return sqlite3_bind_null(st, i);
    return sqlite3_bind_text(st, i, s, (int)strnlen(s, max), SQLITE_TRANSIENT);
}

/* "" → NULL (optional text columns). */
static int bind_opt_str(sqlite3_stmt *st, int i, const char *s, size_t max) {
    if (!s || !s[0]) return sqlite3_bind_null(st, i);
    return bind_str(st, i, s, max);
}

/* NaN ("not measured") → NULL. */
static int bind_opt_real(sqlite3_stmt *st, int i, double v) {
    return isnan(v) ? sqlite3_bind_null(st, i) : sqlite3_bind_double(st, i, v);
}

/* -1 ("not measured", kv_metrics_clear) → NULL. */
static int bind_opt_int(sqlite3_stmt *st, int i, int64_t v) {
    return v == -1 ? sqlite3_bind_null(st, i) : sqlite3_bind_int64(st, i, v);
}

/* ---- transactions --------------------------------------------------------- */

/* Outermost level: BEGIN IMMEDIATE (take the write lock now, so a busy
 * database waits in busy_timeout instead of failing at the first write);
 * inner levels are savepoints so one failed operation inside a caller's
 * batch undoes only itself. */
static int tx_begin(kv_db *db) {
    int st = db->depth == 0 ? db_exec(db, "BEGIN IMMEDIATE", "BEGIN IMMEDIATE")
                            : db_exec(db, "SAVEPOINT kv_op", "SAVEPOINT");
    if (st == KV_OK) db->depth++;
    return st;
}

static int tx_commit(kv_db *db) {
    if (db->depth <= 0) return db_inval(db, KV_ERR_INVAL, "results.db: commit without a transaction");
    if (db->depth > 1) {
        int st = db_exec(db, "RELEASE kv_op", "RELEASE");
        if (st == KV_OK) db->depth--;
        return st;
    }
    int st = db_exec(db, "COMMIT", "COMMIT");
    if (st != KV_OK) {
        char keep[sizeof db->err];
        memcpy(keep, db->err, sizeof keep);
        sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
        memcpy(db->err, keep, sizeof keep);
    }
    db->depth = 0;
    return st;
}

/* Undoes the innermost level; keeps the error message already recorded. */
static void tx_rollback(kv_db *db) {
    if (db->depth <= 0) return;
    if (db->depth > 1)
        sqlite3_exec(db->sq, "ROLLBACK TO kv_op; RELEASE kv_op", NULL, NULL, NULL);
    else
        sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
    db->depth--;
}

int kv_db_begin(kv_db *db) { return tx_begin(db); }
int kv_db_commit(kv_db *db) { return tx_commit(db); }
int kv_db_rollback(kv_db *db) {
    if (db->depth <= 0) return db_inval(db, KV_ERR_INVAL, "results.db: rollback without a transaction");
    tx_rollback(db);
    return KV_OK;
}

/* ---- open and migrate ----------------------------------------------------- */

static int read_user_version(kv_db *db, int *v) {
    sqlite3_stmt *st = db_stmt(db, S_USER_VERSION);
    if (!st) return KV_ERR_IO;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) return db_fail(db, rc, "PRAGMA user_version");
    *v = sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    return KV_OK;
}

static int newer_than_build(kv_db *db, int v) {
    return db_inval(db, KV_ERR_INVAL,
                    "results.db: schema version %d is newer than this build (knows up to %zu); "
                    "use the kvsubmit that created it or a newer one",
                    v, kv_schema_count);
}

/* Brings the file to kv_schema_count, one transaction per migration. The
 * version is re-read inside each transaction: a second kvsubmit migrating the
 * same file at the same time waits on the lock and then finds nothing to do. */
static int db_migrate(kv_db *db) {
    for (;;) {
        int v, st = read_user_version(db, &v);
        if (st != KV_OK) return st;
        if (v < 0 || (size_t)v > kv_schema_count) return newer_than_build(db, v);
        if ((size_t)v == kv_schema_count) return KV_OK;
        if ((st = tx_begin(db)) != KV_OK) return st;
        if ((st = read_user_version(db, &v)) != KV_OK) goto fail;
        if ((size_t)v > kv_schema_count) {
            st = newer_than_build(db, v);
            goto fail;
        }
        if ((size_t)v < kv_schema_count) {
            char *msg = NULL;
            int rc = sqlite3_exec(db->sq, kv_schema_sql[v], NULL, NULL, &msg);
            if (rc != SQLITE_OK) {
                errf(db->err, sizeof db->err, "results.db: migration %s failed: %s", kv_schema_names[v],
                     msg ? msg : sqlite3_errstr(rc));
                sqlite3_free(msg);
                st = kv_status_of(rc);
                goto fail;
            }
            int after;
            if ((st = read_user_version(db, &after)) != KV_OK) goto fail;
            if (after != v + 1) {
                st = db_inval(db, KV_ERR_INVAL, "results.db: migration %s must set PRAGMA user_version = %d (got %d)",
                              kv_schema_names[v], v + 1, after);
                goto fail;
            }
        }
        if ((st = tx_commit(db)) != KV_OK) return st;
        continue;
    fail:
        tx_rollback(db);
        return st;
    }
}

static int db_pragmas(kv_db *db, const char *path) {
    int st = db_exec(db, "PRAGMA foreign_keys = ON", "PRAGMA foreign_keys");
    if (st != KV_OK) return st;
    sqlite3_stmt *wal = NULL;
    int rc = sqlite3_prepare_v2(db->sq, "PRAGMA journal_mode = WAL", -1, &wal, NULL);
    if (rc != SQLITE_OK) return db_fail(db, rc, "PRAGMA journal_mode");
    rc = sqlite3_step(wal);
    char mode[16] = "";
    if (rc == SQLITE_ROW && sqlite3_column_text(wal, 0))
        snprintf(mode, sizeof mode, "%s", (const char *)sqlite3_column_text(wal, 0));
    sqlite3_finalize(wal);
    if (rc != SQLITE_ROW) return db_fail(db, rc, "PRAGMA journal_mode");
    /* ":memory:" (tests) cannot be WAL and needs no durability. */
    if (strcmp(mode, "wal") != 0 && strcmp(path, ":memory:") != 0)
        return db_inval(db, KV_ERR_IO, "results.db: %s: cannot switch to WAL (journal_mode is %s)", path, mode);
    return db_exec(db, "PRAGMA synchronous = FULL", "PRAGMA synchronous");
}

/* Opens path (created if missing), sets the pragmas and migrates. On failure
 * *out is NULL and err names the file and the cause. */
int kv_db_open(kv_db **out, const char *path, char *err, size_t n_err) {
    *out = NULL;
    if (!path || !*path) {
        errf(err, n_err, "results.db: empty path");
        return KV_ERR_INVAL;
    }
    kv_db *db = calloc(1, sizeof *db);
    if (!db) {
        errf(err, n_err, "results.db: out of memory");
        return KV_ERR_NOMEM;
    }
    int rc = sqlite3_open_v2(path, &db->sq, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    int st;
    if (rc != SQLITE_OK) {
        errf(err, n_err, "%s: %s", path, db->sq ? sqlite3_errmsg(db->sq) : sqlite3_errstr(rc));
        kv_db_close(db);
        return KV_ERR_IO;
    }
    sqlite3_extended_result_codes(db->sq, 1);
    sqlite3_busy_timeout(db->sq, 5000);
    if ((st = db_pragmas(db, path)) != KV_OK || (st = db_migrate(db)) != KV_OK) {
        errf(err, n_err, "%s: %s", path, db->err);
        kv_db_close(db);
        return st;
    }
    *out = db;
    return KV_OK;
}

void kv_db_close(kv_db *db) {
    if (!db) return;
    if (db->depth > 0) sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(db->st[i]);
    sqlite3_close(db->sq);
    free(db);
}

const char *kv_db_errmsg(const kv_db *db) { return db ? db->err : "results.db: no database"; }

int kv_db_schema_version(kv_db *db) {
    int v;
    return read_user_version(db, &v) == KV_OK ? v : -1;
}

/* ---- sweeps and jobs ------------------------------------------------------ */

static int job_id_ok(const char *id) {
    if (!id || strnlen(id, KV_JOB_ID_HEX) != KV_JOB_ID_HEX - 1) return 0;
    for (int i = 0; i < KV_JOB_ID_HEX - 1; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return 0;
    return 1;
}

int kv_db_add_sweep(kv_db *db, const char *sweep, const void *sweep_msgpack, size_t len) {
    if (!sweep || !*sweep || strnlen(sweep, KV_NAME_MAX) >= KV_NAME_MAX)
        return db_inval(db, KV_ERR_INVAL, "results.db: sweep name is empty or too long");
    if (len > KV_SWEEP_MAX_BYTES) return db_inval(db, KV_ERR_LIMIT, "results.db: sweep %s: file too large", sweep);
    int st = tx_begin(db);
    if (st != KV_OK) return st;
    sqlite3_stmt *s = db_stmt(db, S_ADD_SWEEP);
    if (!s) st = KV_ERR_IO;
    if (st == KV_OK) {
        bind_str(s, 1, sweep, KV_NAME_MAX);
        sqlite3_bind_blob(s, 2, sweep_msgpack ? sweep_msgpack : "", (int)len, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, now_ms());
        st = db_run(db, s, "add sweep");
    }
    if (st != KV_OK) {
        tx_rollback(db);
        return st;
    }
    return tx_commit(db);
}

static int add_event(kv_db *db, const char *sweep, const char *job_id, const char *kind, const char *worker,
                     int64_t attempt, const char *detail) {
    sqlite3_stmt *s = db_stmt(db, S_EVENT);
    if (!s) return KV_ERR_IO;
    sqlite3_bind_int64(s, 1, now_ms());
    bind_str(s, 2, sweep, KV_NAME_MAX);
    bind_str(s, 3, job_id, KV_JOB_ID_HEX);
    bind_str(s, 4, kind, 16);
    bind_opt_str(s, 5, worker, KV_NAME_MAX);
    if (attempt >= 0) sqlite3_bind_int64(s, 6, attempt);
    bind_opt_str(s, 7, detail, 1024);
    return db_run(db, s, "add event");
}

/* Inserts the job with status 'new' unless its job_id is already known
 * (*is_new tells which). The sweep row must exist. */
int kv_db_add_job(kv_db *db, const kv_job *job, const void *job_msgpack, size_t len, int *is_new) {
    if (is_new) *is_new = 0;
    if (!job || !job_id_ok(job->job_id))
        return db_inval(db, KV_ERR_INVAL, "results.db: job_id must be 64 lowercase hex characters");
    if (!job_msgpack || len == 0 || len > KV_JOB_MAX_BYTES)
        return db_inval(db, KV_ERR_INVAL, "results.db: job %s: encoded job missing or over %d bytes", job->job_id,
                        KV_JOB_MAX_BYTES);
    char *pj = NULL, *tj = NULL, *sj = NULL;
    int st = sub_params_json(&job->params, "params", &pj, db->err, sizeof db->err);
    if (st == KV_OK) st = sub_params_json(&job->task_params, "task_params", &tj, db->err, sizeof db->err);
    if (st == KV_OK && job->has_spec) st = sub_params_json(&job->spec, "spec", &sj, db->err, sizeof db->err);
    if (st != KV_OK) goto out;
    if ((st = tx_begin(db)) != KV_OK) goto out;
    sqlite3_stmt *s = db_stmt(db, S_ADD_JOB);
    if (!s) {
        st = KV_ERR_IO;
        goto undo;
    }
    bind_str(s, 1, job->job_id, sizeof job->job_id);
    bind_str(s, 2, job->sweep, sizeof job->sweep);
    bind_str(s, 3, job->model, sizeof job->model);
    bind_str(s, 4, job->dataset, sizeof job->dataset);
    sqlite3_bind_int64(s, 5, job->doc);
    sqlite3_bind_int64(s, 6, job->offset);
    sqlite3_bind_int64(s, 7, job->tokens);
    bind_str(s, 8, job->task, sizeof job->task);
    bind_str(s, 9, job->policy, sizeof job->policy);
    bind_str(s, 10, pj, strlen(pj));
    bind_str(s, 11, tj, strlen(tj));
    bind_str(s, 12, sj, sj ? strlen(sj) : 0);
    sqlite3_bind_int64(s, 13, job->seed);
    sqlite3_bind_int64(s, 14, job->repeat);
    bind_str(s, 15, job->nonce, sizeof job->nonce);
    sqlite3_bind_blob(s, 16, job_msgpack, (int)len, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        if (sqlite3_extended_errcode(db->sq) == SQLITE_CONSTRAINT_FOREIGNKEY)
            st = db_inval(db, KV_ERR_INVAL, "results.db: job %s: sweep '%.200s' is not recorded (add the sweep first)",
                          job->job_id, job->sweep);
        else
            st = db_fail(db, rc, "add job");
        goto undo;
    }
    if (is_new) *is_new = sqlite3_changes(db->sq) == 1;
    st = tx_commit(db);
    goto out;
undo:
    tx_rollback(db);
out:
    free(pj);
    free(tj);
    free(sj);
    return st;
}

/* Looks the job up: KV_OK with its sweep and status, KV_ERR_INVAL if unknown. */
static int job_lookup(kv_db *db, const char *job_id, char sweep[KV_NAME_MAX], char status[16]) {
    sqlite3_stmt *s = db_stmt(db, S_JOB_STATUS);
    if (!s) return KV_ERR_IO;
    bind_str(s, 1, job_id, KV_JOB_ID_HEX);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        return db_inval(db, KV_ERR_INVAL, "results.db: unknown job_id %.64s (not submitted through this database)",
                        job_id);
    }
    if (rc != SQLITE_ROW) return db_fail(db, rc, "look up job");
    snprintf(sweep, KV_NAME_MAX, "%s", (const char *)sqlite3_column_text(s, 0));
    snprintf(status, 16, "%s", (const char *)sqlite3_column_text(s, 1));
    sqlite3_reset(s);
    return KV_OK;
}

int kv_db_job_status(kv_db *db, const char *job_id, char status[16]) {
    char sweep[KV_NAME_MAX];
    status[0] = '\0';
    return job_lookup(db, job_id, sweep, status);
}

/* 'new' → 'queued' with the kv:jobs entry id. A job no longer 'new' (a
 * collector already stored its outcome) is left as it is. */
int kv_db_job_queued(kv_db *db, const char *job_id, const char *stream_id) {
    char sweep[KV_NAME_MAX], status[16];
    int st = tx_begin(db);
    if (st != KV_OK) return st;
    if ((st = job_lookup(db, job_id, sweep, status)) != KV_OK) goto undo;
    sqlite3_stmt *s = db_stmt(db, S_JOB_QUEUED);
    if (!s) {
        st = KV_ERR_IO;
        goto undo;
    }
    bind_str(s, 1, job_id, KV_JOB_ID_HEX);
    bind_str(s, 2, stream_id, 48);
    sqlite3_bind_int64(s, 3, now_ms());
    if ((st = db_run(db, s, "mark queued")) != KV_OK) goto undo;
    if (sqlite3_changes(db->sq) == 1 && (st = add_event(db, sweep, job_id, "queued", NULL, -1, stream_id)) != KV_OK)
        goto undo;
    return tx_commit(db);
undo:
    tx_rollback(db);
    return st;
}

/* Pages through a sweep's jobs (256 rows a page, by rowid) so fn may write
 * to the database — typically changing the very status being selected — with
 * no statement open. fn's non-zero return stops the walk and is returned. */
static int each_job(kv_db *db, int id, const char *sweep,
                    int (*fn)(void *ud, const char *job_id, const void *job, size_t len), void *ud) {
    enum { PAGE = 256 };
    int64_t last = 0;
    for (;;) {
        struct row {
            int64_t rowid;
            char job_id[KV_JOB_ID_HEX];
            void *job;
            size_t len;
        } rows[PAGE];
        int n = 0, st = KV_OK;
        sqlite3_stmt *s = db_stmt(db, id);
        if (!s) return KV_ERR_IO;
        bind_str(s, 1, sweep, KV_NAME_MAX);
        sqlite3_bind_int64(s, 2, last);
        int rc = SQLITE_DONE;
        while (n < PAGE && (rc = sqlite3_step(s)) == SQLITE_ROW) {
            struct row *r = &rows[n];
            r->rowid = sqlite3_column_int64(s, 0);
            snprintf(r->job_id, sizeof r->job_id, "%s", (const char *)sqlite3_column_text(s, 1));
            r->len = (size_t)sqlite3_column_bytes(s, 2);
            r->job = malloc(r->len ? r->len : 1);
            if (!r->job) {
                st = db_inval(db, KV_ERR_NOMEM, "results.db: out of memory");
                break;
            }
            memcpy(r->job, sqlite3_column_blob(s, 2), r->len);
            n++;
        }
        if (st == KV_OK && n < PAGE && rc != SQLITE_DONE) st = db_fail(db, rc, "list jobs");
        sqlite3_reset(s);
        for (int i = 0; i < n; i++) {
            if (st == KV_OK) {
                st = fn(ud, rows[i].job_id, rows[i].job, rows[i].len);
                last = rows[i].rowid;
            }
            free(rows[i].job);
        }
        if (st != KV_OK || n < PAGE) return st;
    }
}

int kv_db_each_unqueued(kv_db *db, const char *sweep,
                        int (*fn)(void *ud, const char *job_id, const void *job, size_t len), void *ud) {
    return each_job(db, S_EACH_UNQUEUED, sweep, fn, ud);
}

int kv_db_each_failed(kv_db *db, const char *sweep,
                      int (*fn)(void *ud, const char *job_id, const void *job, size_t len), void *ud) {
    return each_job(db, S_EACH_FAILED, sweep, fn, ud);
}

/* failed/dead → new in one transaction (each gets a 'requeued' event keeping
 * its old error); the caller then enqueues them like any unqueued job. */
int kv_db_reset_failed(kv_db *db, const char *sweep, int64_t *n_reset) {
    if (n_reset) *n_reset = 0;
    int st = tx_begin(db);
    if (st != KV_OK) return st;
    sqlite3_stmt *s = db_stmt(db, S_REQUEUE_EVENTS);
    if (!s) {
        st = KV_ERR_IO;
        goto undo;
    }
    bind_str(s, 1, sweep, KV_NAME_MAX);
    sqlite3_bind_int64(s, 2, now_ms());
    if ((st = db_run(db, s, "record requeue")) != KV_OK) goto undo;
    if (!(s = db_stmt(db, S_REQUEUE))) {
        st = KV_ERR_IO;
        goto undo;
    }
    bind_str(s, 1, sweep, KV_NAME_MAX);
    if ((st = db_run(db, s, "reset failed jobs")) != KV_OK) goto undo;
    if (n_reset) *n_reset = sqlite3_changes(db->sq);
    return tx_commit(db);
undo:
    tx_rollback(db);
    return st;
}

/* ---- results and dead letters ----------------------------------------- */

static int bind_result(sqlite3_stmt *s, const kv_result *r, int64_t stored_at) {
    const kv_metrics *m = &r->m;
    bind_str(s, 1, r->job_id, sizeof r->job_id);
    bind_opt_real(s, 2, m->ppl);
    bind_opt_real(s, 3, m->nll_sum);
    bind_opt_int(s, 4, m->tokens);
    bind_opt_real(s, 5, m->accuracy);
    bind_opt_real(s, 6, m->ttft_ms);
    bind_opt_real(s, 7, m->tpot_ms);
    bind_opt_real(s, 8, m->tokens_per_s);
    bind_opt_real(s, 9, m->cache_tokens_mean);
    bind_opt_int(s, 10, m->cache_tokens_max);
    bind_opt_int(s, 11, m->kv_bytes);
    bind_opt_int(s, 12, m->evictions);
    bind_opt_int(s, 13, m->peak_rss_bytes);
    bind_opt_int(s, 14, m->spec_drafted);
    bind_opt_int(s, 15, m->spec_accepted);
    bind_opt_real(s, 16, m->spec_acceptance_rate);
    bind_opt_real(s, 17, m->spec_mean_accepted_len);
    bind_opt_int(s, 18, m->spec_target_passes);
    bind_opt_real(s, 19, m->spec_speedup);
    if (r->extras_json)
        sqlite3_bind_text(s, 20, r->extras_json, (int)strnlen(r->extras_json, 1 << 24), SQLITE_TRANSIENT);
    bind_str(s, 21, r->engine_version, sizeof r->engine_version);
    bind_opt_str(s, 22, r->model_fingerprint, sizeof r->model_fingerprint);
    bind_str(s, 23, r->worker, sizeof r->worker);
    sqlite3_bind_int64(s, 24, r->attempt);
    sqlite3_bind_int64(s, 25, r->started_ms);
    sqlite3_bind_int64(s, 26, r->finished_ms);
    return sqlite3_bind_int64(s, 27, stored_at);
}

static int job_outcome(kv_db *db, int id, const kv_result *r) {
    sqlite3_stmt *s = db_stmt(db, id);
    if (!s) return KV_ERR_IO;
    bind_str(s, 1, r->job_id, sizeof r->job_id);
    sqlite3_bind_int64(s, 2, r->attempt);
    bind_opt_str(s, 3, r->worker, sizeof r->worker);
    sqlite3_bind_int64(s, 4, r->started_ms);
    sqlite3_bind_int64(s, 5, r->finished_ms);
    if (id == S_JOB_FAILED) bind_str(s, 6, r->error[0] ? r->error : "failed", sizeof r->error);
    return db_run(db, s, "update job");
}

/* Stores one result in one transaction. ok: results row (duplicate → no
 * change, 'duplicate' event) and job → done. failed: job → failed with the
 * error, unless the job already has its results row (a late failure after a
 * success is a duplicate). Unknown job_id: KV_ERR_INVAL, nothing written. */
int kv_db_put_result(kv_db *db, const kv_result *r, int *inserted) {
    if (inserted) *inserted = 0;
    if (!r || !job_id_ok(r->job_id))
        return db_inval(db, KV_ERR_INVAL, "results.db: result without a valid job_id");
    int ok = strcmp(r->status, "ok") == 0;
    if (!ok && strcmp(r->status, "failed") != 0)
        return db_inval(db, KV_ERR_INVAL, "results.db: result %s: status '%.16s' is neither ok nor failed", r->job_id,
                        r->status);
    char sweep[KV_NAME_MAX], status[16];
    int st = tx_begin(db);
    if (st != KV_OK) return st;
    if ((st = job_lookup(db, r->job_id, sweep, status)) != KV_OK) goto undo;
    int fresh = 0;
    if (ok) {
        sqlite3_stmt *s = db_stmt(db, S_INSERT_RESULT);
        if (!s) {
            st = KV_ERR_IO;
            goto undo;
        }
        bind_result(s, r, now_ms());
        if ((st = db_run(db, s, "insert result")) != KV_OK) goto undo;
        fresh = sqlite3_changes(db->sq) == 1;
        if (fresh && (st = job_outcome(db, S_JOB_DONE, r)) != KV_OK) goto undo;
        st = add_event(db, sweep, r->job_id, fresh ? "result" : "duplicate", r->worker, r->attempt, NULL);
    } else {
        sqlite3_stmt *s = db_stmt(db, S_HAS_RESULT);
        if (!s) {
            st = KV_ERR_IO;
            goto undo;
        }
        bind_str(s, 1, r->job_id, sizeof r->job_id);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            st = db_fail(db, rc, "look up result");
            goto undo;
        }
        int has = rc == SQLITE_ROW;
        if (!has && (st = job_outcome(db, S_JOB_FAILED, r)) != KV_OK) goto undo;
        st = add_event(db, sweep, r->job_id, has ? "duplicate" : "failed", r->worker, r->attempt, r->error);
    }
    if (st != KV_OK) goto undo;
    if ((st = tx_commit(db)) != KV_OK) return st;
    if (inserted) *inserted = fresh;
    return KV_OK;
undo:
    tx_rollback(db);
    return st;
}

/* Dead letter: job → dead with the reason, unless it is already done (a late
 * dead letter never hides a stored result; it is still recorded as an event). */
int kv_db_put_dead(kv_db *db, const char *job_id, const char *reason, int64_t deliveries, const char *worker) {
    if (!job_id_ok(job_id)) return db_inval(db, KV_ERR_INVAL, "results.db: dead letter without a valid job_id");
    char sweep[KV_NAME_MAX], status[16];
    int st = tx_begin(db);
    if (st != KV_OK) return st;
    if ((st = job_lookup(db, job_id, sweep, status)) != KV_OK) goto undo;
    const char *why = reason && *reason ? reason : "dead";
    if (strcmp(status, "done") != 0) {
        sqlite3_stmt *s = db_stmt(db, S_JOB_DEAD);
        if (!s) {
            st = KV_ERR_IO;
            goto undo;
        }
        bind_str(s, 1, job_id, KV_JOB_ID_HEX);
        sqlite3_bind_int64(s, 2, deliveries);
        bind_opt_str(s, 3, worker, KV_NAME_MAX);
        sqlite3_bind_int64(s, 4, now_ms());
        bind_str(s, 5, why, 1024);
        if ((st = db_run(db, s, "mark dead")) != KV_OK) goto undo;
    }
    if ((st = add_event(db, sweep, job_id, "dead", worker, deliveries, why)) != KV_OK) goto undo;
    return tx_commit(db);
undo:
    tx_rollback(db);
    return st;
}

/* ---- progress -------------------------------------------------------------- */

/* Counts for one sweep, or for every sweep of the file when sweep is NULL. */
int kv_db_progress_get(kv_db *db, const char *sweep, kv_db_progress *p) {
    memset(p, 0, sizeof *p);
    sqlite3_stmt *s = db_stmt(db, S_PROGRESS);
    if (!s) return KV_ERR_IO;
    bind_str(s, 1, sweep, KV_NAME_MAX);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) return db_fail(db, rc, "progress");
    p->total = sqlite3_column_int64(s, 0);
    p->done = sqlite3_column_int64(s, 1);
    p->failed = sqlite3_column_int64(s, 2);
    p->dead = sqlite3_column_int64(s, 3);
    p->queued = sqlite3_column_int64(s, 4);
    sqlite3_reset(s);
    if (!(s = db_stmt(db, S_DUPS))) return KV_ERR_IO;
    bind_str(s, 1, sweep, KV_NAME_MAX);
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) return db_fail(db, rc, "progress");
    p->dup_results = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return KV_OK;
}

/* One call per sweep row of v_sweep_progress (all sweeps when sweep is NULL). */
int kv_db_each_progress(kv_db *db, const char *sweep,
                        int (*fn)(void *ud, const char *sweep, const kv_db_progress *p), void *ud) {
    enum { MAX_ROWS = 4096 };
    /* Copied out first so fn may use the database. */
    struct prow {
        char name[KV_NAME_MAX];
        kv_db_progress p;
    } *rows = malloc(sizeof *rows * MAX_ROWS);
    if (!rows) return db_inval(db, KV_ERR_NOMEM, "results.db: out of memory");
    sqlite3_stmt *s = db_stmt(db, S_EACH_PROGRESS);
    if (!s) {
        free(rows);
        return KV_ERR_IO;
    }
    bind_str(s, 1, sweep, KV_NAME_MAX);
    int n = 0, rc = SQLITE_DONE, st = KV_OK;
    while (n < MAX_ROWS && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct prow *r = &rows[n++];
        snprintf(r->name, sizeof r->name, "%s", (const char *)sqlite3_column_text(s, 0));
        r->p.total = sqlite3_column_int64(s, 1);
        r->p.done = sqlite3_column_int64(s, 2);
        r->p.failed = sqlite3_column_int64(s, 3);
        r->p.dead = sqlite3_column_int64(s, 4);
        r->p.queued = sqlite3_column_int64(s, 5);
        r->p.dup_results = sqlite3_column_int64(s, 6);
    }
    if (n < MAX_ROWS && rc != SQLITE_DONE) st = db_fail(db, rc, "sweep progress");
    sqlite3_reset(s);
    for (int i = 0; st == KV_OK && i < n; i++) st = fn(ud, rows[i].name, &rows[i].p);
    free(rows);
    return st;
}
