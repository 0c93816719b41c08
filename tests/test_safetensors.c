/* test_safetensors.c — the safetensors reader and writer.
 *
 * Covers: the dtype table; exact half/bf16 decoding (all 65536 halves against
 * an ldexp reference, from unaligned memory); st_file_write -> st_file_open
 * round trips for F32/F16/BF16 including half subnormals, ties, overflow,
 * inf and NaN, checked against brute-force nearest-even references; the
 * malformed corpus of tests/data/malformed (written by
 * ops/golden/make_malformed.py) where every bad file must fail with the
 * expected status and a message naming the file and the fault, through both
 * st_file_open and st_file_parse; the tricky valid files; write errors; and
 * an allocation-failure sweep over open and write. */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "testutil.h"

static char g_tmp[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", g_tmp, name);
    return p;
}

static int tmp_init(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kvsweep_test_st_XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int tmp_clean(void) {
    DIR *d = opendir(g_tmp);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') unlink(tmp_path(e->d_name));
    if (d) closedir(d);
    rmdir(g_tmp);
    return 0;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* Reference decoders written independently of the engine's bit tricks. */
static float ref_half(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0) v = ldexpf((float)m, -24);
    else if (e == 31) v = m ? u2f(0x7f800000u | ((uint32_t)m << 13)) : INFINITY;
    else v = ldexpf((float)(1024 + m), e - 25);
    return s ? -v : v;
}

/* Nearest half by exhaustive search over finite halves, ties to even;
 * beyond the largest half by half an ulp -> inf. */
static uint16_t ref_to_half(float f) {
    if (isnan(f)) return 0x7e00;
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00;
    uint16_t best = 0;
    double bd = INFINITY;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double d = fabs((double)ref_half((uint16_t)h) - a);
        if (d < bd || (d == bd && (h & 1) == 0)) bd = d, best = (uint16_t)h;
    }
    return sign | best;
}

static uint16_t ref_to_bf16(float f) {
    uint32_t u = f2u(f);
    if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
    if (isinf(f)) return (uint16_t)(u >> 16);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double dl = fabs((double)u2f(lo) - f), dh = isinf(u2f(hi)) ? fabs(ldexp(1.0, 128) - fabs((double)f)) : fabs((double)u2f(hi) - f);
    if (dl < dh || (dl == dh && ((lo >> 16) & 1) == 0)) return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}

static void test_dtype_table(void) {
    static const char *names[ST_N_DTYPES] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16",
                                             "BF16", "I32", "U32", "F32", "F64", "I64", "U64"};
    static const size_t sizes[ST_N_DTYPES] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    for (int i = 0; i < ST_N_DTYPES; i++) {
        CU_ASSERT_STRING_EQUAL(st_dtype_name((st_dtype)i), names[i]);
        CU_ASSERT_EQUAL(st_dtype_size((st_dtype)i), sizes[i]);
    }
    CU_ASSERT_EQUAL(st_dtype_size(ST_N_DTYPES), 0);
}

static void test_half_decode_exhaustive(void) {
    uint8_t *src = malloc(2 * 65536 + 1);
    float *dst = malloc(65536 * sizeof(float));
    for (uint32_t h = 0; h < 65536; h++) src[1 + 2 * h] = (uint8_t)h, src[2 + 2 * h] = (uint8_t)(h >> 8);
    CU_ASSERT_EQUAL(st_to_f32(dst, src + 1, ST_F16, 65536), ENG_OK);  // odd address on purpose
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float want = ref_half((uint16_t)h);
        uint32_t got = f2u(dst[h]);
        if (isnan(want)) bad += !isnan(dst[h]) || (got & 0x007fe000u) != (f2u(want) & 0x007fe000u);
        else bad += got != f2u(want);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(f2u(dst[0x0001]), f2u(0x1p-24f));      // smallest subnormal
    CU_ASSERT_EQUAL(f2u(dst[0x03ff]), f2u(1023 * 0x1p-24f));
    CU_ASSERT_EQUAL(f2u(dst[0x8000]), 0x80000000u);        // -0
    CU_ASSERT(isinf(dst[0xfc00]) && dst[0xfc00] < 0);
    CU_ASSERT_EQUAL(dst[0x7bff], 65504.0f);
    // bf16 is the upper half of an fp32
    uint8_t b[5] = {0, 0x80, 0x3f, 0xc0, 0xff};
    CU_ASSERT_EQUAL(st_to_f32(dst, b + 1, ST_BF16, 2), ENG_OK);
    CU_ASSERT_EQUAL(dst[0], 1.0f);
    CU_ASSERT(isnan(dst[1]));
    CU_ASSERT_EQUAL(st_to_f32(dst, b, ST_I32, 1), ENG_ERR_UNSUPPORTED);
    free(src);
    free(dst);
}

static const float g_vals[] = {
    0.0f, -0.0f, 1.0f, -2.5f, 0.1f, 1.0f / 3, 65504.0f, 65519.99f, 65520.0f, -70000.0f, 1e-8f, 0x1p-24f,
    0x1p-25f, 0x1.8p-25f, 0x1.8p-24f, 0x1.4p-24f, 0x1p-14f, 0x1.ff8p-15f, 0x1.0020p0f, 0x1.0030p0f, 0x1.0010p0f,
    0x1.0180p0f, 0x1.0080p0f, 3.0e38f, 3.4028235e38f, 1e-40f, -1e-45f, 6.1e-5f, 5.9604645e-8f, 2049.0f,
    2051.0f, 4097.0f, 123456.7f, INFINITY, -INFINITY, NAN,
};
#define N_VALS ((int)(sizeof g_vals / sizeof g_vals[0]))

static void fill_ramp(float *dst, uint64_t first, uint64_t n, void *ud) {
    (void)ud;
    for (uint64_t i = 0; i < n; i++) dst[i] = (float)(first + i) * 0.37f - 1000.0f;
}

static void test_roundtrip(void) {
    enum { N_RAMP = 150001 };  // more than one write chunk, odd length
    st_write_entry e[6] = {
        {.name = "f32", .dtype = ST_F32, .n_dims = 1, .shape = {N_VALS}, .data = g_vals},
        {.name = "f16", .dtype = ST_F16, .n_dims = 2, .shape = {1, N_VALS}, .data = g_vals},
        {.name = "bf16", .dtype = ST_BF16, .n_dims = 1, .shape = {N_VALS}, .data = g_vals},
        {.name = "ramp \"quoted\"\\ \x01 é", .dtype = ST_F16, .n_dims = 1, .shape = {N_RAMP}, .fill = fill_ramp},
        {.name = "empty", .dtype = ST_F32, .n_dims = 2, .shape = {0, 5}},
        {.name = "scalar", .dtype = ST_BF16, .n_dims = 0, .data = g_vals + 2},
    };
    char err[512] = "";
    const char *p = tmp_path("rt.safetensors");
    CU_ASSERT_EQUAL_FATAL(st_file_write(p, e, 6, err, sizeof err), ENG_OK);
    size_t len;
    char *raw = tu_read_file(p, &len);
    CU_ASSERT_FATAL(raw != NULL);
    uint64_t n_hdr;
    memcpy(&n_hdr, raw, 8);
    CU_ASSERT_EQUAL(n_hdr % 8, 0);
    free(raw);
    st_file *f = NULL;
    CU_ASSERT_EQUAL_FATAL(st_file_open(&f, p, err, sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(st_file_n_tensors(f), 6);
    for (int i = 0; i < 6; i++) {  // numbered in data order = write order
        const st_tensor *t = st_file_tensor(f, i);
        CU_ASSERT_STRING_EQUAL(t->name, e[i].name);
        CU_ASSERT_PTR_EQUAL(st_file_find(f, e[i].name), t);
        CU_ASSERT_EQUAL(t->dtype, e[i].dtype);
        CU_ASSERT_EQUAL(t->n_dims, e[i].n_dims);
    }
    CU_ASSERT_PTR_NULL(st_file_tensor(f, 6));
    CU_ASSERT_PTR_NULL(st_file_find(f, "nope"));
    float got[N_VALS];
    const st_tensor *t = st_file_find(f, "f32");
    CU_ASSERT_EQUAL(st_to_f32(got, t->data, t->dtype, t->n_elems), ENG_OK);
    for (int i = 0; i < N_VALS; i++) CU_ASSERT_EQUAL(f2u(got[i]), f2u(g_vals[i]));
    t = st_file_find(f, "f16");
    int bad = 0;
    for (int i = 0; i < N_VALS; i++) {
        uint16_t h = (uint16_t)(t->data[2 * i] | t->data[2 * i + 1] << 8), want = ref_to_half(g_vals[i]);
        if (isnan(g_vals[i])) bad += (h & 0x7c00) != 0x7c00 || !(h & 0x3ff);
        else if (h != want) bad++, printf("\n    f16(%a) = %04x, want %04x", (double)g_vals[i], h, want);
    }
    CU_ASSERT_EQUAL(bad, 0);
    t = st_file_find(f, "bf16");
    for (int i = 0; i < N_VALS; i++) {
        uint16_t h = (uint16_t)(t->data[2 * i] | t->data[2 * i + 1] << 8), want = ref_to_bf16(g_vals[i]);
        if (h != want) bad++, printf("\n    bf16(%a) = %04x, want %04x", (double)g_vals[i], h, want);
    }
    CU_ASSERT_EQUAL(bad, 0);
    t = st_file_find(f, e[3].name);
    CU_ASSERT_FATAL(t && t->n_elems == N_RAMP);
    float *ramp = malloc(N_RAMP * sizeof(float)), *want = malloc(N_RAMP * sizeof(float));
    CU_ASSERT_EQUAL(st_to_f32(ramp, t->data, t->dtype, t->n_elems), ENG_OK);
    fill_ramp(want, 0, N_RAMP, NULL);
    for (int i = 0; i < N_RAMP; i += 997) bad += f2u(ramp[i]) != f2u(ref_half(ref_to_half(want[i])));
    CU_ASSERT_EQUAL(bad, 0);
    free(ramp);
    free(want);
    t = st_file_find(f, "empty");
    CU_ASSERT(t && t->n_elems == 0 && t->begin == t->end);
    t = st_file_find(f, "scalar");
    CU_ASSERT(t && t->n_elems == 1);
    st_file_close(f);
}

/* Every half survives decode -> write as F16 -> raw bytes unchanged. */
static void test_half_exhaustive_roundtrip(void) {
    float *v = malloc(65536 * sizeof(float));
    for (uint32_t h = 0; h < 65536; h++) v[h] = ref_half((uint16_t)h);
    st_write_entry e = {.name = "all", .dtype = ST_F16, .n_dims = 1, .shape = {65536}, .data = v};
    char err[256];
    const char *p = tmp_path("halves.safetensors");
    CU_ASSERT_EQUAL_FATAL(st_file_write(p, &e, 1, err, sizeof err), ENG_OK);
    st_file *f = NULL;
    CU_ASSERT_EQUAL_FATAL(st_file_open(&f, p, err, sizeof err), ENG_OK);
    const st_tensor *t = st_file_tensor(f, 0);
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t g = (uint16_t)(t->data[2 * h] | t->data[2 * h + 1] << 8);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) bad += (g & 0x7c00) != 0x7c00 || !(g & 0x3ff) || (g ^ h) & 0x8000;
        else bad += g != h;
    }
    CU_ASSERT_EQUAL(bad, 0);
    st_file_close(f);
    free(v);
}

static void test_malformed_corpus(void) {
    size_t len;
    char *list = tu_read_file(tu_data("malformed/expected.txt"), &len);
    CU_ASSERT_FATAL(list != NULL);
    int n_bad = 0, n_ok = 0, n_listed = 0;
    char *save = NULL;
    for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *name = line, *status = strchr(name, '\t');
        CU_ASSERT_FATAL(status != NULL);
        *status++ = 0;
        char *sub = strchr(status, '\t');
        CU_ASSERT_FATAL(sub != NULL);
        *sub++ = 0;
        n_listed++;
        char rel[300], err[1024] = "";
        snprintf(rel, sizeof rel, "malformed/%s", name);
        const char *path = tu_data(rel);
        st_file *f = NULL;
        eng_status st = st_file_open(&f, path, err, sizeof err);
        int want_ok = strcmp(status, "OK") == 0;
        int pass = want_ok ? st == ENG_OK
                           : (st == ENG_ERR_FORMAT || st == ENG_ERR_IO) && !f && strstr(err, name) && strstr(err, sub);
        if (!pass) printf("\n    %s: status %d, message: %s", name, st, err);
        CU_ASSERT(pass);
        st_file_close(f);
        n_ok += want_ok;
        n_bad += !want_ok;
        // The same bytes parsed from memory (exact-size heap copy, so ASan
        // sees any read past the end), labelled by the caller.
        size_t n;
        char *buf = tu_read_file(path, &n);
        CU_ASSERT_FATAL(buf != NULL);
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, buf, n);
        free(buf);
        char label[320];
        snprintf(label, sizeof label, "mem:%s", name);
        f = NULL;
        st = st_file_parse(&f, exact, n, label, err, sizeof err);
        pass = want_ok ? st == ENG_OK : st == ENG_ERR_FORMAT && !f && strstr(err, label) && strstr(err, sub);
        if (!pass) printf("\n    parse %s: status %d, message: %s", name, st, err);
        CU_ASSERT(pass);
        if (f) {  // converting every float tensor must be safe
            for (int i = 0; i < st_file_n_tensors(f); i++) {
                const st_tensor *t = st_file_tensor(f, i);
                float *dst = malloc(t->n_elems * sizeof(float) + 4);
                st_to_f32(dst, t->data, t->dtype, t->n_elems);
                free(dst);
            }
        }
        st_file_close(f);
        free(exact);
    }
    free(list);
    printf("\n    %d malformed files refused, %d valid ones accepted", n_bad, n_ok);
    CU_ASSERT(n_bad >= 20);
    // Every file in the directory is listed (a new case without an expectation is a bug).
    DIR *d = opendir(tu_data("malformed"));
    int n_files = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n_files += strstr(e->d_name, ".safetensors") != NULL;
    if (d) closedir(d);
    CU_ASSERT_EQUAL(n_files, n_listed);
}

static const st_tensor *find_ok(st_file *f, const char *name) {
    const st_tensor *t = st_file_find(f, name);
    CU_ASSERT_PTR_NOT_NULL(t);
    return t;
}

static void test_valid_edge_files(void) {
    char err[512];
    st_file *f = NULL;
    CU_ASSERT_EQUAL_FATAL(st_file_open(&f, tu_data("malformed/ok_unaligned.safetensors"), err, sizeof err), ENG_OK);
    const st_tensor *t = find_ok(f, "f");
    CU_ASSERT_EQUAL(((uintptr_t)t->data) % 4, 3);  // 8 + header (multiple of 8) + 3
    float v[2];
    CU_ASSERT_EQUAL(st_to_f32(v, t->data, t->dtype, 2), ENG_OK);
    CU_ASSERT(v[0] == 0.25f && v[1] == -3.0f);
    t = find_ok(f, "b");
    CU_ASSERT(t->data[0] == 1 && t->data[2] == 3 && t->dtype == ST_U8);
    CU_ASSERT_PTR_EQUAL(st_file_tensor(f, 0), st_file_find(f, "b"));
    st_file_close(f);

    CU_ASSERT_EQUAL_FATAL(st_file_open(&f, tu_data("malformed/ok_zero_size_and_scalar.safetensors"), err, sizeof err),
                          ENG_OK);
    t = find_ok(f, "s");
    CU_ASSERT(t->n_dims == 0 && t->n_elems == 1);
    CU_ASSERT_EQUAL(st_to_f32(v, t->data, t->dtype, 1), ENG_OK);
    CU_ASSERT_EQUAL(v[0], 1.5f);
    t = find_ok(f, "z");
    CU_ASSERT(t->n_dims == 2 && t->shape[0] == 0 && t->shape[1] == 7 && t->n_elems == 0);
    t = find_ok(f, "e");
    CU_ASSERT_EQUAL(st_to_f32(v, t->data, t->dtype, 2), ENG_OK);
    CU_ASSERT(v[0] == 1.0f && v[1] == -2.0f);
    st_file_close(f);

    CU_ASSERT_EQUAL_FATAL(st_file_open(&f, tu_data("malformed/ok_all_dtypes.safetensors"), err, sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(st_file_n_tensors(f), ST_N_DTYPES);
    for (int i = 0; i < ST_N_DTYPES; i++) {
        char name[32];
        snprintf(name, sizeof name, "t_%s", st_dtype_name((st_dtype)i));
        t = find_ok(f, name);
        if (t) CU_ASSERT(t->dtype == (st_dtype)i && t->end - t->begin == 2 * st_dtype_size((st_dtype)i));
    }
    st_file_close(f);

    CU_ASSERT_EQUAL_FATAL(st_file_open(&f, tu_data("malformed/ok_empty_header.safetensors"), err, sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(st_file_n_tensors(f), 0);
    CU_ASSERT_PTR_NULL(st_file_find(f, "x"));
    st_file_close(f);
    st_file_close(NULL);

    // A checkpoint written by transformers 5.23 / safetensors 0.8, if present.
    const char *real = tu_data("models/m32-f16/model.safetensors");
    if (access(real, R_OK) == 0) {
        CU_ASSERT_EQUAL_FATAL(st_file_open(&f, real, err, sizeof err), ENG_OK);
        CU_ASSERT_EQUAL(st_file_n_tensors(f), 4 + 12 * 2);
        t = find_ok(f, "gpt_neox.layers.1.attention.query_key_value.weight");
        CU_ASSERT(t && t->dtype == ST_F16 && t->shape[0] == 192 && t->shape[1] == 64);
        st_file_close(f);
    }
}

static void test_open_and_write_errors(void) {
    char err[512] = "";
    st_file *f = (st_file *)1;
    CU_ASSERT_EQUAL(st_file_open(&f, tmp_path("does-not-exist.safetensors"), err, sizeof err), ENG_ERR_IO);
    CU_ASSERT_PTR_NULL(f);
    CU_ASSERT(strstr(err, "does-not-exist.safetensors") != NULL);
    CU_ASSERT_EQUAL(st_file_open(&f, g_tmp, err, sizeof err), ENG_ERR_IO);
    CU_ASSERT(strstr(err, "not a regular file") != NULL);
    CU_ASSERT_EQUAL(st_file_parse(&f, NULL, 10, "x", err, sizeof err), ENG_ERR_INVAL);

    float x[4] = {1, 2, 3, 4};
    st_write_entry e[2] = {{.name = "a", .dtype = ST_F32, .n_dims = 1, .shape = {4}, .data = x},
                           {.name = "b", .dtype = ST_F32, .n_dims = 1, .shape = {4}, .data = x}};
    const char *p = tmp_path("w.safetensors");
    e[1].dtype = ST_I32;
    CU_ASSERT_EQUAL(st_file_write(p, e, 2, err, sizeof err), ENG_ERR_INVAL);
    CU_ASSERT(strstr(err, "'b'") && strstr(err, "I32"));
    e[1].dtype = ST_F32, e[1].name = "a";
    CU_ASSERT_EQUAL(st_file_write(p, e, 2, err, sizeof err), ENG_ERR_INVAL);
    CU_ASSERT(strstr(err, "duplicate") != NULL);
    e[1].name = "b", e[1].shape[0] = -1;
    CU_ASSERT_EQUAL(st_file_write(p, e, 2, err, sizeof err), ENG_ERR_INVAL);
    e[1].shape[0] = 4, e[1].data = NULL;
    CU_ASSERT_EQUAL(st_file_write(p, e, 2, err, sizeof err), ENG_ERR_INVAL);
    e[1].data = x, e[1].n_dims = ST_MAX_DIMS + 1;
    CU_ASSERT_EQUAL(st_file_write(p, e, 2, err, sizeof err), ENG_ERR_INVAL);
    e[1].n_dims = 1, e[1].name = "__metadata__";
    CU_ASSERT_EQUAL(st_file_write(p, e, 2, err, sizeof err), ENG_ERR_INVAL);
    CU_ASSERT_NOT_EQUAL(access(p, F_OK), 0);  // nothing written on a bad entry
    e[1].name = "b";
    CU_ASSERT_EQUAL(st_file_write(tmp_path("no/such/dir.safetensors"), e, 2, err, sizeof err), ENG_ERR_IO);
    CU_ASSERT(strstr(err, "dir.safetensors") != NULL);
    CU_ASSERT_EQUAL(st_file_write(p, e, 0, err, sizeof err), ENG_OK);  // a valid empty file
    CU_ASSERT_EQUAL(st_file_open(&f, p, err, sizeof err), ENG_OK);
    CU_ASSERT_EQUAL(st_file_n_tensors(f), 0);
    st_file_close(f);
}

/* Every allocation in open and write may fail: an error, no leak, no crash. */
static void test_alloc_failures(void) {
    float x[6] = {1, 2, 3, 4, 5, 6};
    st_write_entry e[3] = {{.name = "a", .dtype = ST_F16, .n_dims = 2, .shape = {2, 3}, .data = x},
                           {.name = "b", .dtype = ST_BF16, .n_dims = 1, .shape = {6}, .data = x},
                           {.name = "c", .dtype = ST_F32, .n_dims = 1, .shape = {6}, .data = x}};
    char err[512];
    const char *p = tmp_path("oom.safetensors");
    int n_fail = 0;
    for (long k = 0;; k++) {
        eng_alloc_fail_after(k);
        eng_status st = st_file_write(p, e, 3, err, sizeof err);
        eng_alloc_fail_after(-1);
        if (st == ENG_OK) break;
        CU_ASSERT_EQUAL(st, ENG_ERR_NOMEM);
        n_fail++;
        if (k > 1000) { CU_FAIL("write never succeeds"); break; }
    }
    CU_ASSERT(n_fail >= 2);
    for (long k = 0;; k++) {
        st_file *f = NULL;
        eng_alloc_fail_after(k);
        eng_status st = st_file_open(&f, p, err, sizeof err);
        eng_alloc_fail_after(-1);
        if (st == ENG_OK) {
            CU_ASSERT_EQUAL(st_file_n_tensors(f), 3);
            st_file_close(f);
            break;
        }
        // jansson turns some of its allocation failures into parse errors
        CU_ASSERT(st == ENG_ERR_NOMEM || st == ENG_ERR_FORMAT);
        CU_ASSERT_PTR_NULL(f);
        CU_ASSERT(strstr(err, "oom.safetensors") != NULL);
        if (k > 1000) { CU_FAIL("open never succeeds"); break; }
    }
}

int main(void) {
    json_set_alloc_funcs(eng_alloc, eng_free);  // jansson's allocations join the failure sweep
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("safetensors", tmp_init, tmp_clean);
    CU_add_test(s, "dtype names and sizes", test_dtype_table);
    CU_add_test(s, "F16 decode: all 65536 halves, unaligned; BF16", test_half_decode_exhaustive);
    CU_add_test(s, "write/open round trip F32/F16/BF16, specials, fill", test_roundtrip);
    CU_add_test(s, "every half survives F16 write", test_half_exhaustive_roundtrip);
    CU_add_test(s, "malformed corpus: error names file and fault", test_malformed_corpus);
    CU_add_test(s, "valid edge files: unaligned, scalar, zero-size, all dtypes", test_valid_edge_files);
    CU_add_test(s, "open and write errors", test_open_and_write_errors);
    CU_add_test(s, "allocation failures in open and write", test_alloc_failures);
    return tu_run();
}
