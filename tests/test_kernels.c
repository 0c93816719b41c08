/* test_kernels.c — every optimized CPU op against its naive reference
 * (kernels/kn.h), at awkward shapes: T = 1 decode rows, sizes that are not
 * multiples of any vector width, every Pythia head_dim (32/64/80/128/256) and
 * rotary width (8/16/20/32/64). Outputs sit between guard words that must
 * come back untouched, and results must be finite. Suite "kernels_cuda"
 * prints SKIP when no device is present. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"
#include "testutil.h"

#define GUARD 16
#define GUARD_VAL 1234.5f

static uint64_t g_rng = 42;
static float frand(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
}
static float *rnd(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}
/* A buffer of n floats with GUARD sentinel floats on each side. */
static float *guarded(size_t n) {
    float *p = malloc((n + 2 * GUARD) * sizeof(float));
    for (size_t i = 0; i < n + 2 * GUARD; i++) p[i] = GUARD_VAL;
    return p + GUARD;
}
static int guards_ok(const float *p, size_t n) {
    for (int i = 1; i <= GUARD; i++)
        if (p[-i] != GUARD_VAL || p[n + i - 1] != GUARD_VAL) return 0;
    return 1;
}
static void guarded_free(float *p) { free(p - GUARD); }

/* max |a-b| / (atol + rtol|b|) <= 1 and everything finite. */
static int close_enough(const float *a, const float *b, size_t n, float atol, float rtol, const char *what) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i]) || fabsf(a[i] - b[i]) > atol + rtol * fabsf(b[i])) {
            printf("\n    %s: mismatch at %zu: %.9g vs ref %.9g\n", what, i, a[i], b[i]);
            return 0;
        }
    }
    return 1;
}

static void test_matmul(void) {
    int shapes[][3] = {{1, 7, 5}, {1, 64, 512}, {3, 33, 17}, {17, 80, 240}, {64, 256, 100}, {1, 1, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *x = rnd((size_t)M * K), *w = rnd((size_t)N * K), *b = rnd(N);
        float *y = guarded((size_t)M * N), *r = guarded((size_t)M * N);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            kn_matmul(y, x, w, with_bias ? b : NULL, M, K, N);
            kn_matmul_ref(r, x, w, with_bias ? b : NULL, M, K, N);
            CU_ASSERT(close_enough(y, r, (size_t)M * N, 1e-5f, 1e-5f, "matmul"));
            CU_ASSERT(guards_ok(y, (size_t)M * N));
        }
        free(x); free(w); free(b); guarded_free(y); guarded_free(r);
    }
}

static void test_layernorm(void) {
    int shapes[][2] = {{1, 16}, {5, 80}, {33, 2560}, {2, 7}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], C = shapes[s][1];
        float *x = rnd((size_t)M * C), *w = rnd(C), *b = rnd(C);
        for (int i = 0; i < M * C; i++) x[i] = x[i] * 30.0f + 100.0f;   /* large mean: catastrophic cancellation bait */
        float *y = guarded((size_t)M * C), *r = guarded((size_t)M * C);
        kn_layernorm(y, x, w, b, M, C, 1e-5f);
        kn_layernorm_ref(r, x, w, b, M, C, 1e-5f);
        CU_ASSERT(close_enough(y, r, (size_t)M * C, 1e-5f, 1e-5f, "layernorm"));
        CU_ASSERT(guards_ok(y, (size_t)M * C));
        free(x); free(w); free(b); guarded_free(y); guarded_free(r);
    }
}

static void test_gelu(void) {
    size_t n = 100003;
    float *x = guarded(n), *r = guarded(n);
    for (size_t i = 0; i < n; i++) x[i] = r[i] = frand() * 8.0f;
    x[0] = r[0] = 0.0f; x[1] = r[1] = -20.0f; x[2] = r[2] = 20.0f;
    kn_gelu(x, n);
    kn_gelu_ref(r, n);
    CU_ASSERT(close_enough(x, r, n, 1e-6f, 2e-6f, "gelu"));
    CU_ASSERT(guards_ok(x, n));
    CU_ASSERT(fabsf(x[2] - 20.0f) < 1e-5f && fabsf(x[1]) < 1e-6f);
    guarded_free(x); guarded_free(r);
}

static void test_rope(void) {
    int dims[][2] = {{32, 8}, {64, 16}, {80, 20}, {128, 32}, {256, 64}};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int D = dims[s][0], R = dims[s][1], NH = 3, T = 5;
        size_t stride = (size_t)NH * D * 3 + 7;   /* rows of a [Q;K;V] buffer, plus odd padding */
        float inv[64], ct[5 * 32], st[5 * 32];
        int32_t pos[5] = {0, 1, 2047, 4096, 100000};
        kn_rope_inv_freq(inv, R, 10000.0f);
        kn_rope_table(ct, st, inv, pos, T, R);
        float *x = rnd((size_t)T * stride), *y = malloc((size_t)T * stride * sizeof(float));
        memcpy(y, x, (size_t)T * stride * sizeof(float));
        kn_rope(x, T, NH, D, stride, R, ct, st);
        kn_rope_ref(y, T, NH, D, stride, R, ct, st);
        CU_ASSERT(close_enough(x, y, (size_t)T * stride, 1e-6f, 1e-6f, "rope"));
        /* position 0 is the identity; dims >= R of every head are untouched */
        float *z = rnd(stride), *z0 = malloc(stride * sizeof(float));
        memcpy(z0, z, stride * sizeof(float));
        kn_rope(z, 1, NH, D, stride, R, ct, st);
        CU_ASSERT(memcmp(z, z0, stride * sizeof(float)) == 0);
        kn_rope(x, 1, NH, D, stride, R, ct + R / 2, st + R / 2);
        for (int h = 0; h < NH; h++)
            for (int d = R; d < D; d++) CU_ASSERT_EQUAL(x[h * D + d], y[h * D + d]);
        free(x); free(y); free(z); free(z0);
    }
}

static void test_attention(void) {
    int Ds[] = {32, 64, 80, 128, 256};
    for (size_t s = 0; s < sizeof Ds / sizeof Ds[0]; s++) {
        int D = Ds[s], NH = 3, cap = 37;
        for (int T = 1; T <= 9; T += 8) {
            int base = 27;   /* keys already cached before the chunk */
            size_t qs = (size_t)NH * D + 3;
            float *q = rnd((size_t)T * qs), *k = rnd((size_t)NH * cap * D), *v = rnd((size_t)NH * cap * D);
            int32_t n_vis[3 * 9];
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++) n_vis[h * T + t] = base + t + 1 - h;   /* per-head counts differ */
            float *o = guarded((size_t)T * NH * D), *r = guarded((size_t)T * NH * D);
            float *scr = malloc((size_t)kn_get_threads() * cap * sizeof(float));
            float *p = calloc((size_t)NH * T * cap, sizeof(float)), *pr = calloc((size_t)NH * T * cap, sizeof(float));
            kn_attention(o, q, qs, k, v, T, NH, D, cap, n_vis, scr, p);
            kn_attention_ref(r, q, qs, k, v, T, NH, D, cap, n_vis, pr);
            CU_ASSERT(close_enough(o, r, (size_t)T * NH * D, 2e-6f, 1e-5f, "attention"));
            CU_ASSERT(close_enough(p, pr, (size_t)NH * T * cap, 1e-7f, 1e-5f, "attention probs"));
            CU_ASSERT(guards_ok(o, (size_t)T * NH * D));
            free(q); free(k); free(v); free(scr); free(p); free(pr); guarded_free(o); guarded_free(r);
        }
    }
}

/* Every one of the 65536 half values converts exactly (compiler's _Float16
 * is the yardstick); bf16 is the top half of an fp32. */
static void test_f16_conversion(void) {
    uint16_t *h = malloc(65536 * sizeof(uint16_t));
    float *f = malloc(65536 * sizeof(float));
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    kn_f16_to_f32(f, h, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        _Float16 x;
        memcpy(&x, &h[i], 2);
        float want = (float)x;
        if (isnan(want) ? !isnan(f[i]) : memcmp(&want, &f[i], 4) != 0) bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    kn_bf16_to_f32(f, h, 65536);
    for (int i = 0; i < 65536; i++) {
        uint32_t u = (uint32_t)i << 16;
        if (memcmp(&u, &f[i], 4) != 0) bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(h); free(f);
}

static void test_matmul_lp(void) {
    int shapes[][3] = {{1, 7, 5}, {1, 64, 512}, {3, 33, 17}, {8, 80, 300}, {9, 80, 300}, {40, 256, 600},
                       {1, 2560, 37}, {2, 10240, 9}, {1, 71, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *x = rnd((size_t)M * K), *b = rnd(N), *scr = malloc((size_t)KN_LP_TILE * K * sizeof(float));
        uint16_t *w = malloc((size_t)N * K * sizeof(uint16_t));
        for (size_t i = 0; i < (size_t)N * K; i++) {
            _Float16 hv = (_Float16)frand();
            memcpy(&w[i], &hv, 2);
        }
        for (int wt = KN_W_F16; wt <= KN_W_BF16; wt++)
            for (int portable = 0; portable < 2; portable++) {   /* x86 AVX2/F16C path, then plain C */
                float *y = guarded((size_t)M * N), *r = guarded((size_t)M * N);
                kn_set_portable(portable);
                kn_matmul_lp(y, x, w, (kn_wtype)wt, s % 2 ? b : NULL, M, K, N, scr);
                kn_set_portable(0);
                kn_matmul_lp_ref(r, x, w, (kn_wtype)wt, s % 2 ? b : NULL, M, K, N);
                /* fp32 summation error grows with K (the ref sums in double) */
                CU_ASSERT(close_enough(y, r, (size_t)M * N, 1e-5f + 3e-8f * K, 1e-5f, "matmul_lp"));
                CU_ASSERT(guards_ok(y, (size_t)M * N));
                guarded_free(y); guarded_free(r);
            }
        free(x); free(b); free(scr); free(w);
    }
}

static void test_cuda_device(void) {
    int n = kn_cuda_device_count();
    if (n == 0) {
        tu_skip("kernels_cuda", kn_cuda_unavailable_reason());
        return;
    }
    CU_ASSERT(n > 0);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    kn_set_threads(2);
    CU_pSuite s = CU_add_suite("kernels", NULL, NULL);
    CU_add_test(s, "matmul vs ref (sgemv/sgemm, bias)", test_matmul);
    CU_add_test(s, "fp16/bf16 -> fp32 conversion exact (all 65536)", test_f16_conversion);
    CU_add_test(s, "matmul with fp16/bf16 weights vs ref (gemv + tiled sgemm)", test_matmul_lp);
    CU_add_test(s, "layernorm vs ref", test_layernorm);
    CU_add_test(s, "gelu (erf) vs ref", test_gelu);
    CU_add_test(s, "rope partial rotate-half vs ref", test_rope);
    CU_add_test(s, "attention vs ref (per-head counts, probs)", test_attention);
    CU_pSuite c = CU_add_suite("kernels_cuda", NULL, NULL);
    CU_add_test(c, "device present or SKIP", test_cuda_device);
    return tu_run();
}
