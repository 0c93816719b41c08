/* enqueue.h — kvsubmit's write path: a sweep into results.db, then its jobs
 * onto kv:jobs.
 *
 * The order is what makes a crash harmless: every job is committed to
 * results.db (status 'new') in one transaction before anything is XADDed,
 * and a job is marked 'queued' only after its XADD returned. A crash in
 * between leaves 'new' jobs that the next kvsubmit (or --collect) XADDs
 * again — at worst a duplicate stream entry, whose second result is a no-op
 * insert. */
#ifndef SUBMIT_ENQUEUE_H
#define SUBMIT_ENQUEUE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"
#include "results.h"
#include "sweep.h"

/* Records the sweep row and every job of its grid (nonce "" or the --rerun
 * nonce) in one transaction; nothing is written on failure. */
int sub_sweep_record(kv_db *db, const kv_sweep *s, const char *nonce, int64_t *n_new, int64_t *n_existing,
                     char *err, size_t n_err);

/* Makes sure the three consumer groups exist (kv:jobs/kv:workers,
 * kv:results/kv:collect, kv:dead/kv:collect). If results.db has jobs in
 * status 'queued' but Redis has no kv:jobs group, Redis lost its state:
 * KV_ERR_NOGROUP, and nothing is recreated. */
int sub_queue_prepare(kv_db *db, kv_queue *q, char *err, size_t n_err);

/* XADDs every job of `sweep` still in status 'new' and marks each queued;
 * stops early (KV_OK, fewer queued) when *stop becomes non-zero. */
int sub_enqueue_unqueued(kv_db *db, kv_queue *q, const char *sweep, volatile sig_atomic_t *stop,
                         int64_t *n_queued, char *err, size_t n_err);

/* sub_enqueue_unqueued for every sweep in results.db (kvsubmit --collect). */
int sub_enqueue_all_unqueued(kv_db *db, kv_queue *q, volatile sig_atomic_t *stop, int64_t *n_queued, char *err,
                             size_t n_err);

#endif /* SUBMIT_ENQUEUE_H */
