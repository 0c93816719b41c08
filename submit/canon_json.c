/* canon_json.c — the canonical JSON text of a kv_params map, as stored in
 * results.db's params_json / task_params_json / spec_json columns.
 *
 * Canonical means equal params give equal text, so SQL can compare and
 * group them as strings: keys in kv_params order (sorted by key), compact
 * separators, integers in decimal, booleans as true/false, reals in the
 * shortest %g form that reads back to the same double (always with a '.'
 * or an exponent, so they stay reals), strings escaped per RFC 8259 (", \
 * and control characters; other bytes pass through). Non-finite reals have
 * no JSON form and are refused. It does not parse JSON. */
#include "canon_json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jbuf {
    char *p;
    size_t n, cap;
    int oom;
} jbuf;

static void jb_put(jbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void jb_str(jbuf *b, const char *s, size_t n) {
    jb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            jb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            jb_put(b, esc, 6);
        } else {
            jb_put(b, (const char *)&s[i], 1);
        }
    }
    jb_put(b, "\"", 1);
}

/* Shortest %g text that reads back as the same double, always with a '.' or
 * an exponent so it stays a JSON real. */
static void jb_real(jbuf *b, double v) {
    char t[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, v);
        if (strtod(t, NULL) == v) break;
    }
    if (!strpbrk(t, ".eE")) strcat(t, ".0");
    jb_put(b, t, strlen(t));
}

/* {"key":value,...} in the order of ps (kv_params is sorted by key), NULL for
 * ps == NULL. Non-finite reals cannot be JSON: KV_ERR_INVAL. */
int sub_params_json(const kv_params *ps, const char *what, char **out, char *err, size_t n_err) {
    *out = NULL;
    if (!ps) return KV_OK;
    if (ps->n < 0 || ps->n > KV_MAX_PARAMS) {
        snprintf(err, n_err, "results.db: %s: bad count %d", what, ps->n);
        return KV_ERR_INVAL;
    }
    jbuf b = {0};
    jb_put(&b, "{", 1);
    for (int i = 0; i < ps->n; i++) {
        const kv_param *p = &ps->p[i];
        char num[32];
        if (i) jb_put(&b, ",", 1);
        jb_str(&b, p->key, strnlen(p->key, sizeof p->key));
        jb_put(&b, ":", 1);
        switch (p->type) {
        case KV_VAL_INT:
            snprintf(num, sizeof num, "%" PRId64, p->i);
            jb_put(&b, num, strlen(num));
            break;
        case KV_VAL_BOOL: jb_put(&b, p->i ? "true" : "false", p->i ? 4 : 5); break;
        case KV_VAL_REAL:
            if (!isfinite(p->r)) {
                free(b.p);
                snprintf(err, n_err, "results.db: %s.%.64s: non-finite number", what, p->key);
                return KV_ERR_INVAL;
            }
            jb_real(&b, p->r);
            break;
        case KV_VAL_STR: jb_str(&b, p->s, strnlen(p->s, sizeof p->s)); break;
        default:
            free(b.p);
            snprintf(err, n_err, "results.db: %s.%.64s: unknown value type %d", what, p->key, (int)p->type);
            return KV_ERR_INVAL;
        }
    }
    jb_put(&b, "}", 1);
    if (b.oom) {
        free(b.p);
        snprintf(err, n_err, "results.db: out of memory");
        return KV_ERR_NOMEM;
    }
    *out = b.p;
    return KV_OK;
}
