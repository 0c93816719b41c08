/* mpack_write.c — canonical msgpack writer (see mpack_write.h).
 *
 * Big-endian headers are assembled into a small local array and go through
 * one function, mw_put, which either appends to the growing buffer or
 * compares against the reference. Nothing here knows about jobs. */
#include "mpack_write.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"

void kv_mw_init(kv_mw *w, size_t limit) {
    memset(w, 0, sizeof *w);
    w->limit = limit;
}

void kv_mw_init_compare(kv_mw *w, const void *ref, size_t ref_len) {
    memset(w, 0, sizeof *w);
    w->ref = ref;
    w->ref_len = ref_len;
    w->limit = ref_len;
}

int kv_mw_status(const kv_mw *w) {
    if (w->fail) return w->fail;
    if (w->ref && w->len != w->ref_len) return KV_ERR_FORMAT;
    return KV_OK;
}

unsigned char *kv_mw_take(kv_mw *w, size_t *len) {
    unsigned char *b = w->buf;
    *len = w->len;
    w->buf = NULL;
    w->cap = w->len = 0;
    return b;
}

void kv_mw_free(kv_mw *w) {
    free(w->buf);
    w->buf = NULL;
    w->cap = w->len = 0;
}

static void mw_put(kv_mw *w, const void *src, size_t n) {
    if (w->fail) return;
    if (n > w->limit - w->len) {
        // In compare mode, running past the reference is a mismatch, not a limit.
        w->fail = w->ref ? KV_ERR_FORMAT : KV_ERR_LIMIT;
        w->fail_off = w->len;
        return;
    }
    if (w->ref) {
        const unsigned char *a = w->ref + w->len, *b = src;
        for (size_t i = 0; i < n; i++) {
            if (a[i] != b[i]) {
                w->fail = KV_ERR_FORMAT;
                w->fail_off = w->len + i;
                return;
            }
        }
        w->len += n;
        return;
    }
    if (n > w->cap - w->len) {
        size_t want = w->cap ? w->cap : 256;
        while (want - w->len < n) want = want > SIZE_MAX / 2 ? SIZE_MAX : want * 2;
        if (want > w->limit) want = w->limit;
        unsigned char *nb = realloc(w->buf, want);
        if (!nb) {
            w->fail = KV_ERR_NOMEM;
            return;
        }
        w->buf = nb;
        w->cap = want;
    }
    memcpy(w->buf + w->len, src, n);
    w->len += n;
}

/* Header byte followed by an n-byte big-endian value. */
static void mw_head(kv_mw *w, unsigned char tag, uint64_t v, int n) {
    unsigned char b[9];
    b[0] = tag;
    for (int i = 0; i < n; i++) b[1 + i] = (unsigned char)(v >> (8 * (n - 1 - i)));
    mw_put(w, b, (size_t)n + 1);
}

void kv_mw_map(kv_mw *w, uint32_t n) {
    if (n < 16) {
        unsigned char b = (unsigned char)(0x80 | n);
        mw_put(w, &b, 1);
    } else if (n <= 0xffff) {
        mw_head(w, 0xde, n, 2);
    } else {
        mw_head(w, 0xdf, n, 4);
    }
}

void kv_mw_array(kv_mw *w, uint32_t n) {
    if (n < 16) {
        unsigned char b = (unsigned char)(0x90 | n);
        mw_put(w, &b, 1);
    } else if (n <= 0xffff) {
        mw_head(w, 0xdc, n, 2);
    } else {
        mw_head(w, 0xdd, n, 4);
    }
}

void kv_mw_str(kv_mw *w, const char *s, size_t n) {
    if (n > 0xffffffffu) {
        if (!w->fail) w->fail = KV_ERR_LIMIT;
        return;
    }
    if (n < 32) {
        unsigned char b = (unsigned char)(0xa0 | n);
        mw_put(w, &b, 1);
    } else if (n <= 0xff) {
        mw_head(w, 0xd9, n, 1);
    } else if (n <= 0xffff) {
        mw_head(w, 0xda, n, 2);
    } else {
        mw_head(w, 0xdb, n, 4);
    }
    mw_put(w, s, n);
}

void kv_mw_cstr(kv_mw *w, const char *s) { kv_mw_str(w, s, strlen(s)); }

void kv_mw_int(kv_mw *w, int64_t v) {
    if (v >= 0) {
        uint64_t u = (uint64_t)v;
        if (u <= 0x7f) {
            unsigned char b = (unsigned char)u;
            mw_put(w, &b, 1);
        } else if (u <= 0xff) {
            mw_head(w, 0xcc, u, 1);
        } else if (u <= 0xffff) {
            mw_head(w, 0xcd, u, 2);
        } else if (u <= 0xffffffffu) {
            mw_head(w, 0xce, u, 4);
        } else {
            mw_head(w, 0xcf, u, 8);
        }
        return;
    }
    if (v >= -32) {
        unsigned char b = (unsigned char)(int8_t)v;
        mw_put(w, &b, 1);
    } else if (v >= INT8_MIN) {
        mw_head(w, 0xd0, (uint64_t)v & 0xff, 1);
    } else if (v >= INT16_MIN) {
        mw_head(w, 0xd1, (uint64_t)v & 0xffff, 2);
    } else if (v >= INT32_MIN) {
        mw_head(w, 0xd2, (uint64_t)v & 0xffffffffu, 4);
    } else {
        mw_head(w, 0xd3, (uint64_t)v, 8);
    }
}

void kv_mw_bool(kv_mw *w, int v) {
    unsigned char b = v ? 0xc3 : 0xc2;
    mw_put(w, &b, 1);
}

void kv_mw_nil(kv_mw *w) {
    unsigned char b = 0xc0;
    mw_put(w, &b, 1);
}

void kv_mw_real(kv_mw *w, double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    mw_head(w, 0xcb, u, 8);
}

int kv_mw_real_is_int(double v, int64_t *out) {
    // 2^63 is exactly representable; every double below it in magnitude that
    // is integral converts without overflow.
    if (!isfinite(v) || v != floor(v) || v < -9223372036854775808.0 || v >= 9223372036854775808.0) return 0;
    *out = (int64_t)v;
    return 1;
}

void kv_mw_num(kv_mw *w, double v) {
    int64_t i;
    if (kv_mw_real_is_int(v, &i))
        kv_mw_int(w, i);
    else
        kv_mw_real(w, v);
}
