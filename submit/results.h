/* results.h — results.db, the SQLite file users query.
 *
 * kvsubmit is the only writer (the collector): it opens the file with
 * journal_mode=WAL, synchronous=FULL, foreign_keys=ON, busy_timeout 5000,
 * applies schema/NNN_*.sql migrations in order up to PRAGMA user_version,
 * records each sweep and its jobs before anything is enqueued, and inserts
 * results with INSERT … ON CONFLICT(job_id) DO NOTHING inside BEGIN
 * IMMEDIATE. The caller acks a Redis entry only after kv_db_* returned OK
 * (the transaction is committed). Only prepared statements with bound
 * values; no SQL is ever built from strings. */
#ifndef SUBMIT_RESULTS_H
#define SUBMIT_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"

typedef struct kv_db kv_db;

/* Opens (creating if needed) and migrates. Refuses a file whose user_version
 * is newer than this build knows (names both versions). */
int kv_db_open(kv_db **out, const char *path, char *err, size_t n_err);
void kv_db_close(kv_db *db);
const char *kv_db_errmsg(const kv_db *db);
int kv_db_schema_version(kv_db *db);

/* Sweep row (name, the sweep file's bytes as canonical msgpack, created_at).
 * Jobs: status 'new' until enqueued. add_job sets *is_new = 1 if the job_id was
 * not there. Batched: begin/commit wrap many add_job calls in one transaction. */
int kv_db_begin(kv_db *db);
int kv_db_commit(kv_db *db);
int kv_db_rollback(kv_db *db);
int kv_db_add_sweep(kv_db *db, const char *sweep, const void *sweep_msgpack, size_t len);
int kv_db_add_job(kv_db *db, const kv_job *job, const void *job_msgpack, size_t len, int *is_new);
/* Mark queued with the stream entry id (status 'new' → 'queued'). */
int kv_db_job_queued(kv_db *db, const char *job_id, const char *stream_id);
/* Jobs of a sweep still in status 'new' (crash between insert and XADD):
 * calls fn for each with its stored canonical bytes. */
int kv_db_each_unqueued(kv_db *db, const char *sweep,
                        int (*fn)(void *ud, const char *job_id, const void *job, size_t len), void *ud);
/* Jobs of a sweep in status 'failed' or 'dead' (for --retry-failed). */
int kv_db_each_failed(kv_db *db, const char *sweep,
                      int (*fn)(void *ud, const char *job_id, const void *job, size_t len), void *ud);
/* --retry-failed: the sweep's failed and dead jobs go back to 'new' in one
 * transaction (an events row 'requeued' keeps each old error); the caller
 * then enqueues them through kv_db_each_unqueued, so a crash in between only
 * leaves them 'new' for the next run. *n_reset = how many. */
int kv_db_reset_failed(kv_db *db, const char *sweep, int64_t *n_reset);
/* Status of a job ("new", "queued", "done", "failed", "dead"); KV_ERR_INVAL
 * if the job_id is unknown to this database. */
int kv_db_job_status(kv_db *db, const char *job_id, char status[16]);

/* One transaction: result row (if status ok) ON CONFLICT DO NOTHING, job row
 * status → done/failed with attempts, worker, timings, error. *inserted = 1
 * if a new results row was written, 0 for a duplicate (counted in
 * dup_results). Results for unknown job_ids are refused (KV_ERR_INVAL). */
int kv_db_put_result(kv_db *db, const kv_result *r, int *inserted);
/* Dead letter → job status 'dead' with the reason and delivery count. */
int kv_db_put_dead(kv_db *db, const char *job_id, const char *reason, int64_t deliveries, const char *worker);

typedef struct kv_db_progress {
    int64_t total, done, failed, dead, queued; /* queued = new + queued (not finished) */
    int64_t dup_results;                       /* duplicate results seen for this sweep */
} kv_db_progress;
/* sweep == NULL: totals over every sweep in the file. */
int kv_db_progress_get(kv_db *db, const char *sweep, kv_db_progress *p);
/* One call per sweep (rows of v_sweep_progress, oldest first; only `sweep`
 * when not NULL); fn's non-zero return stops and is returned. */
int kv_db_each_progress(kv_db *db, const char *sweep,
                        int (*fn)(void *ud, const char *sweep, const kv_db_progress *p), void *ud);

#endif /* SUBMIT_RESULTS_H */
