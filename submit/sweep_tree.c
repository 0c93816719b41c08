/* sweep_tree.c — JSON or msgpack bytes into the sw_node tree that sweep.c
 * validates (see sweep_tree.h), and the field-path helpers.
 *
 * JSON: jansson with JSON_REJECT_DUPLICATES (a duplicate key is reported
 * with its line and column) and JSON_ALLOW_NUL (so a "\u0000" inside a
 * name reaches the validator and is reported with its field path).
 * msgpack: size cap and kv_mpack_guard first, then msgpack_unpack_next must
 * consume every byte; duplicate map keys are found here, with the path.
 * The second half turns tree scalars into typed, normalized values against
 * the catalog's kv_param_spec (types, ranges, choices, names, duplicate list
 * values), which sweep.c stores. */
#include "sweep_tree.h"

#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "mpack_write.h"
#include "sweep.h"

struct sw_tree {
    sw_node root;
    json_t *json;
    msgpack_unpacked mp;
    int has_mp;
};

const char *sw_type_name(sw_type t) {
    switch (t) {
    case SW_NULL: return "null";
    case SW_BOOL: return "bool";
    case SW_INT: return "integer";
    case SW_REAL: return "real";
    case SW_STR: return "string";
    case SW_ARR: return "array";
    case SW_OBJ: return "object";
    case SW_BIN: return "binary";
    default: return "extension";
    }
}

/* Printable form of a key for paths: ASCII graphic bytes kept, others '?',
 * at most 48 bytes. */
size_t sw_path_key(sw_path *p, const char *k, size_t n) {
    size_t old = p->len;
    if (p->len && p->len < sizeof p->buf - 1) p->buf[p->len++] = '.';
    for (size_t i = 0; i < n && i < 48 && p->len < sizeof p->buf - 1; i++) {
        unsigned char c = (unsigned char)k[i];
        p->buf[p->len++] = (c > 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n > 48 && p->len < sizeof p->buf - 4) {
        memcpy(p->buf + p->len, "...", 3);
        p->len += 3;
    }
    p->buf[p->len] = '\0';
    return old;
}

size_t sw_path_idx(sw_path *p, size_t i) {
    size_t old = p->len;
    int w = snprintf(p->buf + p->len, sizeof p->buf - p->len, "[%zu]", i);
    if (w > 0) p->len += (size_t)w < sizeof p->buf - p->len ? (size_t)w : sizeof p->buf - 1 - p->len;
    return old;
}

void sw_path_pop(sw_path *p, size_t old) {
    p->len = old;
    p->buf[old] = '\0';
}

int sw_path_fail(sw_path *p, int code, const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->err && p->n_err) {
        if (p->len)
            snprintf(p->err, p->n_err, "%s: %s: %s", p->file, p->buf, msg);
        else
            snprintf(p->err, p->n_err, "%s: %s", p->file, msg);
    }
    return code;
}

static void node_free(sw_node *n) {
    if (n->type == SW_ARR || n->type == SW_OBJ) {
        for (size_t i = 0; i < n->n && n->kids; i++) node_free(&n->kids[i]);
        free(n->kids);
        free(n->keys);
        n->kids = NULL;
        n->keys = NULL;
    }
}

static int node_alloc(sw_node *n, size_t count, int with_keys, sw_path *p) {
    n->n = count;
    if (!count) return KV_OK;
    n->kids = calloc(count, sizeof *n->kids);
    if (with_keys) n->keys = calloc(count, sizeof *n->keys);
    if (!n->kids || (with_keys && !n->keys)) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    return KV_OK;
}

static int from_json(sw_node *n, const json_t *j, int depth, sw_path *p) {
    switch (json_typeof(j)) {
    case JSON_NULL: n->type = SW_NULL; return KV_OK;
    case JSON_TRUE: n->type = SW_BOOL; n->i = 1; return KV_OK;
    case JSON_FALSE: n->type = SW_BOOL; n->i = 0; return KV_OK;
    case JSON_INTEGER: n->type = SW_INT; n->i = (int64_t)json_integer_value(j); return KV_OK;
    case JSON_REAL: n->type = SW_REAL; n->r = json_real_value(j); return KV_OK;
    case JSON_STRING:
        n->type = SW_STR;
        n->s = json_string_value(j);
        n->n = json_string_length(j);
        return KV_OK;
    default: break;
    }
    if (depth >= KV_MPACK_MAX_DEPTH) return sw_path_fail(p, KV_ERR_LIMIT, "nested deeper than %d levels", KV_MPACK_MAX_DEPTH);
    int rc;
    if (json_is_array(j)) {
        n->type = SW_ARR;
        if ((rc = node_alloc(n, json_array_size(j), 0, p))) return rc;
        for (size_t i = 0; i < n->n; i++) {
            size_t old = sw_path_idx(p, i);
            if ((rc = from_json(&n->kids[i], json_array_get(j, i), depth + 1, p))) return rc;
            sw_path_pop(p, old);
        }
        return KV_OK;
    }
    n->type = SW_OBJ;
    if ((rc = node_alloc(n, json_object_size(j), 1, p))) return rc;
    size_t i = 0;
    for (void *it = json_object_iter((json_t *)j); it && i < n->n; it = json_object_iter_next((json_t *)j, it), i++) {
        n->keys[i].s = json_object_iter_key(it);
        n->keys[i].n = json_object_iter_key_len(it);
        size_t old = sw_path_key(p, n->keys[i].s, n->keys[i].n);
        if ((rc = from_json(&n->kids[i], json_object_iter_value(it), depth + 1, p))) return rc;
        sw_path_pop(p, old);
    }
    return KV_OK;
}

static int key_eq(const sw_key *a, const msgpack_object_str *b) {
    return a->n == b->size && (a->n == 0 || memcmp(a->s, b->ptr, a->n) == 0);
}

static int from_mp(sw_node *n, const msgpack_object *o, int depth, sw_path *p) {
    int rc;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: n->type = SW_NULL; return KV_OK;
    case MSGPACK_OBJECT_BOOLEAN: n->type = SW_BOOL; n->i = o->via.boolean ? 1 : 0; return KV_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        n->type = SW_INT;
        n->big = o->via.u64 > (uint64_t)INT64_MAX;
        n->i = n->big ? 0 : (int64_t)o->via.u64;
        return KV_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: n->type = SW_INT; n->i = o->via.i64; return KV_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: n->type = SW_REAL; n->r = o->via.f64; return KV_OK;
    case MSGPACK_OBJECT_STR:
        n->type = SW_STR;
        n->s = o->via.str.ptr;
        n->n = o->via.str.size;
        return KV_OK;
    case MSGPACK_OBJECT_BIN: n->type = SW_BIN; return KV_OK;
    case MSGPACK_OBJECT_EXT: n->type = SW_EXT; return KV_OK;
    default: break;
    }
    if (depth >= KV_MPACK_MAX_DEPTH) return sw_path_fail(p, KV_ERR_LIMIT, "nested deeper than %d levels", KV_MPACK_MAX_DEPTH);
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        n->type = SW_ARR;
        if ((rc = node_alloc(n, o->via.array.size, 0, p))) return rc;
        for (size_t i = 0; i < n->n; i++) {
            size_t old = sw_path_idx(p, i);
            if ((rc = from_mp(&n->kids[i], &o->via.array.ptr[i], depth + 1, p))) return rc;
            sw_path_pop(p, old);
        }
        return KV_OK;
    }
    n->type = SW_OBJ;
    const msgpack_object_map *m = &o->via.map;
    if ((rc = node_alloc(n, m->size, 1, p))) return rc;
    for (size_t i = 0; i < n->n; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return sw_path_fail(p, KV_ERR_INVAL, "key #%zu: expected string, got %s", i,
                                k->type == MSGPACK_OBJECT_POSITIVE_INTEGER || k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                                    ? "integer"
                                    : "a non-string");
        // Quadratic, but a map's size is bounded by the (capped) input and
        // sweep objects are small; lists, the large parts, are arrays.
        for (size_t j = 0; j < i; j++) {
            if (key_eq(&n->keys[j], &k->via.str)) {
                sw_path_key(p, k->via.str.ptr, k->via.str.size);
                return sw_path_fail(p, KV_ERR_INVAL, "duplicate key");
            }
        }
        n->keys[i].s = k->via.str.ptr;
        n->keys[i].n = k->via.str.size;
        size_t old = sw_path_key(p, n->keys[i].s, n->keys[i].n);
        if ((rc = from_mp(&n->kids[i], &m->ptr[i].val, depth + 1, p))) return rc;
        sw_path_pop(p, old);
    }
    return KV_OK;
}

int sw_tree_parse(sw_tree **out, const void *buf, size_t len, int is_json, sw_path *p) {
    *out = NULL;
    if (len > KV_SWEEP_MAX_BYTES)
        return sw_path_fail(p, KV_ERR_LIMIT, "%zu bytes is over the cap of %d bytes", len, KV_SWEEP_MAX_BYTES);
    if (len == 0) return sw_path_fail(p, KV_ERR_FORMAT, "empty file");
    sw_tree *t = calloc(1, sizeof *t);
    if (!t) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    int rc;
    if (is_json) {
        json_error_t je;
        t->json = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
        if (!t->json) {
            free(t);
            rc = json_error_code(&je) == json_error_duplicate_key ? KV_ERR_INVAL : KV_ERR_FORMAT;
            if (json_error_code(&je) == json_error_out_of_memory) rc = KV_ERR_NOMEM;
            return sw_path_fail(p, rc, "line %d, column %d: %s", je.line, je.column, je.text);
        }
        rc = from_json(&t->root, t->json, 0, p);
    } else {
        char gerr[160];
        rc = kv_mpack_unpack(&t->mp, buf, len, KV_SWEEP_MAX_BYTES, gerr, sizeof gerr);
        if (rc) {
            free(t);
            return sw_path_fail(p, rc, "%s", gerr);
        }
        t->has_mp = 1;
        rc = from_mp(&t->root, &t->mp.data, 0, p);
    }
    if (rc) {
        sw_tree_free(t);
        return rc;
    }
    *out = t;
    return KV_OK;
}

const sw_node *sw_tree_root(const sw_tree *t) { return &t->root; }

void sw_tree_free(sw_tree *t) {
    if (!t) return;
    node_free(&t->root);
    if (t->json) json_decref(t->json);
    if (t->has_mp) msgpack_unpacked_destroy(&t->mp);
    free(t);
}

/* ---- typed values ------------------------------------------------------ */

void sw_val_free(sw_val *v) {
    if (v->type == KV_VAL_STR) free(v->s);
    v->s = NULL;
}

static char *dup_bytes(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- values ------------------------------------------------------------ */

static int range_fail(sw_path *p, const kv_param_spec *ps, double x) {
    if (ps->hi >= 9e18)
        return sw_path_fail(p, KV_ERR_INVAL, "must be %s %.15g, got %.17g", ps->lo_open ? ">" : ">=", ps->lo, x);
    return sw_path_fail(p, KV_ERR_INVAL, "must be in %c%.15g, %.15g%c, got %.17g", ps->lo_open ? '(' : '[', ps->lo,
                        ps->hi, ps->hi_open ? ')' : ']', x);
}

static int in_range(const kv_param_spec *ps, double x) {
    if (ps->lo_open ? !(x > ps->lo) : !(x >= ps->lo)) return 0;
    return ps->hi_open ? x < ps->hi : x <= ps->hi;
}

/* A layer list as the engine reads it: digits separated by ';' ',' ':' or
 * ' ', or "none", or "" (no layer). */
static int layers_ok(const char *s, size_t n) {
    if (n == 4 && memcmp(s, "none", 4) == 0) return 1;
    for (size_t i = 0; i < n;) {
        size_t d = i;
        while (d < n && s[d] >= '0' && s[d] <= '9') d++;
        if (d == i || d - i > 9) return 0;
        if (d < n && !(s[d] == ';' || s[d] == ',' || s[d] == ':' || s[d] == ' ')) return 0;
        i = d + (d < n);
        if (d < n && i == n) return 0; // trailing separator
    }
    return 1;
}

/* One scalar of a known parameter, normalized: INT params take integral
 * reals; NUM params become integers when integral (canonical rule). */
int sw_val_parse(sw_path *p, const sw_node *n, const kv_param_spec *ps, sw_val *out) {
    memset(out, 0, sizeof *out);
    switch (ps->kind) {
    case KV_PK_INT:
    case KV_PK_NUM: {
        double x;
        if (n->type == SW_INT) {
            if (n->big) return sw_path_fail(p, KV_ERR_INVAL, "integer out of range");
            out->type = KV_VAL_INT;
            out->i = n->i;
            x = (double)n->i;
        } else if (n->type == SW_REAL) {
            if (!isfinite(n->r)) return sw_path_fail(p, KV_ERR_INVAL, "expected a finite number");
            if (kv_mw_real_is_int(n->r, &out->i)) {
                out->type = KV_VAL_INT;
            } else if (ps->kind == KV_PK_INT) {
                return sw_path_fail(p, KV_ERR_INVAL, "expected integer, got real %g", n->r);
            } else {
                out->type = KV_VAL_REAL;
                out->r = n->r;
            }
            x = n->r;
        } else {
            return sw_path_fail(p, KV_ERR_INVAL, "expected %s, got %s", ps->kind == KV_PK_INT ? "integer" : "number",
                                sw_type_name(n->type));
        }
        if (!in_range(ps, x)) return range_fail(p, ps, x);
        return KV_OK;
    }
    case KV_PK_BOOL:
        if (n->type != SW_BOOL) return sw_path_fail(p, KV_ERR_INVAL, "expected bool, got %s", sw_type_name(n->type));
        out->type = KV_VAL_BOOL;
        out->i = n->i;
        return KV_OK;
    case KV_PK_LAYERS:
        if (n->type == SW_INT && !n->big) {
            if (n->i < 0) return sw_path_fail(p, KV_ERR_INVAL, "must be >= 0, got %lld", (long long)n->i);
            out->type = KV_VAL_INT;
            out->i = n->i;
            return KV_OK;
        }
        if (n->type == SW_REAL && kv_mw_real_is_int(n->r, &out->i) && out->i >= 0) {
            out->type = KV_VAL_INT;
            return KV_OK;
        }
        if (n->type != SW_STR || !layers_ok(n->s, n->n))
            return sw_path_fail(p, KV_ERR_INVAL, "expected an index >= 0 or a list like \"0;1\", got %s",
                                sw_type_name(n->type));
        out->type = KV_VAL_STR;
        out->s = dup_bytes(n->s, n->n);
        if (!out->s) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
        return KV_OK;
    case KV_PK_STR:
    case KV_PK_NAME:
        if (n->type != SW_STR) return sw_path_fail(p, KV_ERR_INVAL, "expected string, got %s", sw_type_name(n->type));
        if (ps->kind == KV_PK_NAME) {
            const char *why = kv_name_problem(n->s, n->n);
            if (why) return sw_path_fail(p, KV_ERR_INVAL, "name %s", why);
        } else if (!ps->choices) {   /* free text (a policy spec string); the engine parses it */
            if (n->n == 0 || n->n > 255 || !kv_utf8_valid(n->s, n->n))
                return sw_path_fail(p, KV_ERR_INVAL, "expected 1-255 bytes of UTF-8 text");
        } else {
            const char *const *c = ps->choices;
            while (c && *c && !(strlen(*c) == n->n && memcmp(*c, n->s, n->n) == 0)) c++;
            if (!c || !*c) {
                char list[160] = "";
                size_t len = 0;
                for (c = ps->choices; c && *c && len < sizeof list - 1; c++) {
                    int w = snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", *c);
                    if (w > 0) len += (size_t)w;
                }
                return sw_path_fail(p, KV_ERR_INVAL, "must be one of %s; got \"%.*s\"", list,
                                    (int)(n->n > 40 ? 40 : n->n), kv_utf8_valid(n->s, n->n) ? n->s : "?");
            }
        }
        out->type = KV_VAL_STR;
        out->s = dup_bytes(n->s, n->n);
        if (!out->s) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
        return KV_OK;
    }
    return sw_path_fail(p, KV_ERR_INVAL, "internal: bad parameter kind");
}

static int sw_val_cmp(const sw_val *a, const sw_val *b) {
    if (a->type != b->type) return a->type < b->type ? -1 : 1;
    switch (a->type) {
    case KV_VAL_REAL: return a->r < b->r ? -1 : a->r > b->r;
    case KV_VAL_STR: return strcmp(a->s, b->s);
    default: return a->i < b->i ? -1 : a->i > b->i;
    }
}

typedef struct val_ref {
    const sw_val *v;
    size_t idx;
} val_ref;

static int ref_cmp(const void *x, const void *y) {
    const val_ref *a = x, *b = y;
    int c = sw_val_cmp(a->v, b->v);
    if (c) return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Refuses repeated values in a list (they would only repeat jobs). */
static int list_unique(sw_path *p, const sw_val *v, size_t n) {
    if (n < 2) return KV_OK;
    val_ref *r = malloc(n * sizeof *r);
    if (!r) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) r[i] = (val_ref){&v[i], i};
    qsort(r, n, sizeof *r, ref_cmp);
    for (size_t i = 1; i < n; i++) {
        if (sw_val_cmp(r[i - 1].v, r[i].v) == 0) {
            size_t a = r[i - 1].idx, b = r[i].idx;
            free(r);
            sw_path_idx(p, b);
            return sw_path_fail(p, KV_ERR_INVAL, "duplicate value (same as [%zu])", a);
        }
    }
    free(r);
    return KV_OK;
}

/* A non-empty list of values of one kind (models, seeds). */
int sw_list_parse(sw_path *p, const sw_node *n, const kv_param_spec *ps, sw_val **out, size_t *n_out) {
    if (n->type != SW_ARR) return sw_path_fail(p, KV_ERR_INVAL, "expected array, got %s", sw_type_name(n->type));
    if (n->n == 0) return sw_path_fail(p, KV_ERR_INVAL, "empty list");
    if (n->n > KV_SWEEP_MAX_JOBS)
        return sw_path_fail(p, KV_ERR_LIMIT, "%zu entries: the grid would exceed %d jobs", n->n, KV_SWEEP_MAX_JOBS);
    *out = calloc(n->n, sizeof **out);
    if (!*out) return sw_path_fail(p, KV_ERR_NOMEM, "out of memory");
    *n_out = n->n;
    for (size_t i = 0; i < n->n; i++) {
        size_t old = sw_path_idx(p, i);
        int rc = sw_val_parse(p, &n->kids[i], ps, &(*out)[i]);
        if (rc) return rc;
        sw_path_pop(p, old);
    }
    return list_unique(p, *out, *n_out);
}

