/* job.c — the job wire format: canonical msgpack encoding, guarded
 * decoding, and the job_id (SHA-256 of the canonical bytes).
 *
 * Why canonical: the job_id is results.db's primary key and what makes a
 * redelivered job a no-op, so equal jobs must give equal bytes on every box.
 * The encoder sorts map keys bytewise, writes integers in their shortest
 * form and integral reals as integers (mpack_write.c), and omits "spec" and
 * "nonce" when absent. The decoder accepts exactly that form: after checking
 * the schema (types, ranges, required/unknown/duplicate keys, NULs, UTF-8)
 * it re-runs the encoder in compare mode over the received bytes, so a
 * decoded job always re-encodes to the same bytes and the same id.
 *
 * Input from Redis is outside input: kv_mpack_guard runs first (size cap,
 * declared lengths vs remaining bytes, depth), then msgpack_unpack_next must
 * return SUCCESS with every byte consumed. Nothing is allocated beyond
 * msgpack-c's zone for this message. Results live in job_result.c, the
 * catalog of policies in job_catalog.c. */
#include "job.h"

#include <math.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mpack_write.h"

static int job_fail(char *err, size_t n_err, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int job_fail(char *err, size_t n_err, int code, const char *fmt, ...) {
    if (err && n_err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n_err, fmt, ap);
        va_end(ap);
    }
    return code;
}

void kv_sha256_hex(const void *buf, size_t len, char out[KV_JOB_ID_HEX]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) || n != 32) {
        out[0] = '\0'; // libcrypto failure: an empty id never matches anything
        return;
    }
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

const kv_param *kv_params_get(const kv_params *ps, const char *key) {
    if (!ps || !key) return NULL;
    for (int i = 0; i < ps->n && i < KV_MAX_PARAMS; i++)
        if (strcmp(ps->p[i].key, key) == 0) return &ps->p[i];
    return NULL;
}

/* ---- encoding ---------------------------------------------------------- */

/* 1 when the fixed-size field holds a NUL-terminated string. */
static int field_ok(const char *s, size_t cap) { return memchr(s, '\0', cap) != NULL; }

static int check_str(const char *what, const char *s, size_t cap, int may_be_empty, char *err, size_t n_err) {
    if (!field_ok(s, cap)) return job_fail(err, n_err, KV_ERR_INVAL, "job: %s is not terminated", what);
    size_t n = strlen(s);
    if (!n && !may_be_empty) return job_fail(err, n_err, KV_ERR_INVAL, "job: %s is empty", what);
    if (!kv_utf8_valid(s, n)) return job_fail(err, n_err, KV_ERR_INVAL, "job: %s is not valid UTF-8", what);
    return KV_OK;
}

/* Validates a params block and writes into ord[] its indices in key order. */
static int params_check(const char *what, const kv_params *ps, int ord[KV_MAX_PARAMS], char *err, size_t n_err) {
    if (ps->n < 0 || ps->n > KV_MAX_PARAMS)
        return job_fail(err, n_err, KV_ERR_INVAL, "job: %s has %d entries (0..%d)", what, ps->n, KV_MAX_PARAMS);
    for (int i = 0; i < ps->n; i++) {
        const kv_param *p = &ps->p[i];
        char name[96];
        snprintf(name, sizeof name, "%s key #%d", what, i);
        int rc = check_str(name, p->key, sizeof p->key, 0, err, n_err);
        if (rc) return rc;
        switch (p->type) {
        case KV_VAL_INT: break;
        case KV_VAL_BOOL:
            if (p->i != 0 && p->i != 1)
                return job_fail(err, n_err, KV_ERR_INVAL, "job: %s.%s: bool must be 0 or 1", what, p->key);
            break;
        case KV_VAL_REAL:
            if (!isfinite(p->r))
                return job_fail(err, n_err, KV_ERR_INVAL, "job: %s.%s: real must be finite", what, p->key);
            break;
        case KV_VAL_STR:
            snprintf(name, sizeof name, "%s.%s", what, p->key);
            rc = check_str(name, p->s, sizeof p->s, 1, err, n_err);
            if (rc) return rc;
            break;
        default: return job_fail(err, n_err, KV_ERR_INVAL, "job: %s.%s: unknown value type %d", what, p->key, p->type);
        }
        // Insertion sort by key; equal keys are a caller bug.
        int j = i;
        while (j > 0) {
            int c = strcmp(ps->p[ord[j - 1]].key, p->key);
            if (c == 0) return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: duplicate key \"%s\"", what, p->key);
            if (c < 0) break;
            ord[j] = ord[j - 1];
            j--;
        }
        ord[j] = i;
    }
    return KV_OK;
}

static void write_params(kv_mw *w, const kv_params *ps, const int ord[KV_MAX_PARAMS]) {
    kv_mw_map(w, (uint32_t)ps->n);
    for (int k = 0; k < ps->n; k++) {
        const kv_param *p = &ps->p[ord[k]];
        kv_mw_cstr(w, p->key);
        switch (p->type) {
        case KV_VAL_INT: kv_mw_int(w, p->i); break;
        case KV_VAL_REAL: kv_mw_num(w, p->r); break;
        case KV_VAL_BOOL: kv_mw_bool(w, (int)p->i); break;
        default: kv_mw_cstr(w, p->s); break;
        }
    }
}

typedef struct job_order {
    int task_params[KV_MAX_PARAMS], params[KV_MAX_PARAMS], spec[KV_MAX_PARAMS];
} job_order;

static int job_check(const kv_job *j, job_order *o, char *err, size_t n_err) {
    int rc;
    if ((rc = check_str("sweep", j->sweep, sizeof j->sweep, 0, err, n_err)) ||
        (rc = check_str("model", j->model, sizeof j->model, 0, err, n_err)) ||
        (rc = check_str("dataset", j->dataset, sizeof j->dataset, 0, err, n_err)) ||
        (rc = check_str("task", j->task, sizeof j->task, 0, err, n_err)) ||
        (rc = check_str("policy", j->policy, sizeof j->policy, 0, err, n_err)) ||
        (rc = check_str("nonce", j->nonce, sizeof j->nonce, 1, err, n_err)))
        return rc;
    if (j->doc < 0 || j->offset < 0 || j->tokens < 0 || j->repeat < 0)
        return job_fail(err, n_err, KV_ERR_INVAL, "job: doc, offset, tokens and repeat must be >= 0");
    if ((rc = params_check("task_params", &j->task_params, o->task_params, err, n_err)) ||
        (rc = params_check("params", &j->params, o->params, err, n_err)))
        return rc;
    if (j->has_spec && (rc = params_check("spec", &j->spec, o->spec, err, n_err))) return rc;
    return KV_OK;
}

/* The canonical map; keys in bytewise order. */
static void job_write(kv_mw *w, const kv_job *j, const job_order *o) {
    int has_nonce = j->nonce[0] != '\0';
    kv_mw_map(w, (uint32_t)(13 + (j->has_spec ? 1 : 0) + has_nonce));
    kv_mw_cstr(w, "dataset");
    kv_mw_cstr(w, j->dataset);
    kv_mw_cstr(w, "doc");
    kv_mw_int(w, j->doc);
    kv_mw_cstr(w, "model");
    kv_mw_cstr(w, j->model);
    if (has_nonce) {
        kv_mw_cstr(w, "nonce");
        kv_mw_cstr(w, j->nonce);
    }
    kv_mw_cstr(w, "offset");
    kv_mw_int(w, j->offset);
    kv_mw_cstr(w, "params");
    write_params(w, &j->params, o->params);
    kv_mw_cstr(w, "policy");
    kv_mw_cstr(w, j->policy);
    kv_mw_cstr(w, "repeat");
    kv_mw_int(w, j->repeat);
    kv_mw_cstr(w, "seed");
    kv_mw_int(w, j->seed);
    if (j->has_spec) {
        kv_mw_cstr(w, "spec");
        write_params(w, &j->spec, o->spec);
    }
    kv_mw_cstr(w, "sweep");
    kv_mw_cstr(w, j->sweep);
    kv_mw_cstr(w, "task");
    kv_mw_cstr(w, j->task);
    kv_mw_cstr(w, "task_params");
    write_params(w, &j->task_params, o->task_params);
    kv_mw_cstr(w, "tokens");
    kv_mw_int(w, j->tokens);
    kv_mw_cstr(w, "v");
    kv_mw_int(w, 1);
}

/* Contract in job.h. On failure *out is NULL and job->job_id is "". */
int kv_job_encode(kv_job *job, unsigned char **out, size_t *out_len, char *err, size_t n_err) {
    job_order o;
    *out = NULL;
    *out_len = 0;
    job->job_id[0] = '\0';
    int rc = job_check(job, &o, err, n_err);
    if (rc) return rc;
    kv_mw w;
    kv_mw_init(&w, KV_JOB_MAX_BYTES);
    job_write(&w, job, &o);
    rc = kv_mw_status(&w);
    if (rc) {
        kv_mw_free(&w);
        if (rc == KV_ERR_LIMIT) return job_fail(err, n_err, rc, "job: encoding exceeds %d bytes", KV_JOB_MAX_BYTES);
        return job_fail(err, n_err, rc, "job: out of memory");
    }
    *out = kv_mw_take(&w, out_len);
    kv_sha256_hex(*out, *out_len, job->job_id);
    return KV_OK;
}

/* ---- decoding ---------------------------------------------------------- */

static const char *obj_type_name(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "real";
    case MSGPACK_OBJECT_STR: return "string";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "binary";
    default: return "extension";
    }
}

/* Copies a msgpack STR (not NUL-terminated) into dst[cap]. */
static int copy_str(const char *what, const msgpack_object *o, char *dst, size_t cap, int may_be_empty, char *err,
                    size_t n_err) {
    if (o->type != MSGPACK_OBJECT_STR)
        return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: expected string, got %s", what, obj_type_name(o));
    size_t n = o->via.str.size;
    if (n >= cap) return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: %zu bytes, the limit is %zu", what, n, cap - 1);
    if (!n && !may_be_empty) return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: empty string", what);
    if (n && memchr(o->via.str.ptr, '\0', n))
        return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: contains a NUL byte", what);
    if (!kv_utf8_valid(o->via.str.ptr, n))
        return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: not valid UTF-8", what);
    if (n) memcpy(dst, o->via.str.ptr, n);
    dst[n] = '\0';
    return KV_OK;
}

static int get_int(const char *what, const msgpack_object *o, int64_t lo, int64_t *v, char *err, size_t n_err) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: integer out of range", what);
        *v = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
    } else {
        return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: expected integer, got %s", what, obj_type_name(o));
    }
    if (*v < lo)
        return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: %lld is out of range (>= %lld)", what, (long long)*v,
                        (long long)lo);
    return KV_OK;
}

/* Bytewise order of two msgpack strings: <0, 0, >0. */
static int str_cmp(const msgpack_object_str *a, const msgpack_object_str *b) {
    size_t n = a->size < b->size ? a->size : b->size;
    int c = n ? memcmp(a->ptr, b->ptr, n) : 0;
    if (c) return c;
    return a->size < b->size ? -1 : a->size > b->size;
}

/* Map keys must be strings and unique (order is checked by the canonical
 * comparison afterwards). */
static int map_keys_check(const char *what, const msgpack_object_map *m, char *err, size_t n_err) {
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: key #%u is %s, expected string", what, i,
                            obj_type_name(k));
        for (uint32_t j = 0; j < i; j++) {
            if (str_cmp(&m->ptr[j].key.via.str, &k->via.str) == 0)
                return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: duplicate key \"%.*s\"", what,
                                (int)(k->via.str.size > 63 ? 63 : k->via.str.size), k->via.str.ptr);
        }
    }
    return KV_OK;
}

static int decode_params(const char *what, const msgpack_object *o, kv_params *ps, char *err, size_t n_err) {
    if (o->type != MSGPACK_OBJECT_MAP)
        return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: expected map, got %s", what, obj_type_name(o));
    const msgpack_object_map *m = &o->via.map;
    if (m->size > KV_MAX_PARAMS)
        return job_fail(err, n_err, KV_ERR_LIMIT, "job: %s: %u entries, the limit is %d", what, m->size,
                        KV_MAX_PARAMS);
    int rc = map_keys_check(what, m, err, n_err);
    if (rc) return rc;
    ps->n = (int)m->size;
    for (uint32_t i = 0; i < m->size; i++) {
        kv_param *p = &ps->p[i];
        char name[128];
        snprintf(name, sizeof name, "%s key #%u", what, i);
        if ((rc = copy_str(name, &m->ptr[i].key, p->key, sizeof p->key, 0, err, n_err))) return rc;
        snprintf(name, sizeof name, "%s.%s", what, p->key);
        const msgpack_object *v = &m->ptr[i].val;
        switch (v->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            p->type = KV_VAL_INT;
            if ((rc = get_int(name, v, INT64_MIN, &p->i, err, n_err))) return rc;
            break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            p->type = KV_VAL_REAL;
            p->r = v->via.f64;
            if (!isfinite(p->r)) return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: real is not finite", name);
            break;
        case MSGPACK_OBJECT_BOOLEAN:
            p->type = KV_VAL_BOOL;
            p->i = v->via.boolean ? 1 : 0;
            break;
        case MSGPACK_OBJECT_STR:
            p->type = KV_VAL_STR;
            if ((rc = copy_str(name, v, p->s, sizeof p->s, 1, err, n_err))) return rc;
            break;
        default:
            return job_fail(err, n_err, KV_ERR_INVAL, "job: %s: expected a scalar, got %s", name, obj_type_name(v));
        }
    }
    return KV_OK;
}

enum {
    K_DATASET, K_DOC, K_MODEL, K_NONCE, K_OFFSET, K_PARAMS, K_POLICY, K_REPEAT, K_SEED, K_SPEC, K_SWEEP, K_TASK,
    K_TASK_PARAMS, K_TOKENS, K_V, K_COUNT
};
static const char *const job_keys[K_COUNT] = {"dataset", "doc",    "model", "nonce",  "offset",
                                              "params",  "policy", "repeat", "seed",  "spec",
                                              "sweep",   "task",   "task_params", "tokens", "v"};

static int key_index(const msgpack_object_str *k) {
    for (int i = 0; i < K_COUNT; i++)
        if (strlen(job_keys[i]) == k->size && memcmp(job_keys[i], k->ptr, k->size) == 0) return i;
    return -1;
}

static int job_from_object(const msgpack_object *root, kv_job *j, char *err, size_t n_err) {
    if (root->type != MSGPACK_OBJECT_MAP)
        return job_fail(err, n_err, KV_ERR_INVAL, "job: expected a map, got %s", obj_type_name(root));
    const msgpack_object_map *m = &root->via.map;
    int rc = map_keys_check("job", m, err, n_err);
    if (rc) return rc;
    unsigned seen = 0;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object_str *k = &m->ptr[i].key.via.str;
        const msgpack_object *v = &m->ptr[i].val;
        int ki = key_index(k);
        if (ki < 0)
            return job_fail(err, n_err, KV_ERR_INVAL, "job: unknown key \"%.*s\"", (int)(k->size > 63 ? 63 : k->size),
                            k->ptr);
        seen |= 1u << ki;
        int64_t ver = 0;
        switch (ki) {
        case K_DATASET: rc = copy_str("dataset", v, j->dataset, sizeof j->dataset, 0, err, n_err); break;
        case K_DOC: rc = get_int("doc", v, 0, &j->doc, err, n_err); break;
        case K_MODEL: rc = copy_str("model", v, j->model, sizeof j->model, 0, err, n_err); break;
        case K_NONCE: rc = copy_str("nonce", v, j->nonce, sizeof j->nonce, 0, err, n_err); break;
        case K_OFFSET: rc = get_int("offset", v, 0, &j->offset, err, n_err); break;
        case K_PARAMS: rc = decode_params("params", v, &j->params, err, n_err); break;
        case K_POLICY: rc = copy_str("policy", v, j->policy, sizeof j->policy, 0, err, n_err); break;
        case K_REPEAT: rc = get_int("repeat", v, 0, &j->repeat, err, n_err); break;
        case K_SEED: rc = get_int("seed", v, INT64_MIN, &j->seed, err, n_err); break;
        case K_SPEC:
            j->has_spec = 1;
            rc = decode_params("spec", v, &j->spec, err, n_err);
            break;
        case K_SWEEP: rc = copy_str("sweep", v, j->sweep, sizeof j->sweep, 0, err, n_err); break;
        case K_TASK: rc = copy_str("task", v, j->task, sizeof j->task, 0, err, n_err); break;
        case K_TASK_PARAMS: rc = decode_params("task_params", v, &j->task_params, err, n_err); break;
        case K_TOKENS: rc = get_int("tokens", v, 0, &j->tokens, err, n_err); break;
        default:
            rc = get_int("v", v, INT64_MIN, &ver, err, n_err);
            if (!rc && ver != 1)
                rc = job_fail(err, n_err, KV_ERR_INVAL, "job: v: unsupported format version %lld", (long long)ver);
            break;
        }
        if (rc) return rc;
    }
    for (int ki = 0; ki < K_COUNT; ki++) {
        if (ki == K_NONCE || ki == K_SPEC) continue;
        if (!(seen & (1u << ki))) return job_fail(err, n_err, KV_ERR_INVAL, "job: missing key \"%s\"", job_keys[ki]);
    }
    return KV_OK;
}

/* Contract in job.h. Errors: KV_ERR_LIMIT (over the size cap or the depth
 * limit), KV_ERR_FORMAT (malformed or truncated bytes, trailing bytes, not
 * in canonical form), KV_ERR_INVAL (schema: types, ranges, required, unknown
 * and duplicate keys, NULs), KV_ERR_NOMEM. job is zeroed on failure. */
int kv_job_decode(const void *buf, size_t len, kv_job *job, char *err, size_t n_err) {
    char gerr[160];
    memset(job, 0, sizeof *job);
    msgpack_unpacked u;
    int rc = kv_mpack_unpack(&u, buf, len, KV_JOB_MAX_BYTES, gerr, sizeof gerr);
    if (rc) return job_fail(err, n_err, rc, "job: %s", gerr);
    rc = job_from_object(&u.data, job, err, n_err);
    msgpack_unpacked_destroy(&u); // every string has been copied out
    if (rc) goto fail;

    // Canonical form: re-encoding must reproduce the received bytes exactly.
    job_order o;
    if ((rc = job_check(job, &o, err, n_err))) goto fail;
    kv_mw w;
    kv_mw_init_compare(&w, buf, len);
    job_write(&w, job, &o);
    if (kv_mw_status(&w) != KV_OK) {
        rc = job_fail(err, n_err, KV_ERR_FORMAT, "job: not in canonical form (first difference at byte %zu)",
                      w.fail ? w.fail_off : w.len);
        goto fail;
    }
    kv_sha256_hex(buf, len, job->job_id);
    return KV_OK;
fail:
    memset(job, 0, sizeof *job);
    return rc;
}
