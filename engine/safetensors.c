/* safetensors.c — reads and writes the safetensors checkpoint format.
 *
 * The story: a file is mmap'd read-only (or a caller's buffer is borrowed),
 * its JSON header is parsed with jansson and checked completely before a
 * single tensor is handed out, the way huggingface/safetensors' own reader
 * does (tensor.rs): header length within bounds, a JSON object, known dtypes,
 * shapes of non-negative integers, data_offsets whose size equals
 * prod(shape) * dtype size (overflow-checked), no duplicate names, and the
 * entries sorted by offset tiling the data buffer exactly. After that the
 * st_file is an immutable table of st_tensor views into the buffer, sorted by
 * offset, with a name index for lookup. Any malformed input yields
 * ENG_ERR_FORMAT and a message naming the file and the tensor or field; only
 * failing system calls give ENG_ERR_IO.
 *
 * What it does not do: convert or copy tensor data at open (st_to_f32 does
 * that on demand, from possibly unaligned memory), keep the "__metadata__"
 * strings (they are validated and dropped), or support big-endian hosts.
 * The writer emits F32/F16/BF16 (round-to-nearest-even) with the header
 * padded by spaces to a multiple of 8, as the Python library does. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

struct st_file {
    char *label;             /* file name used in messages */
    const uint8_t *map;      /* the mmap'd file, NULL when parsing a borrowed buffer */
    size_t map_len;
    st_tensor *tensors;      /* (n) sorted by data offset */
    int *by_name;            /* (n) indices into tensors, sorted by name */
    char *names;             /* every tensor name, NUL-separated */
    int n;
};

static const struct {
    const char *name;
    size_t size;
} g_dtypes[ST_N_DTYPES] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_I16] = {"I16", 2},         [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},       [ST_I32] = {"I32", 4}, [ST_U32] = {"U32", 4},
    [ST_F32] = {"F32", 4},         [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8},
    [ST_U64] = {"U64", 8},
};

const char *st_dtype_name(st_dtype t) {
    return (unsigned)t < ST_N_DTYPES ? g_dtypes[t].name : "?";
}

size_t st_dtype_size(st_dtype t) {
    return (unsigned)t < ST_N_DTYPES ? g_dtypes[t].size : 0;
}

static int st_dtype_lookup(const char *s, st_dtype *t) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(s, g_dtypes[i].name) == 0) {
            *t = (st_dtype)i;
            return 1;
        }
    return 0;
}

/* "[4, 4]" into buf, for messages. */
static const char *st_shape_str(char *buf, size_t n, const int64_t *shape, int n_dims) {
    size_t k = 0;
    k += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < n_dims && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* ---------------------------------------------------------------- parsing */

/* A JSON integer >= 0 (jansson parses integers into long long, so values
 * beyond 2^63-1 were already rejected as JSON errors). */
static int st_json_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* Validate one header entry into *t (name set by the caller). */
static eng_status st_entry_parse(st_tensor *t, const json_t *e, const char *label, const char *name,
                                 char *err, size_t n_err) {
    if (!json_is_object(e)) {
        eng_errf(err, n_err, "%s: tensor '%s': entry is not a JSON object", label, name);
        return ENG_ERR_FORMAT;
    }
    const json_t *dt = json_object_get(e, "dtype");
    const json_t *sh = json_object_get(e, "shape");
    const json_t *off = json_object_get(e, "data_offsets");
    if (!dt || !sh || !off) {
        eng_errf(err, n_err, "%s: tensor '%s': missing field '%s'", label, name,
                 !dt ? "dtype" : !sh ? "shape" : "data_offsets");
        return ENG_ERR_FORMAT;
    }
    if (!json_is_string(dt)) {
        eng_errf(err, n_err, "%s: tensor '%s': field 'dtype' is not a string", label, name);
        return ENG_ERR_FORMAT;
    }
    if (!st_dtype_lookup(json_string_value(dt), &t->dtype)) {
        eng_errf(err, n_err, "%s: tensor '%s': unknown dtype '%.32s'", label, name, json_string_value(dt));
        return ENG_ERR_FORMAT;
    }
    if (!json_is_array(sh)) {
        eng_errf(err, n_err, "%s: tensor '%s': field 'shape' is not an array", label, name);
        return ENG_ERR_FORMAT;
    }
    if (json_array_size(sh) > ST_MAX_DIMS) {
        eng_errf(err, n_err, "%s: tensor '%s': shape has %zu dims, at most %d supported", label, name,
                 json_array_size(sh), ST_MAX_DIMS);
        return ENG_ERR_FORMAT;
    }
    t->n_dims = (int)json_array_size(sh);
    uint64_t n_elems = 1;
    int overflow = 0;
    for (int i = 0; i < t->n_dims; i++) {
        uint64_t d;
        if (!st_json_uint(json_array_get(sh, (size_t)i), &d)) {
            eng_errf(err, n_err, "%s: tensor '%s': shape[%d] is not a non-negative integer", label, name, i);
            return ENG_ERR_FORMAT;
        }
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(n_elems, d, &n_elems)) overflow = 1;
    }
    char sbuf[256];
    uint64_t n_bytes = 0;
    // A zero dim makes the product 0 even if an earlier partial product overflowed.
    for (int i = 0; i < t->n_dims; i++)
        if (t->shape[i] == 0) overflow = 0, n_elems = 0;
    if (overflow || __builtin_mul_overflow(n_elems, (uint64_t)st_dtype_size(t->dtype), &n_bytes)) {
        eng_errf(err, n_err, "%s: tensor '%s': shape %s x %s overflows 64 bits", label, name,
                 st_shape_str(sbuf, sizeof sbuf, t->shape, t->n_dims), st_dtype_name(t->dtype));
        return ENG_ERR_FORMAT;
    }
    t->n_elems = n_elems;
    if (!json_is_array(off) || json_array_size(off) != 2 || !st_json_uint(json_array_get(off, 0), &t->begin) ||
        !st_json_uint(json_array_get(off, 1), &t->end)) {
        eng_errf(err, n_err, "%s: tensor '%s': field 'data_offsets' is not [begin, end] with non-negative integers",
                 label, name);
        return ENG_ERR_FORMAT;
    }
    if (t->begin > t->end) {
        eng_errf(err, n_err, "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", label, name,
                 (unsigned long long)t->begin, (unsigned long long)t->end);
        return ENG_ERR_FORMAT;
    }
    if (t->end - t->begin != n_bytes) {
        eng_errf(err, n_err, "%s: tensor '%s': data_offsets [%llu, %llu] size %llu != shape %s x %s = %llu", label,
                 name, (unsigned long long)t->begin, (unsigned long long)t->end,
                 (unsigned long long)(t->end - t->begin), st_shape_str(sbuf, sizeof sbuf, t->shape, t->n_dims),
                 st_dtype_name(t->dtype), (unsigned long long)n_bytes);
        return ENG_ERR_FORMAT;
    }
    return ENG_OK;
}

static int st_cmp_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int st_cmp_name(const void *a, const void *b, void *ud) {
    const st_tensor *t = ud;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Entries sorted by offset must tile [0, data_len) exactly. */
static eng_status st_check_tiling(const st_file *f, uint64_t data_len, char *err, size_t n_err) {
    uint64_t at = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        const st_tensor *t = &f->tensors[i];
        if (t->end > data_len) {
            eng_errf(err, n_err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the %llu-byte "
                     "data buffer (truncated file?)", f->label, t->name, (unsigned long long)t->begin,
                     (unsigned long long)t->end, (unsigned long long)data_len);
            return ENG_ERR_FORMAT;
        }
        if (t->begin != at) {
            if (prev)
                eng_errf(err, n_err, "%s: tensor '%s': data_offsets begin %llu but previous tensor '%s' ends at "
                         "%llu (%s)", f->label, t->name, (unsigned long long)t->begin, prev,
                         (unsigned long long)at, t->begin > at ? "gap" : "overlap");
            else
                eng_errf(err, n_err, "%s: tensor '%s': data_offsets begin %llu, the first tensor must begin at 0",
                         f->label, t->name, (unsigned long long)t->begin);
            return ENG_ERR_FORMAT;
        }
        at = t->end;
        prev = t->name;
    }
    if (at != data_len) {
        eng_errf(err, n_err, "%s: tensors end at byte %llu of the data buffer but it holds %llu bytes "
                 "(trailing bytes)", f->label, (unsigned long long)at, (unsigned long long)data_len);
        return ENG_ERR_FORMAT;
    }
    return ENG_OK;
}

static eng_status st_metadata_check(const json_t *md, const char *label, char *err, size_t n_err) {
    if (!json_is_object(md)) {
        eng_errf(err, n_err, "%s: '__metadata__' is not a JSON object", label);
        return ENG_ERR_FORMAT;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)md, k, v) {
        if (!json_is_string(v)) {
            eng_errf(err, n_err, "%s: '__metadata__' field '%s' is not a string", label, k);
            return ENG_ERR_FORMAT;
        }
    }
    return ENG_OK;
}

/* Parse the header json of `f` (label already set) into its tensor table. */
static eng_status st_header_parse(st_file *f, const uint8_t *buf, size_t len, char *err, size_t n_err) {
    if (len < 8) {
        eng_errf(err, n_err, "%s: file is %zu bytes, too short for the 8-byte header length", f->label, len);
        return ENG_ERR_FORMAT;
    }
    uint64_t n_hdr = 0;
    for (int i = 7; i >= 0; i--) n_hdr = (n_hdr << 8) | buf[i];
    if (n_hdr > ST_MAX_HEADER) {
        eng_errf(err, n_err, "%s: header length %llu exceeds the %llu-byte limit", f->label,
                 (unsigned long long)n_hdr, ST_MAX_HEADER);
        return ENG_ERR_FORMAT;
    }
    if (n_hdr > len - 8) {
        eng_errf(err, n_err, "%s: header length %llu is past the end of the %zu-byte file", f->label,
                 (unsigned long long)n_hdr, len);
        return ENG_ERR_FORMAT;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)n_hdr, JSON_REJECT_DUPLICATES, &je);
    eng_status st = ENG_ERR_FORMAT;
    if (!root) {
        // jansson 2.14 reports most allocation failures with no text at all.
        if (json_error_code(&je) == json_error_out_of_memory || je.text[0] == 0) {
            eng_errf(err, n_err, "%s: out of memory parsing the header", f->label);
            return ENG_ERR_NOMEM;
        }
        eng_errf(err, n_err, "%s: header JSON error at line %d, column %d: %s", f->label, je.line, je.column,
                 je.text);
        return ENG_ERR_FORMAT;
    }
    if (!json_is_object(root)) {
        eng_errf(err, n_err, "%s: header is not a JSON object", f->label);
        goto fail;
    }
    size_t n_names = 0, n = 0;
    const char *key;
    size_t key_len;
    json_t *v;
    json_object_keylen_foreach(root, key, key_len, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((st = st_metadata_check(v, f->label, err, n_err)) != ENG_OK) goto fail;
            continue;
        }
        if (memchr(key, 0, key_len)) {  // jansson refuses these already; be sure
            eng_errf(err, n_err, "%s: a tensor name contains a NUL byte", f->label);
            st = ENG_ERR_FORMAT;
            goto fail;
        }
        n++;
        n_names += key_len + 1;
    }
    if (n > (size_t)(INT32_MAX / 2)) {
        eng_errf(err, n_err, "%s: %zu tensors is too many", f->label, n);
        st = ENG_ERR_FORMAT;
        goto fail;
    }
    f->tensors = eng_calloc(n ? n : 1, sizeof *f->tensors);
    f->by_name = eng_calloc(n ? n : 1, sizeof *f->by_name);
    f->names = eng_alloc(n_names ? n_names : 1);
    if (!f->tensors || !f->by_name || !f->names) {
        eng_errf(err, n_err, "%s: out of memory for %zu tensors", f->label, n);
        st = ENG_ERR_NOMEM;
        goto fail;
    }
    char *np = f->names;
    json_object_keylen_foreach(root, key, key_len, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        st_tensor *t = &f->tensors[f->n];
        memcpy(np, key, key_len + 1);
        t->name = np;
        np += key_len + 1;
        if ((st = st_entry_parse(t, v, f->label, t->name, err, n_err)) != ENG_OK) goto fail;
        f->n++;
    }
    json_decref(root);
    root = NULL;
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, st_cmp_offset);
    uint64_t data_len = (uint64_t)len - 8 - n_hdr;
    if ((st = st_check_tiling(f, data_len, err, n_err)) != ENG_OK) goto fail;
    const uint8_t *data = buf + 8 + n_hdr;
    for (int i = 0; i < f->n; i++) {
        f->tensors[i].data = data + f->tensors[i].begin;
        f->by_name[i] = i;
    }
    qsort_r(f->by_name, (size_t)f->n, sizeof *f->by_name, st_cmp_name, f->tensors);
    return ENG_OK;
fail:
    json_decref(root);
    return st;
}

static void st_file_free(st_file *f) {
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->map_len);
    eng_free(f->tensors);
    eng_free(f->by_name);
    eng_free(f->names);
    eng_free(f->label);
    eng_free(f);
}

/* Borrow `buf` (it must outlive the st_file); on failure *out is NULL. */
eng_status st_file_parse(st_file **out, const uint8_t *buf, size_t len, const char *label, char *err,
                         size_t n_err) {
    *out = NULL;
    if (!label) label = "<memory>";
    if (!buf && len) {
        eng_errf(err, n_err, "%s: NULL buffer", label);
        return ENG_ERR_INVAL;
    }
    st_file *f = eng_calloc(1, sizeof *f);
    if (!f || !(f->label = eng_strdup(label))) {
        eng_free(f);
        eng_errf(err, n_err, "%s: out of memory", label);
        return ENG_ERR_NOMEM;
    }
    eng_status st = st_header_parse(f, buf, len, err, n_err);
    if (st != ENG_OK) {
        st_file_free(f);
        return st;
    }
    *out = f;
    return ENG_OK;
}

/* mmap `path` read-only and parse it. ENG_ERR_IO when it cannot be opened or
 * mapped, ENG_ERR_FORMAT when it is malformed; *out is NULL on failure. */
eng_status st_file_open(st_file **out, const char *path, char *err, size_t n_err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        eng_errf(err, n_err, "%s: cannot open: %s", path, strerror(errno));
        return ENG_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        eng_errf(err, n_err, "%s: not a regular file", path);
        close(fd);
        return ENG_ERR_IO;
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            eng_errf(err, n_err, "%s: cannot mmap %zu bytes: %s", path, len, strerror(errno));
            close(fd);
            return ENG_ERR_IO;
        }
    }
    close(fd);  // the mapping keeps the file
    static const uint8_t empty[1];
    st_file *f = NULL;
    eng_status st = st_file_parse(&f, map ? map : empty, len, path, err, n_err);
    if (st != ENG_OK) {
        if (map) munmap(map, len);
        return st;
    }
    f->map = map;
    f->map_len = len;
    *out = f;
    return ENG_OK;
}

void st_file_close(st_file *f) { st_file_free(f); }

int st_file_n_tensors(const st_file *f) { return f ? f->n : 0; }

/* Tensors are numbered in data-offset order. */
const st_tensor *st_file_tensor(const st_file *f, int i) {
    return f && i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const st_tensor *st_file_find(const st_file *f, const char *name) {
    if (!f || !name) return NULL;
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------- conversion */

/* Exact IEEE binary16 -> binary32: every half (subnormals, ±0, ±inf, NaN
 * payloads) has an exact fp32 image. */
static inline float st_half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu, bits;
    if (em >= 0x7c00u) {
        bits = sign | 0x7f800000u | ((em & 0x3ffu) << 13);
    } else if (em >= 0x0400u) {
        bits = sign | ((em << 13) + 0x38000000u);  // rebias exponent 15 -> 127
    } else {
        float f = (float)em * 0x1p-24f;            // subnormal or zero: exact
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* binary32 -> binary16, round to nearest even; overflow to inf, NaN stays NaN. */
static inline uint16_t st_f32_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                                    // below 2^-14: subnormal
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 0x1p24f));  // 1024 encodes 2^-14 itself
    }
    ax += 0xfffu + ((ax >> 13) & 1u);
    return (uint16_t)(sign | ((ax - 0x38000000u) >> 13));
}

static inline uint16_t st_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // keep it a (quiet) NaN
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* Convert n elements at src (any alignment, little-endian) to fp32 in dst.
 * ENG_ERR_UNSUPPORTED for dtypes other than F32/F16/BF16. */
eng_status st_to_f32(float *dst, const uint8_t *src, st_dtype t, uint64_t n) {
    switch (t) {
    case ST_F32:
        if (n) memcpy(dst, src, (size_t)n * 4);
        return ENG_OK;
    case ST_F16:
        for (uint64_t i = 0; i < n; i++) dst[i] = st_half_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return ENG_OK;
    case ST_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)src[2 * i] << 16 | (uint32_t)src[2 * i + 1] << 24;
            memcpy(&dst[i], &bits, 4);
        }
        return ENG_OK;
    default:
        return ENG_ERR_UNSUPPORTED;
    }
}

/* ----------------------------------------------------------------- writing */

typedef struct st_buf { char *p; size_t n, cap; int oom; } st_buf;

static void st_buf_put(st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = eng_realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void st_buf_printf(st_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void st_buf_printf(st_buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    st_buf_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* A JSON string literal (names are arbitrary bytes to us; escape the JSON
 * specials and control characters, pass UTF-8 through). */
static void st_buf_json_str(st_buf *b, const char *s) {
    st_buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            st_buf_put(b, e, 2);
        } else if (c < 0x20) {
            st_buf_printf(b, "\\u%04x", c);
        } else {
            st_buf_put(b, (const char *)&c, 1);
        }
    }
    st_buf_put(b, "\"", 1);
}

#define ST_CHUNK ((uint64_t)1 << 16)

/* Stream one tensor's values (from data or fill) through the dtype encoder. */
static int st_tensor_write(FILE *fp, const st_write_entry *e, uint64_t n, float *tmp, uint8_t *out) {
    size_t es = st_dtype_size(e->dtype);
    for (uint64_t first = 0; first < n; first += ST_CHUNK) {
        uint64_t k = n - first < ST_CHUNK ? n - first : ST_CHUNK;
        const float *src = e->data ? e->data + first : tmp;
        if (!e->data) e->fill(tmp, first, k, e->fill_ud);
        for (uint64_t i = 0; i < k; i++) {
            if (e->dtype == ST_F32) {
                memcpy(out + 4 * i, &src[i], 4);
            } else {
                uint16_t h = e->dtype == ST_F16 ? st_f32_to_half(src[i]) : st_f32_to_bf16(src[i]);
                out[2 * i] = (uint8_t)h, out[2 * i + 1] = (uint8_t)(h >> 8);
            }
        }
        if (fwrite(out, es, (size_t)k, fp) != (size_t)k) return -1;
    }
    return 0;
}

/* Write `n` tensors to `path`, converting fp32 values to each entry's dtype
 * (F32/F16/BF16; RNE). ENG_ERR_INVAL for a bad entry (dtype, shape, no data,
 * duplicate name), ENG_ERR_IO if the file cannot be written (a partial file
 * is removed), ENG_ERR_NOMEM. */
eng_status st_file_write(const char *path, const st_write_entry *entries, int n, char *err, size_t n_err) {
    eng_status st = ENG_ERR_INVAL;
    st_buf hb = {0};
    FILE *fp = NULL;
    float *tmp = NULL;
    uint8_t *out = NULL;
    if (n < 0 || (n > 0 && !entries)) {
        eng_errf(err, n_err, "%s: bad tensor list", path);
        return ENG_ERR_INVAL;
    }
    static const char meta[] = "{\"__metadata__\":{\"format\":\"pt\"}";
    st_buf_put(&hb, meta, sizeof meta - 1);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const st_write_entry *e = &entries[i];
        const char *nm = e->name ? e->name : "(null)";
        uint64_t ne = 1, nb;
        if (!e->name || strcmp(e->name, "__metadata__") == 0) {
            eng_errf(err, n_err, "%s: tensor %d has an invalid name '%s'", path, i, nm);
            goto fail;
        }
        if (e->dtype != ST_F32 && e->dtype != ST_F16 && e->dtype != ST_BF16) {
            eng_errf(err, n_err, "%s: tensor '%s': cannot write dtype %s", path, nm, st_dtype_name(e->dtype));
            goto fail;
        }
        if (e->n_dims < 0 || e->n_dims > ST_MAX_DIMS) {
            eng_errf(err, n_err, "%s: tensor '%s': %d dims", path, nm, e->n_dims);
            goto fail;
        }
        for (int d = 0; d < e->n_dims; d++)
            if (e->shape[d] < 0 || __builtin_mul_overflow(ne, (uint64_t)e->shape[d], &ne)) {
                eng_errf(err, n_err, "%s: tensor '%s': bad shape", path, nm);
                goto fail;
            }
        if (__builtin_mul_overflow(ne, (uint64_t)st_dtype_size(e->dtype), &nb) ||
            __builtin_add_overflow(at, nb, &nb) || (ne && !e->data && !e->fill)) {
            eng_errf(err, n_err, "%s: tensor '%s': too large or no data", path, nm);
            goto fail;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(entries[j].name, e->name) == 0) {
                eng_errf(err, n_err, "%s: duplicate tensor name '%s'", path, nm);
                goto fail;
            }
        st_buf_put(&hb, ",", 1);
        st_buf_json_str(&hb, e->name);
        st_buf_printf(&hb, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(e->dtype));
        for (int d = 0; d < e->n_dims; d++) st_buf_printf(&hb, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        st_buf_printf(&hb, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at, (unsigned long long)nb);
        at = nb;
    }
    st_buf_put(&hb, "}", 1);
    while (!hb.oom && hb.n % 8) st_buf_put(&hb, " ", 1);
    tmp = eng_alloc(ST_CHUNK * sizeof(float));
    out = eng_alloc(ST_CHUNK * sizeof(float));
    if (hb.oom || !tmp || !out) {
        eng_errf(err, n_err, "%s: out of memory", path);
        st = ENG_ERR_NOMEM;
        goto fail;
    }
    st = ENG_ERR_IO;
    if (!(fp = fopen(path, "wb"))) {
        eng_errf(err, n_err, "%s: cannot create: %s", path, strerror(errno));
        goto fail;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hb.n >> (8 * i));
    int bad = fwrite(len8, 1, 8, fp) != 8 || fwrite(hb.p, 1, hb.n, fp) != hb.n;
    for (int i = 0; i < n && !bad; i++) {
        uint64_t ne = 1;
        for (int d = 0; d < entries[i].n_dims; d++) ne *= (uint64_t)entries[i].shape[d];
        bad = st_tensor_write(fp, &entries[i], ne, tmp, out) != 0;
    }
    int saved = errno;
    if (fclose(fp) != 0 && !bad) bad = 1, saved = errno;
    fp = NULL;
    if (bad) {
        eng_errf(err, n_err, "%s: write failed: %s", path, strerror(saved));
        remove(path);
        goto fail;
    }
    st = ENG_OK;
fail:
    if (fp) fclose(fp);
    eng_free(hb.p);
    eng_free(tmp);
    eng_free(out);
    return st;
}
