/* job.h — the wire contract between kvsubmit and kvworker.
 *
 * A job is one point of a sweep's grid: (model, dataset slice, task, KV
 * policy + params, optional spec-decoding block, seed, repeat). kvsubmit
 * encodes it canonically as a msgpack map (keys sorted bytewise, integers in
 * their shortest form, integral reals written as integers, no duplicate
 * keys), and the job_id is the lowercase hex SHA-256 of those bytes. The
 * same job therefore always has the same id, on every box, forever; that id
 * is the primary key of results.db and what makes redelivery harmless.
 *
 * kvworker receives the bytes from Redis (outside input: size-capped and
 * pre-walked by kv_mpack_guard before msgpack-c sees them), decodes them into
 * kv_job (fixed-size fields, no allocation after decode), and answers with a
 * kv_result, itself encoded as a msgpack map.
 *
 * Canonical job map (every key always present except "spec" and "nonce"):
 *   "v"        int 1               format version
 *   "sweep"    str                 sweep name
 *   "model"    str                 name under the worker's --models root
 *   "dataset"  str                 file/folder name under the worker's --data root
 *   "doc"      int >= 0            document index in the dataset
 *   "offset"   int >= 0            token offset in the document
 *   "tokens"   int >= 0            tokens to evaluate (0: to the end)
 *   "task"     str                 "ppl" | "speed" | "spec" | "passkey"
 *   "task_params" map str->scalar  e.g. {"chunk":512} (ppl), {"prefill":L,"decode":N} (speed)
 *   "policy"   str                 KV policy name ("full", "streaming", ...)
 *   "params"   map str->scalar     the policy's params, one grid point
 *   "spec"     map str->scalar     spec-decoding settings (draft, gamma, ...), optional
 *   "seed"     int
 *   "repeat"   int >= 0
 *   "nonce"    str                 only with kvsubmit --rerun
 * Scalars are int64, float64, bool or str. */
#ifndef WORKER_JOB_H
#define WORKER_JOB_H

#include <stddef.h>
#include <stdint.h>

#define KV_JOB_MAX_BYTES   (64 * 1024)        /* cap on one encoded job */
#define KV_SWEEP_MAX_BYTES (16 * 1024 * 1024) /* cap on a sweep file */
#define KV_MPACK_MAX_DEPTH 8                  /* nesting limit enforced by the guard */
#define KV_NAME_MAX        256                /* model/dataset/sweep/policy names, incl. NUL */
#define KV_MAX_PARAMS      32                 /* entries in params / task_params / spec */
#define KV_JOB_ID_HEX      65                 /* 64 hex chars + NUL */

typedef enum kv_val_type { KV_VAL_INT = 1, KV_VAL_REAL, KV_VAL_BOOL, KV_VAL_STR } kv_val_type;

typedef struct kv_param {
    char key[64];
    kv_val_type type;
    int64_t i;           /* INT, BOOL (0/1) */
    double r;            /* REAL */
    char s[KV_NAME_MAX]; /* STR */
} kv_param;

typedef struct kv_params {
    int n;
    kv_param p[KV_MAX_PARAMS]; /* sorted by key */
} kv_params;

typedef struct kv_job {
    char job_id[KV_JOB_ID_HEX];
    char sweep[KV_NAME_MAX];
    char model[KV_NAME_MAX];
    char dataset[KV_NAME_MAX];
    int64_t doc, offset, tokens;
    char task[32];
    kv_params task_params;
    char policy[64];
    kv_params params;
    int has_spec;
    kv_params spec;
    int64_t seed, repeat;
    char nonce[64]; /* "" when absent */
} kv_job;

/* Status codes of this module (and of queue.h / results.h): 0 ok, < 0 error;
 * the message is written into the caller's err buffer. */
enum {
    KV_OK = 0,
    KV_ERR_INVAL = -1,   /* bad argument / schema violation */
    KV_ERR_FORMAT = -2,  /* malformed bytes (truncated, bad header, trailing bytes) */
    KV_ERR_LIMIT = -3,   /* over a size, depth, count or length limit */
    KV_ERR_NOMEM = -4,
    KV_ERR_IO = -5,      /* Redis / SQLite / file I/O */
    KV_ERR_NOGROUP = -6, /* the consumer group or stream vanished (Redis lost its state) */
    KV_ERR_AUTH = -7     /* authentication refused */
};

/* Pre-walks raw msgpack bytes without allocating: every declared
 * array/map/str/bin/ext length must fit in the remaining bytes (each array
 * element >= 1 byte, each map entry >= 2), nesting <= max_depth, exactly one
 * object with no trailing bytes, reserved byte 0xc1 refused, total length
 * <= max_bytes. Returns KV_OK or KV_ERR_FORMAT/KV_ERR_LIMIT with the byte
 * offset in err. Run it before msgpack_unpack_next on anything from outside. */
int kv_mpack_guard(const void *buf, size_t len, size_t max_bytes, int max_depth, char *err, size_t n_err);

/* The whole recipe for outside msgpack in one call: kv_mpack_guard (with
 * KV_MPACK_MAX_DEPTH), then msgpack_unpack_next, which must return SUCCESS
 * having consumed every byte. On KV_OK *u holds the object (destroy it with
 * msgpack_unpacked_destroy); on failure *u is already destroyed and err says
 * why (KV_ERR_LIMIT / KV_ERR_FORMAT from the guard or the unpacker,
 * KV_ERR_NOMEM). */
struct msgpack_unpacked;
int kv_mpack_unpack(struct msgpack_unpacked *u, const void *buf, size_t len, size_t max_bytes, char *err,
                    size_t n_err);

/* Canonical encoding of a job (job->job_id is ignored). *out is malloc'd;
 * the caller frees it. Fills job->job_id with the SHA-256 hex of the bytes. */
int kv_job_encode(kv_job *job, unsigned char **out, size_t *out_len, char *err, size_t n_err);
/* Guarded decode of a canonical job map; checks types, ranges, required keys,
 * unknown keys, embedded NULs, duplicate keys, and recomputes job_id from the
 * bytes. Never allocates beyond msgpack-c's zone for this message. */
int kv_job_decode(const void *buf, size_t len, kv_job *job, char *err, size_t n_err);
/* SHA-256 hex of bytes (libcrypto). */
void kv_sha256_hex(const void *buf, size_t len, char out[KV_JOB_ID_HEX]);

/* Lookup helpers over kv_params (NULL when absent). */
const kv_param *kv_params_get(const kv_params *ps, const char *key);

/* The result a worker publishes for a job: metrics for status "ok", an error
 * for "failed" (deterministic failures: bad path, unsupported policy, engine
 * error). NaN in a metric means "not measured" and is sent as nil. */
typedef struct kv_metrics {
    double ppl, nll_sum, accuracy;
    int64_t tokens;
    double ttft_ms, tpot_ms, tokens_per_s;
    double cache_tokens_mean;
    int64_t cache_tokens_max, kv_bytes, evictions, peak_rss_bytes;
    /* speculative decoding (NaN / -1 when not a spec job) */
    int64_t spec_drafted, spec_accepted, spec_target_passes;
    double spec_acceptance_rate, spec_mean_accepted_len, spec_speedup;
} kv_metrics;

/* Sets every double to NaN and every int64 to -1. */
void kv_metrics_clear(kv_metrics *m);

typedef struct kv_result {
    char job_id[KV_JOB_ID_HEX];
    char sweep[KV_NAME_MAX];
    char status[16];          /* "ok" | "failed" */
    char error[512];          /* "" when ok; starts with a reason code, e.g. "path_rejected: ..." */
    char worker[KV_NAME_MAX]; /* consumer name */
    int64_t attempt;          /* delivery count when it ran */
    int64_t started_ms, finished_ms; /* unix epoch ms */
    char engine_version[64];
    char model_fingerprint[KV_JOB_ID_HEX]; /* sha256 of config.json + safetensors headers, "" if unknown */
    kv_metrics m;
    char *extras_json;        /* optional JSON object text (malloc'd by the producer or NULL) */
} kv_result;

int kv_result_encode(const kv_result *r, unsigned char **out, size_t *out_len, char *err, size_t n_err);
/* Decodes into r; r->extras_json is malloc'd (or NULL); free with kv_result_free. */
int kv_result_decode(const void *buf, size_t len, kv_result *r, char *err, size_t n_err);
void kv_result_free(kv_result *r);

/* Checks a name that becomes a path under a root, a Redis field or a SQLite
 * value (model, dataset, draft, sweep): 1..KV_NAME_MAX-1 bytes, valid UTF-8,
 * no NUL, not absolute ('/' first), no ".." component. NULL when fine, else
 * a static reason ("contains a NUL byte", ...). The worker still resolves
 * paths beneath its roots; this is the submit-time check. */
const char *kv_name_problem(const char *s, size_t n);
/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
int kv_utf8_valid(const char *s, size_t n);

/* The catalog of known tasks, KV policies and their parameters
 * (job_catalog.c; documented in docs/sweep.md). Sweep validation refuses
 * anything not listed here. The codec itself does not consult it: a worker
 * older than the catalog still decodes a job and fails it with a reason. */
typedef enum kv_pkind {
    KV_PK_INT = 1, /* integer (an integral real is accepted and becomes an integer) */
    KV_PK_NUM,     /* integer or real */
    KV_PK_BOOL,
    KV_PK_STR,     /* one of choices; any text (1-255 bytes) when choices is NULL */
    KV_PK_NAME,    /* a model name (kv_name_problem) */
    KV_PK_LAYERS   /* layer list: an index >= 0, or a string "0;1" / "0,1" / "none" / "" */
} kv_pkind;

typedef struct kv_param_spec {
    const char *key;
    kv_pkind kind;
    double lo, hi;              /* range for INT/NUM (hi >= 9e18: no upper bound) ... */
    int lo_open, hi_open;       /* ... with these ends excluded */
    const char *const *choices; /* STR: NULL-terminated list of allowed values */
    const char *help;           /* one line for docs and error messages */
} kv_param_spec;

int kv_policy_known(const char *name);
int kv_policy_param_known(const char *policy, const char *key);
int kv_task_known(const char *task);
int kv_task_param_known(const char *task, const char *key);
/* Keys of the top-level "spec" block (draft, intermediate, gamma, ...). */
int kv_spec_param_known(const char *key);
/* The same lookups with type and range (NULL when unknown). */
const kv_param_spec *kv_policy_param_spec(const char *policy, const char *key);
const kv_param_spec *kv_task_param_spec(const char *task, const char *key);
const kv_param_spec *kv_spec_param_spec(const char *key);
/* A task's / policy's whole parameter list (terminated by key == NULL;
 * NULL when the name is unknown), and the spec block's. */
const kv_param_spec *kv_policy_params(const char *policy);
const kv_param_spec *kv_task_params(const char *task);
const kv_param_spec *kv_spec_params(void);
/* Enumeration for docs/tests: the i-th known policy / task name, NULL past the end. */
const char *kv_policy_name(int i);
const char *kv_task_name(int i);

#endif /* WORKER_JOB_H */
