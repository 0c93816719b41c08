/* job_result.c — the result a worker publishes for a job (kv:results), as a
 * msgpack map, and its guarded decoding by the collector.
 *
 * Map (keys in bytewise order, every key always present):
 *   "attempt" int, "engine_version" str, "error" str, "extras" str|nil
 *   (a JSON object's text), "finished_ms" int, "job_id" str (64 hex),
 *   "metrics" map (one key per kv_metrics field; a NaN double travels as
 *   nil, counts as integers, -1 meaning "not measured"), "model_fingerprint"
 *   str ("" or 64 hex), "started_ms" int, "status" "ok"|"failed", "sweep"
 *   str, "v" int 1, "worker" str.
 * Reals are always float64 here (no job_id is made from these bytes, and a
 * metric of 4.0 stays a real). The decoder does not demand canonical order
 * but does demand every key, no unknown or duplicate ones, and the types
 * above; it allocates only extras_json (kv_result_free). */
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "mpack_write.h"

static int res_fail(char *err, size_t n_err, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int res_fail(char *err, size_t n_err, int code, const char *fmt, ...) {
    if (err && n_err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n_err, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* The metrics, sorted by name: is_real says double (NaN <-> nil) or int64. */
typedef struct metric_def {
    const char *name;
    int is_real;
    size_t off;
} metric_def;

#define M_R(f) {#f, 1, offsetof(kv_metrics, f)}
#define M_I(f) {#f, 0, offsetof(kv_metrics, f)}
static const metric_def metric_defs[] = {
    M_R(accuracy),          M_I(cache_tokens_max),     M_R(cache_tokens_mean), M_I(evictions),
    M_I(kv_bytes),          M_R(nll_sum),              M_I(peak_rss_bytes),    M_R(ppl),
    M_R(spec_acceptance_rate), M_I(spec_accepted),     M_I(spec_drafted),      M_R(spec_mean_accepted_len),
    M_R(spec_speedup),      M_I(spec_target_passes),   M_I(tokens),            M_R(tokens_per_s),
    M_R(tpot_ms),           M_R(ttft_ms)};
#define N_METRICS (sizeof metric_defs / sizeof metric_defs[0])

void kv_metrics_clear(kv_metrics *m) {
    for (size_t i = 0; i < N_METRICS; i++) {
        char *p = (char *)m + metric_defs[i].off;
        if (metric_defs[i].is_real) {
            double v = NAN;
            memcpy(p, &v, sizeof v);
        } else {
            int64_t v = -1;
            memcpy(p, &v, sizeof v);
        }
    }
}

static int is_hex64(const char *s) {
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[64] == '\0';
}

/* Checks a fixed-size string field of r before encoding. */
static int res_str_ok(const char *s, size_t cap) {
    const char *e = memchr(s, '\0', cap);
    return e && kv_utf8_valid(s, (size_t)(e - s));
}

/* Contract in job.h. *out is malloc'd; the caller frees it. */
int kv_result_encode(const kv_result *r, unsigned char **out, size_t *out_len, char *err, size_t n_err) {
    *out = NULL;
    *out_len = 0;
    if (!res_str_ok(r->job_id, sizeof r->job_id) || !is_hex64(r->job_id))
        return res_fail(err, n_err, KV_ERR_INVAL, "result: job_id must be 64 lowercase hex digits");
    if (!res_str_ok(r->model_fingerprint, sizeof r->model_fingerprint) ||
        (r->model_fingerprint[0] && !is_hex64(r->model_fingerprint)))
        return res_fail(err, n_err, KV_ERR_INVAL, "result: model_fingerprint must be empty or 64 hex digits");
    if (!res_str_ok(r->sweep, sizeof r->sweep) || !res_str_ok(r->error, sizeof r->error) ||
        !res_str_ok(r->worker, sizeof r->worker) || !res_str_ok(r->engine_version, sizeof r->engine_version) ||
        !res_str_ok(r->status, sizeof r->status))
        return res_fail(err, n_err, KV_ERR_INVAL, "result: a string field is unterminated or not UTF-8");
    if (strcmp(r->status, "ok") != 0 && strcmp(r->status, "failed") != 0)
        return res_fail(err, n_err, KV_ERR_INVAL, "result: status must be \"ok\" or \"failed\"");
    size_t n_extras = r->extras_json ? strlen(r->extras_json) : 0;
    if (r->extras_json && !kv_utf8_valid(r->extras_json, n_extras))
        return res_fail(err, n_err, KV_ERR_INVAL, "result: extras_json is not valid UTF-8");

    kv_mw w;
    kv_mw_init(&w, KV_JOB_MAX_BYTES);
    kv_mw_map(&w, 13);
    kv_mw_cstr(&w, "attempt");
    kv_mw_int(&w, r->attempt);
    kv_mw_cstr(&w, "engine_version");
    kv_mw_cstr(&w, r->engine_version);
    kv_mw_cstr(&w, "error");
    kv_mw_cstr(&w, r->error);
    kv_mw_cstr(&w, "extras");
    if (r->extras_json)
        kv_mw_str(&w, r->extras_json, n_extras);
    else
        kv_mw_nil(&w);
    kv_mw_cstr(&w, "finished_ms");
    kv_mw_int(&w, r->finished_ms);
    kv_mw_cstr(&w, "job_id");
    kv_mw_cstr(&w, r->job_id);
    kv_mw_cstr(&w, "metrics");
    kv_mw_map(&w, (uint32_t)N_METRICS);
    for (size_t i = 0; i < N_METRICS; i++) {
        const char *p = (const char *)&r->m + metric_defs[i].off;
        kv_mw_cstr(&w, metric_defs[i].name);
        if (metric_defs[i].is_real) {
            double v;
            memcpy(&v, p, sizeof v);
            if (isnan(v))
                kv_mw_nil(&w);
            else
                kv_mw_real(&w, v);
        } else {
            int64_t v;
            memcpy(&v, p, sizeof v);
            kv_mw_int(&w, v);
        }
    }
    kv_mw_cstr(&w, "model_fingerprint");
    kv_mw_cstr(&w, r->model_fingerprint);
    kv_mw_cstr(&w, "started_ms");
    kv_mw_int(&w, r->started_ms);
    kv_mw_cstr(&w, "status");
    kv_mw_cstr(&w, r->status);
    kv_mw_cstr(&w, "sweep");
    kv_mw_cstr(&w, r->sweep);
    kv_mw_cstr(&w, "v");
    kv_mw_int(&w, 1);
    kv_mw_cstr(&w, "worker");
    kv_mw_cstr(&w, r->worker);
    int rc = kv_mw_status(&w);
    if (rc) {
        kv_mw_free(&w);
        if (rc == KV_ERR_LIMIT) return res_fail(err, n_err, rc, "result: encoding exceeds %d bytes", KV_JOB_MAX_BYTES);
        return res_fail(err, n_err, rc, "result: out of memory");
    }
    *out = kv_mw_take(&w, out_len);
    return KV_OK;
}

/* ---- decoding ---------------------------------------------------------- */

static int key_is(const msgpack_object *k, const char *name) {
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(name) &&
           memcmp(k->via.str.ptr, name, k->via.str.size) == 0;
}

static int res_copy(const char *what, const msgpack_object *o, char *dst, size_t cap, char *err, size_t n_err) {
    if (o->type != MSGPACK_OBJECT_STR) return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: expected string", what);
    size_t n = o->via.str.size;
    if (n >= cap) return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: longer than %zu bytes", what, cap - 1);
    if (n && memchr(o->via.str.ptr, '\0', n))
        return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: contains a NUL byte", what);
    if (!kv_utf8_valid(o->via.str.ptr, n)) return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: not UTF-8", what);
    if (n) memcpy(dst, o->via.str.ptr, n);
    dst[n] = '\0';
    return KV_OK;
}

static int res_int(const char *what, const msgpack_object *o, int64_t *v, char *err, size_t n_err) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return KV_OK;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return KV_OK;
    }
    return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: expected an int64", what);
}

/* Unique string keys, all known (names[]), all present; *idx gets, per
 * entry, the index into names. */
static int res_keys(const char *what, const msgpack_object_map *m, const char *const *names, size_t n_names,
                    int *idx, char *err, size_t n_err) {
    if (m->size != n_names)
        return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: %u keys, expected %zu", what, m->size, n_names);
    uint32_t seen[2] = {0, 0}; // n_names <= 64
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: key #%u is not a string", what, i);
        size_t j = 0;
        while (j < n_names && !key_is(k, names[j])) j++;
        if (j == n_names)
            return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: unknown key \"%.*s\"", what,
                            (int)(k->via.str.size > 63 ? 63 : k->via.str.size), k->via.str.ptr);
        if (seen[j / 32] & (1u << (j % 32)))
            return res_fail(err, n_err, KV_ERR_INVAL, "result: %s: duplicate key \"%s\"", what, names[j]);
        seen[j / 32] |= 1u << (j % 32);
        idx[i] = (int)j;
    }
    return KV_OK;
}

static int res_metrics(const msgpack_object *o, kv_metrics *m, char *err, size_t n_err) {
    const char *names[N_METRICS];
    int idx[N_METRICS];
    if (o->type != MSGPACK_OBJECT_MAP) return res_fail(err, n_err, KV_ERR_INVAL, "result: metrics: expected map");
    for (size_t i = 0; i < N_METRICS; i++) names[i] = metric_defs[i].name;
    int rc = res_keys("metrics", &o->via.map, names, N_METRICS, idx, err, n_err);
    if (rc) return rc;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const metric_def *d = &metric_defs[idx[i]];
        const msgpack_object *v = &o->via.map.ptr[i].val;
        char *p = (char *)m + d->off;
        if (d->is_real) {
            double x;
            if (v->type == MSGPACK_OBJECT_NIL)
                x = NAN;
            else if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
                x = v->via.f64;
            else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                x = (double)v->via.u64;
            else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                x = (double)v->via.i64;
            else
                return res_fail(err, n_err, KV_ERR_INVAL, "result: metrics.%s: expected a number or nil", d->name);
            memcpy(p, &x, sizeof x);
        } else {
            int64_t x = 0;
            if ((rc = res_int(d->name, v, &x, err, n_err))) return rc;
            memcpy(p, &x, sizeof x);
        }
    }
    return KV_OK;
}

enum { R_ATTEMPT, R_ENGINE, R_ERROR, R_EXTRAS, R_FINISHED, R_JOB_ID, R_METRICS, R_FP, R_STARTED, R_STATUS, R_SWEEP,
       R_V, R_WORKER, R_COUNT };
static const char *const res_names[R_COUNT] = {"attempt", "engine_version", "error",      "extras", "finished_ms",
                                               "job_id",  "metrics",        "model_fingerprint", "started_ms",
                                               "status",  "sweep",          "v",          "worker"};

static int res_from_object(const msgpack_object *root, kv_result *r, char *err, size_t n_err) {
    int idx[R_COUNT];
    if (root->type != MSGPACK_OBJECT_MAP) return res_fail(err, n_err, KV_ERR_INVAL, "result: expected a map");
    int rc = res_keys("result", &root->via.map, res_names, R_COUNT, idx, err, n_err);
    if (rc) return rc;
    for (uint32_t i = 0; i < R_COUNT; i++) {
        const msgpack_object *v = &root->via.map.ptr[i].val;
        int64_t ver = 0;
        switch (idx[i]) {
        case R_ATTEMPT: rc = res_int("attempt", v, &r->attempt, err, n_err); break;
        case R_ENGINE: rc = res_copy("engine_version", v, r->engine_version, sizeof r->engine_version, err, n_err); break;
        case R_ERROR: rc = res_copy("error", v, r->error, sizeof r->error, err, n_err); break;
        case R_EXTRAS:
            if (v->type == MSGPACK_OBJECT_NIL) break;
            if (v->type != MSGPACK_OBJECT_STR) {
                rc = res_fail(err, n_err, KV_ERR_INVAL, "result: extras: expected string or nil");
                break;
            }
            if ((v->via.str.size && memchr(v->via.str.ptr, '\0', v->via.str.size)) ||
                !kv_utf8_valid(v->via.str.ptr, v->via.str.size)) {
                rc = res_fail(err, n_err, KV_ERR_INVAL, "result: extras: NUL byte or not UTF-8");
                break;
            }
            r->extras_json = malloc(v->via.str.size + 1);
            if (!r->extras_json) {
                rc = res_fail(err, n_err, KV_ERR_NOMEM, "result: out of memory");
                break;
            }
            if (v->via.str.size) memcpy(r->extras_json, v->via.str.ptr, v->via.str.size);
            r->extras_json[v->via.str.size] = '\0';
            break;
        case R_FINISHED: rc = res_int("finished_ms", v, &r->finished_ms, err, n_err); break;
        case R_JOB_ID:
            rc = res_copy("job_id", v, r->job_id, sizeof r->job_id, err, n_err);
            if (!rc && !is_hex64(r->job_id))
                rc = res_fail(err, n_err, KV_ERR_INVAL, "result: job_id: expected 64 lowercase hex digits");
            break;
        case R_METRICS: rc = res_metrics(v, &r->m, err, n_err); break;
        case R_FP:
            rc = res_copy("model_fingerprint", v, r->model_fingerprint, sizeof r->model_fingerprint, err, n_err);
            if (!rc && r->model_fingerprint[0] && !is_hex64(r->model_fingerprint))
                rc = res_fail(err, n_err, KV_ERR_INVAL, "result: model_fingerprint: expected \"\" or 64 hex digits");
            break;
        case R_STARTED: rc = res_int("started_ms", v, &r->started_ms, err, n_err); break;
        case R_STATUS:
            rc = res_copy("status", v, r->status, sizeof r->status, err, n_err);
            if (!rc && strcmp(r->status, "ok") != 0 && strcmp(r->status, "failed") != 0)
                rc = res_fail(err, n_err, KV_ERR_INVAL, "result: status: expected \"ok\" or \"failed\"");
            break;
        case R_SWEEP: rc = res_copy("sweep", v, r->sweep, sizeof r->sweep, err, n_err); break;
        case R_V:
            rc = res_int("v", v, &ver, err, n_err);
            if (!rc && ver != 1) rc = res_fail(err, n_err, KV_ERR_INVAL, "result: v: unsupported version %lld", (long long)ver);
            break;
        default: rc = res_copy("worker", v, r->worker, sizeof r->worker, err, n_err); break;
        }
        if (rc) return rc;
    }
    return KV_OK;
}

/* Contract in job.h. On failure r is cleared (extras_json NULL). */
int kv_result_decode(const void *buf, size_t len, kv_result *r, char *err, size_t n_err) {
    char gerr[160];
    memset(r, 0, sizeof *r);
    kv_metrics_clear(&r->m);
    msgpack_unpacked u;
    int rc = kv_mpack_unpack(&u, buf, len, KV_JOB_MAX_BYTES, gerr, sizeof gerr);
    if (rc) return res_fail(err, n_err, rc, "result: %s", gerr);
    rc = res_from_object(&u.data, r, err, n_err);
    msgpack_unpacked_destroy(&u);
    if (rc) {
        kv_result_free(r);
        memset(r, 0, sizeof *r);
        kv_metrics_clear(&r->m);
    }
    return rc;
}

void kv_result_free(kv_result *r) {
    if (!r) return;
    free(r->extras_json);
    r->extras_json = NULL;
}
