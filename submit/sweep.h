/* sweep.h — a sweep file (msgpack canonical, JSON for authoring) turned into
 * the list of jobs it stands for.
 *
 * The file is outside input: it is size-capped (KV_SWEEP_MAX_BYTES), msgpack
 * is pre-walked by kv_mpack_guard, and both formats are read into the same
 * validated structure. Every error names the field by its path, e.g.
 * "sweep.json: policies[2].recent[1]: expected an integer, got string", and
 * nothing is enqueued when any check fails. Schema: docs/sweep.md. */
#ifndef SUBMIT_SWEEP_H
#define SUBMIT_SWEEP_H

#include <stddef.h>

#include "job.h"

#define KV_SWEEP_MAX_JOBS 100000 /* grids larger than this are refused */

typedef struct kv_sweep kv_sweep;

/* Reads path (".json" → JSON, anything else → msgpack, or detected from the
 * first byte: '{' is JSON). *out is NULL on failure, err says where. */
int kv_sweep_load(kv_sweep **out, const char *path, char *err, size_t n_err);
/* Same from memory; name is used in messages. is_json < 0: detect. */
int kv_sweep_parse(kv_sweep **out, const void *buf, size_t len, int is_json, const char *name, char *err,
                   size_t n_err);
void kv_sweep_free(kv_sweep *s);

const char *kv_sweep_name(const kv_sweep *s);
/* Number of jobs in the cartesian product. */
size_t kv_sweep_n_jobs(const kv_sweep *s);
/* The i-th job (0 <= i < n_jobs), fully filled except job_id; deterministic
 * order. nonce ("" for none) is copied into job->nonce (kvsubmit --rerun). */
int kv_sweep_job(const kv_sweep *s, size_t i, const char *nonce, kv_job *job, char *err, size_t n_err);

/* The sweep re-encoded as canonical msgpack (kvsubmit --emit-msgpack); the
 * result parses back to the same jobs. *out is malloc'd. */
int kv_sweep_to_msgpack(const kv_sweep *s, unsigned char **out, size_t *out_len, char *err, size_t n_err);

#endif /* SUBMIT_SWEEP_H */
