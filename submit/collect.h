/* collect.h — kvsubmit as the collector: kv:results and kv:dead → results.db.
 *
 * One rule carries the reliability: an entry is XACKed only after the
 * transaction that stores it committed. An entry that cannot be stored
 * (its job_id is unknown to this results.db, or the database failed) is
 * left pending and retried; nothing is acked on a guess. Consequence: run
 * one collector per Redis (per set of kv:* keys); a second collector with
 * another results.db would leave the first one's results pending in its
 * own consumer and they would wait there until it ran again. */
#ifndef SUBMIT_COLLECT_H
#define SUBMIT_COLLECT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"
#include "results.h"

typedef struct sub_collect_opts {
    const char *sweep;            /* wait for this sweep; NULL: every sweep in results.db */
    const char *consumer;         /* "kvsubmit:<host>" */
    int timeout_s;                /* give up after this long (0: wait forever) */
    int quiet;                    /* no progress output */
    int tty;                      /* progress as a redrawn bar (else a plain line every 5 s) */
    volatile sig_atomic_t *stop;  /* set by SIGINT/SIGTERM: finish the current entry, then return */
} sub_collect_opts;

typedef enum sub_collect_end {
    SUB_END_DONE = 0,   /* every job done */
    SUB_END_FAILED,     /* every job finished, some failed or dead */
    SUB_END_TIMEOUT,
    SUB_END_STOPPED     /* interrupted by *stop */
} sub_collect_end;

typedef struct sub_collect_stats {
    int64_t stored, duplicates, dead, unknown, bad_payload, acked;
    kv_db_progress final;
} sub_collect_stats;

/* Collects until the sweep (or every sweep) has no job left in new/queued,
 * the timeout passes, or *stop. Returns KV_OK with *end set, or an error:
 * KV_ERR_NOGROUP (Redis lost its state), KV_ERR_IO (Redis unreachable or
 * results.db failing for too long); err says which. */
int sub_collect_run(kv_db *db, kv_queue *q, const sub_collect_opts *o, sub_collect_end *end,
                    sub_collect_stats *stats, char *err, size_t n_err);

/* "12/40 done (30%), 3 running, 1 failed, 0 dead" style line into buf. */
void sub_progress_format(char *buf, size_t n, const kv_db_progress *p, int64_t running, double eta_s, int bar);

#endif /* SUBMIT_COLLECT_H */
