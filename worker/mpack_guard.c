/* mpack_guard.c — allocation-free pre-walk over raw msgpack bytes from
 * outside (a job from Redis, a result, a sweep file), run before msgpack-c
 * sees them.
 *
 * Why: msgpack-c 4.0.0's C unpacker has no limits. It allocates
 * count * sizeof(msgpack_object) for an array or map from the declared count
 * before reading a single element (5 bytes "dd 04 00 00 00" ask for ~1.6 GB),
 * and nesting deeper than 32 is reported as NOMEM. This walk reads only
 * headers: every declared str/bin/ext length must fit in the bytes that
 * remain, and every declared element must too (each element needs at least
 * one byte, so a map entry needs two). That bound is kept over all open
 * containers together (the sum of elements still owed), so the total number
 * of objects msgpack-c will allocate is at most the message length. It also
 * enforces a nesting limit, refuses the reserved byte 0xc1, requires exactly
 * one top-level object with nothing after it, and caps the total length.
 *
 * Recipe: ../shared/docs/queue-reliability.md §3 ("Defensive decoding").
 * The walk keeps one small fixed array of per-level counters on the stack. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "job.h"

#define GUARD_STACK 64 /* largest max_depth accepted */

static int guard_fail(char *err, size_t n_err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int guard_fail(char *err, size_t n_err, int code, const char *fmt, ...) {
    if (err && n_err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n_err, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint64_t guard_be(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Decodes the header at p[0..avail): *hs header bytes, *body payload bytes
 * to skip, *kids elements that follow (arrays: n, maps: 2n), *is_cont.
 * Returns 0, or -1 when the header itself is cut off, -2 for 0xc1. */
static int guard_header(const unsigned char *p, size_t avail, size_t *hs, uint64_t *body, uint64_t *kids,
                        int *is_cont) {
    unsigned char b = p[0];
    int ln = 0;        // length bytes after the tag
    int extra = 0;     // bytes after the length (ext type byte)
    uint64_t fixed = 0;
    *body = 0;
    *kids = 0;
    *is_cont = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        *hs = 1;
        return 0;
    }
    if (b >= 0x80 && b <= 0x8f) {
        *hs = 1;
        *kids = 2u * (b & 0x0fu);
        *is_cont = 1;
        return 0;
    }
    if (b >= 0x90 && b <= 0x9f) {
        *hs = 1;
        *kids = b & 0x0fu;
        *is_cont = 1;
        return 0;
    }
    if (b >= 0xa0 && b <= 0xbf) {
        *hs = 1;
        *body = b & 0x1fu;
        return 0;
    }
    switch (b) {
    case 0xc1: return -2;
    case 0xc4: case 0xd9: ln = 1; break;  // bin8, str8
    case 0xc5: case 0xda: ln = 2; break;  // bin16, str16
    case 0xc6: case 0xdb: ln = 4; break;  // bin32, str32
    case 0xc7: ln = 1; extra = 1; break;  // ext8
    case 0xc8: ln = 2; extra = 1; break;  // ext16
    case 0xc9: ln = 4; extra = 1; break;  // ext32
    case 0xca: fixed = 4; break;          // float32
    case 0xcb: fixed = 8; break;          // float64
    case 0xcc: case 0xd0: fixed = 1; break;
    case 0xcd: case 0xd1: fixed = 2; break;
    case 0xce: case 0xd2: fixed = 4; break;
    case 0xcf: case 0xd3: fixed = 8; break;
    case 0xd4: fixed = 2; break;          // fixext1: type + 1
    case 0xd5: fixed = 3; break;
    case 0xd6: fixed = 5; break;
    case 0xd7: fixed = 9; break;
    case 0xd8: fixed = 17; break;
    case 0xdc: case 0xde: ln = 2; *is_cont = 1; break;  // array16, map16
    case 0xdd: case 0xdf: ln = 4; *is_cont = 1; break;  // array32, map32
    default: return -2;                   // unreachable: every byte is covered above
    }
    if (fixed) {
        *hs = 1;
        *body = fixed;
        return 0;
    }
    if (avail < (size_t)(1 + ln + extra)) return -1;
    uint64_t n = guard_be(p + 1, ln);
    *hs = (size_t)(1 + ln + extra);
    if (*is_cont)
        *kids = (b == 0xde || b == 0xdf) ? 2 * n : n;
    else
        *body = n;
    return 0;
}

/* Contract in job.h. max_depth must be 1..64 (KV_ERR_INVAL otherwise). */
int kv_mpack_guard(const void *buf, size_t len, size_t max_bytes, int max_depth, char *err, size_t n_err) {
    const unsigned char *p = buf;
    uint64_t left[GUARD_STACK]; // elements still owed by each open container
    int depth = 0, root_done = 0;
    size_t pos = 0;
    uint64_t owed = 1; // objects still to read, over all levels (each >= 1 byte)

    if (max_depth < 1 || max_depth > GUARD_STACK)
        return guard_fail(err, n_err, KV_ERR_INVAL, "guard: max_depth %d outside 1..%d", max_depth, GUARD_STACK);
    if (len > max_bytes)
        return guard_fail(err, n_err, KV_ERR_LIMIT, "message of %zu bytes is over the cap of %zu bytes", len,
                          max_bytes);
    if (len == 0 || !buf) return guard_fail(err, n_err, KV_ERR_FORMAT, "empty message");

    for (;;) {
        while (depth > 0 && left[depth - 1] == 0) depth--;
        if (depth == 0 && root_done) break;
        if (pos >= len)
            return guard_fail(err, n_err, KV_ERR_FORMAT, "truncated: object expected at offset %zu of %zu", pos,
                              len);
        size_t hs;
        uint64_t body, kids;
        int is_cont;
        int rc = guard_header(p + pos, len - pos, &hs, &body, &kids, &is_cont);
        if (rc == -2)
            return guard_fail(err, n_err, KV_ERR_FORMAT, "reserved byte 0x%02x at offset %zu", p[pos], pos);
        if (rc == -1 || hs > len - pos)
            return guard_fail(err, n_err, KV_ERR_FORMAT, "truncated header at offset %zu of %zu", pos, len);
        if (body > len - pos - hs)
            return guard_fail(err, n_err, KV_ERR_FORMAT,
                              "length declared at offset %zu exceeds the %zu bytes that remain", pos,
                              len - pos - hs);
        size_t at = pos;
        pos += hs + (size_t)body;
        owed--;
        if (depth > 0)
            left[depth - 1]--;
        else
            root_done = 1;
        if (is_cont) {
            if (depth >= max_depth)
                return guard_fail(err, n_err, KV_ERR_LIMIT, "nesting deeper than %d levels at offset %zu", max_depth,
                                  at);
            // kids <= 2 * 0xffffffff and owed <= len, so this cannot wrap.
            owed += kids;
            if (owed > len - pos)
                return guard_fail(err, n_err, KV_ERR_FORMAT,
                                  "element count declared at offset %zu exceeds the %zu bytes that remain", at,
                                  len - pos);
            left[depth++] = kids;
        }
    }
    if (pos != len)
        return guard_fail(err, n_err, KV_ERR_FORMAT, "trailing bytes after the object: offset %zu of %zu", pos, len);
    return KV_OK;
}

int kv_mpack_unpack(struct msgpack_unpacked *u, const void *buf, size_t len, size_t max_bytes, char *err,
                    size_t n_err) {
    int rc = kv_mpack_guard(buf, len, max_bytes, KV_MPACK_MAX_DEPTH, err, n_err);
    if (rc) return rc;
    msgpack_unpacked_init(u);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(u, buf, len, &off);
    if (ur == MSGPACK_UNPACK_SUCCESS && off == len) return KV_OK;
    msgpack_unpacked_destroy(u);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        snprintf(err, n_err, "out of memory");
        return KV_ERR_NOMEM;
    }
    snprintf(err, n_err, "msgpack unpack failed (rc %d, %zu of %zu bytes)", (int)ur, off, len);
    return KV_ERR_FORMAT;
}
