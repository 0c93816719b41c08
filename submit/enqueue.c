/* enqueue.c — see enqueue.h: sweep → results.db → kv:jobs, crash-safe by
 * ordering (commit the jobs, then XADD, then mark queued).
 *
 * It does not collect results (collect.c) and does not parse sweeps
 * (sweep.c); the job bytes it XADDs are exactly the canonical bytes stored
 * in jobs.job, so what a worker runs is what results.db says was submitted. */
#include "enqueue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sub_sweep_record(kv_db *db, const kv_sweep *s, const char *nonce, int64_t *n_new, int64_t *n_existing,
                     char *err, size_t n_err) {
    *n_new = *n_existing = 0;
    unsigned char *sweep_bytes = NULL, *job_bytes = NULL;
    size_t sweep_len = 0, job_len = 0;
    kv_job *job = malloc(sizeof *job);
    if (!job) {
        snprintf(err, n_err, "out of memory");
        return KV_ERR_NOMEM;
    }
    int st = kv_sweep_to_msgpack(s, &sweep_bytes, &sweep_len, err, n_err);
    if (st != KV_OK) goto out;
    if ((st = kv_db_begin(db)) != KV_OK) {
        snprintf(err, n_err, "%s", kv_db_errmsg(db));
        goto out;
    }
    if ((st = kv_db_add_sweep(db, kv_sweep_name(s), sweep_bytes, sweep_len)) != KV_OK) {
        snprintf(err, n_err, "%s", kv_db_errmsg(db));
        goto undo;
    }
    size_t n = kv_sweep_n_jobs(s);
    for (size_t i = 0; i < n; i++) {
        if ((st = kv_sweep_job(s, i, nonce ? nonce : "", job, err, n_err)) != KV_OK) goto undo;
        free(job_bytes);
        job_bytes = NULL;
        if ((st = kv_job_encode(job, &job_bytes, &job_len, err, n_err)) != KV_OK) goto undo;
        int is_new = 0;
        if ((st = kv_db_add_job(db, job, job_bytes, job_len, &is_new)) != KV_OK) {
            snprintf(err, n_err, "%s", kv_db_errmsg(db));
            goto undo;
        }
        if (is_new) (*n_new)++;
        else (*n_existing)++;
    }
    if ((st = kv_db_commit(db)) != KV_OK) {
        snprintf(err, n_err, "%s", kv_db_errmsg(db));
        *n_new = *n_existing = 0;
    }
    goto out;
undo:
    kv_db_rollback(db);
    *n_new = *n_existing = 0;
out:
    free(job_bytes);
    free(sweep_bytes);
    free(job);
    return st;
}

int sub_queue_prepare(kv_db *db, kv_queue *q, char *err, size_t n_err) {
    kv_db_progress all;
    int st = kv_db_progress_get(db, NULL, &all);
    if (st != KV_OK) {
        snprintf(err, n_err, "%s", kv_db_errmsg(db));
        return st;
    }
    /* Jobs results.db believes are on kv:jobs: the group must still be there.
     * Recreating it would hide the loss; say so instead. */
    int64_t pending = 0;
    st = kv_queue_pending(q, KV_STREAM_JOBS, KV_GROUP_WORKERS, &pending);
    if (st == KV_ERR_NOGROUP && all.queued > 0) {
        snprintf(err, n_err,
                 "Redis lost its queue state: %s/%s does not exist but results.db has %lld unfinished job(s); "
                 "was Redis restarted without appendonly? (see README: recovering lost queue state)",
                 KV_STREAM_JOBS, KV_GROUP_WORKERS, (long long)all.queued);
        return KV_ERR_NOGROUP;
    }
    if (st != KV_OK && st != KV_ERR_NOGROUP) {
        snprintf(err, n_err, "redis: %s", kv_queue_errmsg(q));
        return st;
    }
    static const char *const pairs[3][2] = {{KV_STREAM_JOBS, KV_GROUP_WORKERS},
                                            {KV_STREAM_RESULTS, KV_GROUP_COLLECT},
                                            {KV_STREAM_DEAD, KV_GROUP_COLLECT}};
    for (int i = 0; i < 3; i++) {
        if ((st = kv_queue_ensure_group(q, pairs[i][0], pairs[i][1])) != KV_OK) {
            snprintf(err, n_err, "redis: creating group %s on %s: %s", pairs[i][1], pairs[i][0], kv_queue_errmsg(q));
            return st;
        }
    }
    return KV_OK;
}

struct enq_ctx {
    kv_db *db;
    kv_queue *q;
    const char *sweep;
    volatile sig_atomic_t *stop;
    int64_t n;
    char *err;
    size_t n_err;
};

enum { ENQ_STOPPED = 1 };

static int enq_one(void *ud, const char *job_id, const void *job, size_t len) {
    struct enq_ctx *c = ud;
    if (c->stop && *c->stop) return ENQ_STOPPED;
    char id[48] = "";
    int st = kv_queue_add(c->q, KV_STREAM_JOBS, job_id, c->sweep, "job", job, len, id);
    if (st != KV_OK) {
        snprintf(c->err, c->n_err, "redis: XADD %s: %s", KV_STREAM_JOBS, kv_queue_errmsg(c->q));
        return st;
    }
    if ((st = kv_db_job_queued(c->db, job_id, id)) != KV_OK) {
        snprintf(c->err, c->n_err, "%s", kv_db_errmsg(c->db));
        return st;
    }
    c->n++;
    return KV_OK;
}

int sub_enqueue_unqueued(kv_db *db, kv_queue *q, const char *sweep, volatile sig_atomic_t *stop,
                         int64_t *n_queued, char *err, size_t n_err) {
    struct enq_ctx c = {db, q, sweep, stop, 0, err, n_err};
    err[0] = '\0';
    int st = kv_db_each_unqueued(db, sweep, enq_one, &c);
    if (n_queued) *n_queued += c.n;
    if (st == ENQ_STOPPED) return KV_OK;
    if (st != KV_OK && !err[0]) snprintf(err, n_err, "%s", kv_db_errmsg(db));
    return st;
}

struct all_ctx {
    kv_db *db;
    kv_queue *q;
    volatile sig_atomic_t *stop;
    int64_t *n;
    char *err;
    size_t n_err;
};

static int enq_sweep(void *ud, const char *sweep, const kv_db_progress *p) {
    struct all_ctx *c = ud;
    if (p->queued == 0) return KV_OK;
    return sub_enqueue_unqueued(c->db, c->q, sweep, c->stop, c->n, c->err, c->n_err);
}

int sub_enqueue_all_unqueued(kv_db *db, kv_queue *q, volatile sig_atomic_t *stop, int64_t *n_queued, char *err,
                             size_t n_err) {
    struct all_ctx c = {db, q, stop, n_queued, err, n_err};
    err[0] = '\0';
    int st = kv_db_each_progress(db, NULL, enq_sweep, &c);
    if (st != KV_OK && !err[0]) snprintf(err, n_err, "%s", kv_db_errmsg(db));
    return st;
}
