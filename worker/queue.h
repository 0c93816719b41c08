/* queue.h — kvsweep's use of Redis Streams (hiredis 0.14, synchronous).
 *
 * Keys (prefix "kv:", so one ACL pattern covers them):
 *   kv:jobs      stream of jobs; fields job_id, sweep, job (canonical msgpack)
 *                consumer group "kv:workers", created with id 0 + MKSTREAM
 *   kv:results   stream of results; fields job_id, sweep, result (msgpack)
 *                consumer group "kv:collect" (kvsubmit is the collector)
 *   kv:dead      dead letters; fields job_id, sweep, job, reason, deliveries, worker
 *                consumer group "kv:collect"
 *   kv:hb:<name>   worker heartbeat key (value: JSON status), PX = lease
 *   kv:lock:<name> consumer-name lock: SET NX PX, value = a random token
 *
 * A kv_queue owns one redisContext plus the URL and credentials needed to
 * rebuild it: every call that meets a dead connection reconnects with capped
 * exponential backoff and jitter (100 ms .. 10 s), re-applies the socket
 * timeout and keepalive, re-AUTHs, CLIENT SETNAMEs, and then reports
 * KV_ERR_IO once so the caller can re-read its own pending entries. A
 * NOGROUP reply after a reconnect is reported as KV_ERR_NOGROUP: the queue
 * state was lost, and nobody recreates it silently. */
#ifndef WORKER_QUEUE_H
#define WORKER_QUEUE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"

#define KV_STREAM_JOBS    "kv:jobs"
#define KV_STREAM_RESULTS "kv:results"
#define KV_STREAM_DEAD    "kv:dead"
#define KV_GROUP_WORKERS  "kv:workers"
#define KV_GROUP_COLLECT  "kv:collect"

typedef struct kv_url {
    char host[256];
    int port;
    char user[128]; /* "" → AUTH with password only (user default) */
    char pass[256]; /* "" → no AUTH */
    int db;
} kv_url;

/* redis://[[user]:pass@]host[:port][/db]; "" or NULL → KV_REDIS_URL from the
 * environment → redis://127.0.0.1:6379. */
int kv_url_parse(const char *s, kv_url *u, char *err, size_t n_err);
/* Non-loopback host without a password → refused (kvworker's rule). */
int kv_url_is_loopback(const kv_url *u);

typedef struct kv_queue kv_queue;

typedef struct kv_queue_opts {
    int block_ms;        /* XREADGROUP BLOCK (default 2000) */
    int timeout_ms;      /* socket timeout; must exceed block_ms + 1000 (checked) */
    int max_backoff_ms;  /* reconnect cap (default 10000) */
    int max_reconnect_s; /* give up after this long without Redis (0: never) */
    const char *client_name; /* CLIENT SETNAME */
    /* When non-NULL and *interrupt becomes non-zero (a signal handler sets
     * it), a reconnect loop stops waiting and the call returns KV_ERR_IO. */
    volatile sig_atomic_t *interrupt;
} kv_queue_opts;

void kv_queue_opts_default(kv_queue_opts *o);
int kv_queue_open(kv_queue **out, const kv_url *u, const kv_queue_opts *o, char *err, size_t n_err);
void kv_queue_close(kv_queue *q);
const char *kv_queue_errmsg(const kv_queue *q);
/* Counters for tests: reconnects so far, SO_RCVTIMEO in ms after the last (re)connect. */
long kv_queue_reconnects(const kv_queue *q);
long kv_queue_rcvtimeo_ms(const kv_queue *q);

/* XGROUP CREATE stream group 0 MKSTREAM; BUSYGROUP is success. */
int kv_queue_ensure_group(kv_queue *q, const char *stream, const char *group);

/* One stream entry as read. Field values point into memory owned by the
 * queue until the next call on it (copy what you keep). payload == NULL,
 * payload_len == 0 with deleted = 1 for a PEL entry whose stream entry is gone. */
typedef struct kv_entry {
    char id[48];
    char job_id[KV_JOB_ID_HEX];
    char sweep[KV_NAME_MAX];
    const unsigned char *payload; /* field "job" / "result" */
    size_t payload_len;
    int64_t deliveries;           /* filled by the worker from XPENDING when needed */
    int deleted;
    /* kv:dead only */
    char reason[512];
} kv_entry;

/* XADD stream * job_id .. sweep .. <payload_field> payload; id returned. */
int kv_queue_add(kv_queue *q, const char *stream, const char *job_id, const char *sweep,
                 const char *payload_field, const void *payload, size_t len, char id_out[48]);
/* XREADGROUP GROUP g consumer COUNT 1 [BLOCK ms] STREAMS s <start> where
 * start is "0" (own PEL, no block) or ">" (new). Returns 1 with *e filled, 0
 * when nothing arrived, < 0 on error. */
int kv_queue_read(kv_queue *q, const char *stream, const char *group, const char *consumer, const char *start,
                  kv_entry *e);
/* XACK. Returns the number acked (0 or 1) or < 0. */
int kv_queue_ack(kv_queue *q, const char *stream, const char *group, const char *id);
/* Lease renewal: extended XPENDING for the owner, then XCLAIM s g consumer 0
 * id JUSTID (idle -> 0, delivery count unchanged). Returns 1 if we still own
 * it, 0 if it is no longer pending or another consumer owns it now (never
 * stolen back), < 0 on error. */
int kv_queue_renew(kv_queue *q, const char *stream, const char *group, const char *consumer, const char *id);
/* Janitor: XAUTOCLAIM s g consumer min_idle_ms cursor COUNT 10 JUSTID; up to
 * max ids of claimed entries (now ours, delivery count not incremented)
 * written to ids[]; *n_ids set. Deleted entries are dropped from the PEL by
 * Redis and not returned. */
int kv_queue_autoclaim(kv_queue *q, const char *stream, const char *group, const char *consumer,
                       long min_idle_ms, char ids[][48], int max, int *n_ids);
/* Delivery count of a pending entry (extended XPENDING), 0 if not pending. */
int kv_queue_deliveries(kv_queue *q, const char *stream, const char *group, const char *id, int64_t *out);
/* Atomically publish a result and ack the job:
 * MULTI; XADD kv:results * job_id .. sweep .. result ..; XACK kv:jobs kv:workers id; EXEC. */
int kv_queue_publish_ack(kv_queue *q, const char *job_entry_id, const char *job_id, const char *sweep,
                         const void *result, size_t len);
/* Atomically dead-letter a job: MULTI; XADD kv:dead * ...; XACK kv:jobs ...; EXEC. */
int kv_queue_dead_letter(kv_queue *q, const char *job_entry_id, const char *job_id, const char *sweep,
                         const void *job, size_t job_len, const char *reason, int64_t deliveries,
                         const char *worker);
/* Consumer-name lock: SET kv:lock:<name> token NX PX ttl (acquire) / a
 * compare-and-refresh (renew; fails if the token changed) / compare-and-del. */
int kv_queue_lock_acquire(kv_queue *q, const char *name, const char *token, long ttl_ms);
int kv_queue_lock_renew(kv_queue *q, const char *name, const char *token, long ttl_ms);
int kv_queue_lock_release(kv_queue *q, const char *name, const char *token);
/* Heartbeat key kv:hb:<name> = status_json, PX ttl. */
int kv_queue_heartbeat(kv_queue *q, const char *name, const char *status_json, long ttl_ms);
/* Pending-entry count of a group (XPENDING summary) and the stream length. */
int kv_queue_pending(kv_queue *q, const char *stream, const char *group, int64_t *pending);

/* Additions (kvworker):
 * One PEL entry by id (extended XPENDING id id 1): returns 1 with owner
 * (may be NULL), idle ms and delivery count filled, 0 when not pending. */
int kv_queue_pending_entry(kv_queue *q, const char *stream, const char *group, const char *id, char owner[256],
                           int64_t *idle_ms, int64_t *deliveries);
/* Hand an entry back without acking it: XCLAIM s g consumer 0 id IDLE idle_ms
 * JUSTID, so any janitor with min-idle <= idle_ms claims it at once (used when
 * a worker aborts a job on its second SIGTERM). Returns 1, 0 (not pending), < 0. */
int kv_queue_release(kv_queue *q, const char *stream, const char *group, const char *consumer, const char *id,
                     long idle_ms);
/* PING (connectivity check; reconnects like every call). */
int kv_queue_ping(kv_queue *q);

#endif /* WORKER_QUEUE_H */
