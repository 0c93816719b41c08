/* utf8.c — the UTF-8 text steps of the tokenizer: growable id/byte buffers,
 * repair of invalid UTF-8, and NFC exactly as Hugging Face `tokenizers` does it.
 *
 * Repair follows Unicode §3.9 "substitution of maximal subparts": each maximal
 * prefix of a well-formed sequence that is cut short, and each byte that cannot
 * start one, becomes one U+FFFD. CPython's decode(..., "replace") and Rust's
 * String::from_utf8_lossy (HF's decoder) both do exactly this.
 *
 * NFC is utf8proc's, with two rules on top:
 *  - Speed: NFC(x + y) == NFC(x) + NFC(y) whenever y starts with an ASCII
 *    character (an ASCII character is a starter, never the second element of a
 *    composition, and blocks reordering), so ASCII runs are copied and only
 *    the non-ASCII runs, each with the ASCII character before it, go through
 *    utf8proc.
 *  - Unicode version: HF's NFC (the unicode-normalization-alignments crate)
 *    carries Unicode 9.0 tables; utf8proc 2.8 carries 15.0. The only code
 *    points on which they disagree are those assigned after 9.0 that have a
 *    nonzero combining class or take part in a canonical composition
 *    (nfc_inert below). HF sees them as unassigned: starters that compose with
 *    nothing. Such a character splits the text like an ASCII one, and is copied
 *    unchanged. The list was derived by comparing the two on every code point
 *    (ops/golden/tokenizer_cases.py --unicode-report rederives it), and
 *    tests/data/tokenizer/unicode_blocks.jsonl checks every code point.
 *
 * Invariants: buffers only grow; nothing here allocates except to grow a
 * buffer; eng_utf8_nfc's input must be valid UTF-8 (callers repair first). */
#include "utf8.h"

#include <string.h>
#include <utf8proc.h>

eng_status eng_ids_reserve(eng_ids *ids, size_t extra) {
    if (extra > SIZE_MAX / 8 - ids->n) return ENG_ERR_NOMEM;
    size_t need = ids->n + extra;
    if (need <= ids->cap) return ENG_OK;
    size_t cap = ids->cap ? ids->cap : 64;
    while (cap < need) cap *= 2;
    int32_t *v = eng_realloc(ids->v, cap * sizeof *v);
    if (!v) return ENG_ERR_NOMEM;
    ids->v = v;
    ids->cap = cap;
    return ENG_OK;
}

eng_status eng_ids_push(eng_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        eng_status st = eng_ids_reserve(ids, 1);
        if (st != ENG_OK) return st;
    }
    ids->v[ids->n++] = id;
    return ENG_OK;
}

void eng_ids_free(eng_ids *ids) {
    if (!ids) return;
    eng_free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

eng_status eng_buf_reserve(eng_buf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->n) return ENG_ERR_NOMEM;
    size_t need = b->n + extra + 1;
    if (need <= b->cap) return ENG_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *v = eng_realloc(b->v, cap);
    if (!v) return ENG_ERR_NOMEM;
    b->v = v;
    b->cap = cap;
    return ENG_OK;
}

eng_status eng_buf_append(eng_buf *b, const char *s, size_t n) {
    eng_status st = eng_buf_reserve(b, n);
    if (st != ENG_OK) return st;
    if (n) memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = 0;
    return ENG_OK;
}

void eng_buf_free(eng_buf *b) {
    if (!b) return;
    eng_free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

/* Length of the well-formed sequence starting at s[0] (1..4), or 0 when it is
 * ill-formed; *bad_len is then the length of its maximal subpart (>= 1). */
static size_t utf8_seq_len(const unsigned char *s, size_t n, size_t *bad_len) {
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else { *bad_len = 1; return 0; }
    size_t k = 0;
    if (n > 1 && s[1] >= lo && s[1] <= hi) {
        k = 1;
        while (k < need && 1 + k < n && s[1 + k] >= 0x80 && s[1 + k] <= 0xBF) k++;
    }
    if (k == need) return need + 1;
    *bad_len = k + 1;
    return 0;
}

size_t eng_utf8_valid_prefix(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) { i++; continue; }
        size_t bad, len = utf8_seq_len(s + i, n - i, &bad);
        if (!len) return i;
        i += len;
    }
    return n;
}

eng_status eng_utf8_repair(const char *str, size_t n, eng_buf *out, size_t *n_replaced) {
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *s = (const unsigned char *)str;
    /* worst case: every byte becomes a 3-byte U+FFFD */
    if (n > SIZE_MAX / 4) return ENG_ERR_NOMEM;
    eng_status st = eng_buf_reserve(out, 3 * n);
    if (st != ENG_OK) return st;
    size_t i = 0, reps = 0;
    char *o = out->v + out->n;
    while (i < n) {
        size_t ok = eng_utf8_valid_prefix(str + i, n - i);
        memcpy(o, s + i, ok);
        o += ok;
        i += ok;
        if (i >= n) break;
        size_t bad = 1;
        utf8_seq_len(s + i, n - i, &bad);
        memcpy(o, fffd, 3);
        o += 3;
        i += bad;
        reps++;
    }
    out->n = (size_t)(o - out->v);
    out->v[out->n] = 0;
    if (n_replaced) *n_replaced += reps;
    return ENG_OK;
}

int32_t eng_utf8_decode(const unsigned char *s, size_t *len) {
    unsigned char c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1F) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F); }
    *len = 4;
    return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

size_t eng_utf8_encode(int32_t c, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { o[0] = (unsigned char)(0xC0 | (c >> 6)); o[1] = (unsigned char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

void eng_utf8_scratch_free(eng_utf8_scratch *s) {
    if (!s) return;
    eng_free(s->v);
    s->v = NULL;
    s->cap = 0;
}

/* Code points (Unicode 10.0-15.0) that utf8proc 2.8 reorders or (de)composes
 * and HF's Unicode 9.0 NFC leaves alone; inclusive ranges, sorted. */
static const int32_t nfc_inert[][2] = {
    {0x07FD, 0x07FD},   {0x0898, 0x089F},   {0x08CA, 0x08D3},   {0x09FE, 0x09FE},
    {0x0C3C, 0x0C3C},   {0x0D3B, 0x0D3C},   {0x0EBA, 0x0EBA},   {0x1715, 0x1715},
    {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},   {0xA82C, 0xA82C},   {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x11930, 0x11930}, {0x11935, 0x11935}, {0x1193D, 0x1193E}, {0x11943, 0x11943},
    {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99},
    {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42},
    {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

static int utf8_nfc_is_inert(int32_t c) {
    if (c < 0x07FD) return 0;
    size_t lo = 0, hi = sizeof nfc_inert / sizeof nfc_inert[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < nfc_inert[mid][0]) hi = mid;
        else if (c > nfc_inert[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* NFC of one segment s[0..n) through utf8proc, appended to out. */
static eng_status utf8_nfc_segment(const char *s, size_t n, eng_buf *out, eng_utf8_scratch *sc) {
    const utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    if (n == 0) return ENG_OK;
    for (;;) {
        utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n,
                                                sc->v, (utf8proc_ssize_t)sc->cap, opt);
        if (r < 0) return ENG_ERR_INVAL; /* invalid UTF-8: callers repair first */
        /* one more slot: utf8proc_reencode writes a NUL after up to 4 * r bytes */
        if ((size_t)r + 1 > sc->cap) {
            size_t cap = sc->cap ? sc->cap : 64;
            while (cap < (size_t)r + 1) cap *= 2;
            int32_t *v = eng_realloc(sc->v, cap * sizeof *v);
            if (!v) return ENG_ERR_NOMEM;
            sc->v = v;
            sc->cap = cap;
            continue;
        }
        /* composes in place, then writes UTF-8 over the code point array */
        utf8proc_ssize_t len = utf8proc_reencode(sc->v, r, opt);
        if (len < 0) return ENG_ERR_INVAL;
        return eng_buf_append(out, (const char *)sc->v, (size_t)len);
    }
}

eng_status eng_utf8_nfc(const char *str, size_t n, eng_buf *out, eng_utf8_scratch *sc) {
    const unsigned char *s = (const unsigned char *)str;
    eng_status st = eng_buf_reserve(out, n);
    if (st != ENG_OK) return st;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] < 0x80) j++;
        if (j == n) return eng_buf_append(out, str + i, n - i);
        /* the ASCII character before a non-ASCII run may compose with it */
        size_t start = j > i ? j - 1 : j;
        if (start > i && (st = eng_buf_append(out, str + i, start - i)) != ENG_OK) return st;
        size_t k = j, inert = 0;
        while (k < n && s[k] >= 0x80) {
            size_t len;
            int32_t c = eng_utf8_decode(s + k, &len);
            if (utf8_nfc_is_inert(c)) { inert = len; break; }
            k += len;
        }
        if ((st = utf8_nfc_segment(str + start, k - start, out, sc)) != ENG_OK) return st;
        if (inert && (st = eng_buf_append(out, str + k, inert)) != ENG_OK) return st;
        i = k + inert;
    }
    return ENG_OK;
}
