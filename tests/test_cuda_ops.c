/* test_cuda_ops.c — every CUDA op (kernels/kn_cuda.h, libkvcuda.so) against
 * its CPU reference (kernels/kn.h), the pattern of ggml's test-backend-ops
 * and llm.c's dev/cuda: random inputs at awkward shapes (sizes that are not
 * multiples of any block or tile, T = 1 decode, head_dim 80 and 256, caches
 * of a few thousand slots, split-K and single-pass attention), per-op
 * tolerances (exact where the arithmetic is the same, fp16/bf16-activation
 * tolerances for the 16-bit GEMM), no NaN/Inf, and canary words before and
 * after every device output that must come back untouched. Each test also
 * checks that the ops allocated nothing (alloc_count).
 *
 * The binary talks to the backend only through the loader's table, so it
 * builds in CUDA=0 builds too. Without a usable device it prints exactly
 * one line, "SKIP test_cuda_ops: <reason>", and passes — unless
 * KV_REQUIRE_GPU=1 (make test-gpu), which turns that into a failure.
 * KV_GPU=N picks the device (default 0); KV_TEST_VERBOSE=1 prints each
 * comparison's largest error relative to its tolerance. */
#include <CUnit/Basic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"
#include "kn_cuda.h"
#include "testutil.h"

static const kn_cuda_api *A;
static kn_cuda_ctx *C;
static int A_device;   /* C's device */

/* ------------------------------------------------------------ plumbing */

#define GUARD_BYTES 64
static const float GUARD_VAL = 1234.5f;   /* the canary, repeated */
static unsigned char g_guard[GUARD_BYTES];

#define MAX_BUFS 256
static void *g_dev[MAX_BUFS], *g_host[MAX_BUFS];
static int g_ndev, g_nhost;

/* Frees every buffer of the current test (device and host). */
static void reset(void) {
    for (int i = 0; i < g_ndev; i++) A->mem_free(C, g_dev[i]);
    for (int i = 0; i < g_nhost; i++) free(g_host[i]);
    g_ndev = g_nhost = 0;
}

static void *hbuf(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (p && g_nhost < MAX_BUFS) g_host[g_nhost++] = p;
    return p;
}

#define OK(call)                                                               \
    do {                                                                       \
        kn_status st_ = (call);                                                \
        if (st_ != KN_OK) {                                                    \
            printf("\n    %s: %s\n", #call, A->errmsg(C));                     \
            CU_FAIL_FATAL(#call);                                              \
        }                                                                      \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {   /* uniform [-1, 1) */
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
}
static int irand(int n) { return (int)((frand() + 1.0f) * 0.5f * (float)n) % (n > 0 ? n : 1); }
static float *rnd(size_t n, float scale, float offset) {
    float *p = hbuf(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale + offset;
    return p;
}

/* A device buffer of `bytes` between GUARD_BYTES of canaries on each side;
 * returns the interior (64-byte aligned). The interior starts as init
 * (NULL: zeros). */
static void *dev_guarded(size_t bytes, const void *init) {
    void *base = NULL;
    OK(A->mem_alloc(C, &base, bytes + 2 * GUARD_BYTES));
    if (g_ndev < MAX_BUFS) g_dev[g_ndev++] = base;
    unsigned char *h = hbuf(bytes + 2 * GUARD_BYTES);
    memcpy(h, g_guard, GUARD_BYTES);
    if (init) memcpy(h + GUARD_BYTES, init, bytes);
    memcpy(h + GUARD_BYTES + bytes, g_guard, GUARD_BYTES);
    OK(A->copy_h2d(C, base, h, bytes + 2 * GUARD_BYTES));
    return (unsigned char *)base + GUARD_BYTES;
}
static void *dev_put(const void *host, size_t bytes) { return dev_guarded(bytes, host); }

/* Copies the interior back into host and checks both canaries. */
static int dev_get(void *host, const void *d, size_t bytes, const char *what) {
    unsigned char *h = hbuf(bytes + 2 * GUARD_BYTES);
    kn_status st = A->copy_d2h(C, h, (const unsigned char *)d - GUARD_BYTES, bytes + 2 * GUARD_BYTES);
    if (st != KN_OK) {
        printf("\n    %s: copy back: %s\n", what, A->errmsg(C));
        return 0;
    }
    memcpy(host, h + GUARD_BYTES, bytes);
    if (memcmp(h, g_guard, GUARD_BYTES) != 0 || memcmp(h + GUARD_BYTES + bytes, g_guard, GUARD_BYTES) != 0) {
        printf("\n    %s: guard words overwritten\n", what);
        return 0;
    }
    return 1;
}

/* |a - ref| <= atol + rtol·|ref| everywhere, a finite where ref is. With
 * KV_TEST_VERBOSE=1 each call prints its largest error as a fraction of the
 * tolerance (what a first run on new hardware should look at). */
static int g_verbose;
static int close_enough(const float *a, const float *ref, size_t n, float atol, float rtol, const char *what) {
    double worst = 0.0, worst_abs = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)a[i] - (double)ref[i]), tol = atol + rtol * fabsf(ref[i]);
        if (!isfinite(a[i]) || !isfinite(ref[i]) || err > tol) {
            printf("\n    %s: mismatch at %zu: %.9g vs ref %.9g (atol %g rtol %g)\n", what, i, a[i], ref[i],
                   (double)atol, (double)rtol);
            return 0;
        }
        if (tol > 0 && err / tol > worst) worst = err / tol;
        if (err > worst_abs) worst_abs = err;
    }
    if (g_verbose) printf("\n    %s: max |err| %.3g, %.2f of tolerance", what, worst_abs, worst);
    return 1;
}

/* 16-bit weights from floats: bf16 by truncation, fp16 by truncation in
 * the normal range (tiny values flush to zero). Exactness does not matter:
 * the reference converts the same bits. */
static uint16_t to16(float f, kn_wtype wt) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (wt == KN_W_BF16) return (uint16_t)(u >> 16);
    uint32_t s = (u >> 16) & 0x8000u;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)s;
    if (e >= 31) return (uint16_t)(s | 0x7bffu);
    return (uint16_t)(s | (uint32_t)e << 10 | ((u >> 13) & 0x3ffu));
}

static size_t g_allocs;   /* alloc_count after a test's own allocations */
#define MARK_ALLOCS() (g_allocs = A->alloc_count(C))
#define NO_OP_ALLOCS() CU_ASSERT_EQUAL(A->alloc_count(C), g_allocs)

/* ------------------------------------------------------------ matmul */

static void test_matmul_f32(void) {
    int shapes[][3] = {{1, 7, 5}, {1, 64, 512}, {3, 33, 17}, {17, 80, 240}, {64, 256, 100}, {1, 1, 1},
                       {130, 2560, 97}, {9, 1000, 33}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *x = rnd((size_t)M * K, 1, 0), *w = rnd((size_t)N * K, 1, 0), *b = rnd(N, 1, 0);
        float *y = hbuf((size_t)M * N * 4), *r = hbuf((size_t)M * N * 4);
        float *dx = dev_put(x, (size_t)M * K * 4), *dw = dev_put(w, (size_t)N * K * 4), *db = dev_put(b, N * 4);
        float *dy = dev_guarded((size_t)M * N * 4, NULL);
        MARK_ALLOCS();
        for (int bias = 0; bias < 2; bias++) {
            OK(A->matmul(C, dy, dx, dw, KN_W_F32, bias ? db : NULL, M, K, N));
            CU_ASSERT(dev_get(y, dy, (size_t)M * N * 4, "matmul f32"));
            kn_matmul_ref(r, x, w, bias ? b : NULL, M, K, N);
            CU_ASSERT(close_enough(y, r, (size_t)M * N, 1e-5f + 1e-7f * K, 1e-5f, "matmul f32"));
        }
        NO_OP_ALLOCS();
        reset();
    }
}

/* Tolerance of the 16-bit-weight matmul: exact conversion and fp32 sums
 * (GEMV, M <= 8), or activations rounded to the weight dtype in two terms
 * (~2^-22 / 2^-16 relative, plus the tensor cores' fp32 accumulation, which
 * truncates) or one term (2^-11 / 2^-8 relative per element, growing with
 * sqrt(K)) for M > 8. */
static void lp_tol(int M, int K, kn_wtype wt, int split, float *atol, float *rtol) {
    float sk = sqrtf((float)K);
    int f16 = wt == KN_W_F16;
    if (M <= 8) *atol = 1e-5f + 1e-7f * K, *rtol = 1e-5f;
    else if (split == 2) *atol = f16 ? 1e-5f + 2e-7f * K : 1e-5f + 3e-7f * K, *rtol = 1e-5f;
    else *atol = f16 ? 1e-4f + 6e-4f * sk : 1e-3f + 6e-3f * sk, *rtol = f16 ? 1e-3f : 8e-3f;
}

static void test_matmul_lp(void) {
    int shapes[][3] = {{1, 7, 5}, {1, 64, 512}, {3, 80, 240}, {8, 2560, 64}, {2, 7, 3}, {9, 80, 33},
                       {64, 256, 100}, {130, 2560, 97}, {17, 7, 13}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int wt = KN_W_F16; wt <= KN_W_BF16; wt++) {
            int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            float *x = rnd((size_t)M * K, 1, 0), *wf = rnd((size_t)N * K, 1, 0), *b = rnd(N, 1, 0);
            uint16_t *w = hbuf((size_t)N * K * 2);
            for (size_t i = 0; i < (size_t)N * K; i++) w[i] = to16(wf[i], (kn_wtype)wt);
            float *y = hbuf((size_t)M * N * 4), *r = hbuf((size_t)M * N * 4);
            float *dx = dev_put(x, (size_t)M * K * 4), *db = dev_put(b, N * 4);
            uint16_t *dw = dev_put(w, (size_t)N * K * 2);
            float *dy = dev_guarded((size_t)M * N * 4, NULL);
            MARK_ALLOCS();
            for (int split = 2; split >= (M > 8 ? 1 : 2); split--) {
                A->set_lp_split(C, split);
                OK(A->matmul(C, dy, dx, dw, (kn_wtype)wt, s % 2 ? db : NULL, M, K, N));
                CU_ASSERT(dev_get(y, dy, (size_t)M * N * 4, "matmul lp"));
                kn_matmul_lp_ref(r, x, w, (kn_wtype)wt, s % 2 ? b : NULL, M, K, N);
                float atol, rtol;
                lp_tol(M, K, (kn_wtype)wt, split, &atol, &rtol);
                char what[64];
                snprintf(what, sizeof what, "matmul %s M=%d K=%d split=%d", wt == KN_W_F16 ? "f16" : "bf16", M, K,
                         split);
                CU_ASSERT(close_enough(y, r, (size_t)M * N, atol, rtol, what));
            }
            A->set_lp_split(C, 2);
            NO_OP_ALLOCS();
            reset();
        }
}

/* ------------------------------------------------------------ embedding, layernorm, pointwise */

static void test_embed(void) {
    int V = 1000, shapes[][2] = {{1, 7}, {37, 80}, {5, 2560}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int wt = KN_W_F32; wt <= KN_W_BF16; wt++) {
            int T = shapes[s][0], Cc = shapes[s][1];
            size_t esz = wt == KN_W_F32 ? 4 : 2;
            float *tf = rnd((size_t)V * Cc, 1, 0);
            void *table = tf;
            if (wt != KN_W_F32) {
                uint16_t *t16 = hbuf((size_t)V * Cc * 2);
                for (size_t i = 0; i < (size_t)V * Cc; i++) t16[i] = to16(tf[i], (kn_wtype)wt);
                table = t16;
            }
            int32_t *tok = hbuf((size_t)T * 4);
            for (int t = 0; t < T; t++) tok[t] = t == 0 ? V - 1 : (t == 1 ? 0 : irand(V));
            void *dt = dev_put(table, (size_t)V * Cc * esz);
            int32_t *dtok = dev_put(tok, (size_t)T * 4);
            float *dout = dev_guarded((size_t)T * Cc * 4, NULL);
            float *y = hbuf((size_t)T * Cc * 4), *r = hbuf((size_t)T * Cc * 4);
            MARK_ALLOCS();
            OK(A->embed(C, dout, dtok, T, dt, (kn_wtype)wt, V, Cc));
            CU_ASSERT(dev_get(y, dout, (size_t)T * Cc * 4, "embed"));
            kn_embed_ref(r, tok, T, table, (kn_wtype)wt, V, Cc);
            CU_ASSERT(close_enough(y, r, (size_t)T * Cc, 0.0f, 0.0f, "embed"));
            // out-of-range tokens: NaN rows, nothing read out of bounds
            int32_t bad[2] = {-1, V};
            int nb = T < 2 ? T : 2;
            OK(A->copy_h2d(C, dtok, bad, (size_t)nb * 4));
            OK(A->embed(C, dout, dtok, nb, dt, (kn_wtype)wt, V, Cc));
            CU_ASSERT(dev_get(y, dout, (size_t)T * Cc * 4, "embed bad"));
            int all_nan = 1;
            for (int i = 0; i < nb * Cc; i++) all_nan &= isnan(y[i]) != 0;
            CU_ASSERT(all_nan);
            NO_OP_ALLOCS();
            reset();
        }
}

static void test_layernorm(void) {
    int shapes[][2] = {{1, 7}, {5, 80}, {33, 1000}, {3, 2560}, {2, 5120}, {1, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], Cc = shapes[s][1];
        float *x = rnd((size_t)M * Cc, 30, 100), *w = rnd(Cc, 1, 0), *b = rnd(Cc, 1, 0);   // large mean: cancellation bait
        float *y = hbuf((size_t)M * Cc * 4), *r = hbuf((size_t)M * Cc * 4);
        float *dx = dev_put(x, (size_t)M * Cc * 4), *dw = dev_put(w, Cc * 4), *db = dev_put(b, Cc * 4);
        float *dy = dev_guarded((size_t)M * Cc * 4, NULL);
        MARK_ALLOCS();
        OK(A->layernorm(C, dy, dx, dw, db, M, Cc, 1e-5f));
        CU_ASSERT(dev_get(y, dy, (size_t)M * Cc * 4, "layernorm"));
        kn_layernorm_ref(r, x, w, b, M, Cc, 1e-5f);
        CU_ASSERT(close_enough(y, r, (size_t)M * Cc, 2e-5f, 1e-5f, "layernorm"));
        OK(A->layernorm(C, dx, dx, dw, db, M, Cc, 1e-5f));   // in place
        CU_ASSERT(dev_get(y, dx, (size_t)M * Cc * 4, "layernorm in place"));
        CU_ASSERT(close_enough(y, r, (size_t)M * Cc, 2e-5f, 1e-5f, "layernorm in place"));
        NO_OP_ALLOCS();
        reset();
    }
}

static void test_gelu_add2(void) {
    size_t sizes[] = {1, 1000, (1u << 20) + 3};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x = rnd(n, 6, 0), *r = hbuf(n * 4), *y = hbuf(n * 4);
        x[0] = 0.0f;
        if (n > 2) x[1] = -20.0f, x[2] = 20.0f;
        memcpy(r, x, n * 4);
        float *dx = dev_put(x, n * 4);
        MARK_ALLOCS();
        OK(A->gelu(C, dx, n));
        CU_ASSERT(dev_get(y, dx, n * 4, "gelu"));
        kn_gelu_ref(r, n);
        CU_ASSERT(close_enough(y, r, n, 1e-6f, 2e-6f, "gelu"));

        float *a = rnd(n, 1, 0), *b = rnd(n, 1, 0), *y0 = rnd(n, 1, 0);
        float *da = dev_put(a, n * 4), *db = dev_put(b, n * 4), *dy = dev_put(y0, n * 4);
        MARK_ALLOCS();
        for (int with_b = 1; with_b >= 0; with_b--) {
            OK(A->add2(C, dy, da, with_b ? db : NULL, n));
            kn_add2(y0, a, with_b ? b : NULL, n);
        }
        CU_ASSERT(dev_get(y, dy, n * 4, "add2"));
        CU_ASSERT(close_enough(y, y0, n, 0.0f, 0.0f, "add2"));   // same order of additions: bit equal
        NO_OP_ALLOCS();
        reset();
    }
}

/* ------------------------------------------------------------ rope */

static void test_rope(void) {
    int dims[][2] = {{32, 8}, {64, 16}, {80, 20}, {128, 32}, {256, 64}};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++)
        for (int T = 1; T <= 7; T += 6) {
            int D = dims[s][0], R = dims[s][1], NH = 3, h2 = R / 2;
            size_t stride = (size_t)NH * D * 3, n = (size_t)T * stride;
            float inv[32];
            int32_t pos[7];
            for (int t = 0; t < T; t++) pos[t] = t == 0 ? 4999 : irand(5000);
            kn_rope_inv_freq(inv, R, 10000.0f);
            float *ct = hbuf((size_t)T * h2 * 4), *st = hbuf((size_t)T * h2 * 4);
            float *gc = hbuf((size_t)T * h2 * 4), *gs = hbuf((size_t)T * h2 * 4);
            kn_rope_table(ct, st, inv, pos, T, R);
            float *dinv = dev_put(inv, (size_t)h2 * 4);
            int32_t *dpos = dev_put(pos, (size_t)T * 4);
            float *dct = dev_guarded((size_t)T * h2 * 4, NULL), *dst = dev_guarded((size_t)T * h2 * 4, NULL);
            MARK_ALLOCS();
            OK(A->rope_table(C, dct, dst, dinv, dpos, T, R));
            CU_ASSERT(dev_get(gc, dct, (size_t)T * h2 * 4, "rope_table cos"));
            CU_ASSERT(dev_get(gs, dst, (size_t)T * h2 * 4, "rope_table sin"));
            CU_ASSERT(close_enough(gc, ct, (size_t)T * h2, 1e-6f, 0.0f, "rope_table cos"));
            CU_ASSERT(close_enough(gs, st, (size_t)T * h2, 1e-6f, 0.0f, "rope_table sin"));

            float *x = rnd(n, 1, 0), *y = hbuf(n * 4);
            float *dx = dev_put(x, n * 4), *hct = dev_put(ct, (size_t)T * h2 * 4), *hst = dev_put(st, (size_t)T * h2 * 4);
            MARK_ALLOCS();
            // q and k inside a qkv row, as forward.c rotates them; v untouched
            OK(A->rope(C, dx, T, NH, D, stride, R, hct, hst));
            OK(A->rope(C, dx + (size_t)NH * D, T, NH, D, stride, R, hct, hst));
            CU_ASSERT(dev_get(y, dx, n * 4, "rope"));
            kn_rope_ref(x, T, NH, D, stride, R, ct, st);
            kn_rope_ref(x + (size_t)NH * D, T, NH, D, stride, R, ct, st);
            CU_ASSERT(close_enough(y, x, n, 1e-6f, 1e-6f, "rope"));
            NO_OP_ALLOCS();
            reset();
        }
}

/* ------------------------------------------------------------ attention */

enum { VIS_DECODE, VIS_PREFILL, VIS_FULL };

static void attention_case(int T, int NH, int D, int cap, int vis, float qscale) {
    size_t q_stride = (size_t)3 * NH * D, nq = (size_t)T * q_stride, nkv = (size_t)NH * cap * D;
    size_t no = (size_t)T * NH * D, np = (size_t)NH * T * cap;
    float *q = rnd(nq, qscale, 0), *k = rnd(nkv, 1, 0), *v = rnd(nkv, 1, 0);
    int32_t *n_vis = hbuf((size_t)NH * T * 4);
    for (int h = 0; h < NH; h++) {
        int base = cap - T > 0 ? irand(cap - T + 1) : 0;
        if (h == 0) base = cap - T;   // one head runs up to the last slot
        for (int t = 0; t < T; t++)
            n_vis[h * T + t] = vis == VIS_FULL ? cap : (vis == VIS_PREFILL ? base + t + 1 : 1 + irand(cap));
        if (vis == VIS_DECODE && h == 1) n_vis[h * T] = 1;
    }
    float *out = hbuf(no * 4), *ref = hbuf(no * 4), *probs = hbuf(np * 4), *rprobs = hbuf(np * 4);
    for (size_t i = 0; i < np; i++) rprobs[i] = -7.0f;   // slots past n_vis stay untouched
    float *dq = dev_put(q, nq * 4), *dk = dev_put(k, nkv * 4), *dv = dev_put(v, nkv * 4);
    int32_t *dvis = dev_put(n_vis, (size_t)NH * T * 4);
    float *dout = dev_guarded(no * 4, NULL), *dprobs = dev_guarded(np * 4, rprobs);
    MARK_ALLOCS();
    char what[96];
    snprintf(what, sizeof what, "attention T=%d NH=%d D=%d cap=%d", T, NH, D, cap);
    kn_attention_ref(ref, q, q_stride, k, v, T, NH, D, cap, n_vis, rprobs);
    for (int with_probs = 0; with_probs < 2; with_probs++) {
        OK(A->attention(C, dout, dq, q_stride, dk, dv, T, NH, D, cap, dvis, with_probs ? dprobs : NULL));
        CU_ASSERT(dev_get(out, dout, no * 4, what));
        CU_ASSERT(close_enough(out, ref, no, 2e-5f, 1e-4f, what));
    }
    CU_ASSERT(dev_get(probs, dprobs, np * 4, what));
    CU_ASSERT(close_enough(probs, rprobs, np, 1e-6f, 1e-4f, what));
    NO_OP_ALLOCS();
    reset();
}

static void test_attention(void) {
    attention_case(1, 4, 32, 100, VIS_DECODE, 1);
    attention_case(1, 4, 64, 3000, VIS_DECODE, 4);     // split-K, peaky softmax
    attention_case(1, 2, 80, 4096, VIS_DECODE, 1);
    attention_case(1, 4, 128, 1, VIS_DECODE, 1);       // a single key
    attention_case(1, 3, 256, 3000, VIS_DECODE, 2);
    attention_case(1, 32, 80, 2048, VIS_FULL, 1);
    attention_case(37, 3, 80, 200, VIS_PREFILL, 1);
    attention_case(40, 16, 64, 300, VIS_PREFILL, 3);   // 640 rows: single pass per row
    attention_case(5, 2, 256, 2000, VIS_PREFILL, 1);
    attention_case(64, 12, 128, 64, VIS_PREFILL, 1);   // prompt fills the cache exactly
    attention_case(3, 5, 80, 777, VIS_DECODE, 1);      // speculative verification shape
}

/* ------------------------------------------------------------ KV moves and scores */

static void test_kv_append(void) {
    int NH = 5, D = 80, cap = 64, T = 7;
    size_t stride = (size_t)3 * NH * D, nkv = (size_t)NH * cap * D;
    float *src = rnd((size_t)T * stride, 1, 0), *kc = rnd(nkv, 1, 0), *vc = rnd(nkv, 1, 0);
    int32_t base[5], n_vis[35], got_vis[35];
    for (int h = 0; h < NH; h++) base[h] = h == 0 ? cap - 3 : irand(cap - T + 1);   // head 0 runs out of room
    float *dk = dev_put(kc, nkv * 4), *dv = dev_put(vc, nkv * 4), *dsrc = dev_put(src, (size_t)T * stride * 4);
    int32_t *dbase = dev_put(base, sizeof base), *dvis = dev_guarded(sizeof n_vis, NULL);
    float *gk = hbuf(nkv * 4), *gv = hbuf(nkv * 4);
    MARK_ALLOCS();
    OK(A->kv_append(C, dk, dv, dsrc + (size_t)NH * D, dsrc + (size_t)2 * NH * D, stride, T, NH, D, cap, dbase, dvis));
    kn_kv_append_ref(kc, vc, src + (size_t)NH * D, src + (size_t)2 * NH * D, stride, T, NH, D, cap, base, n_vis);
    CU_ASSERT(dev_get(gk, dk, nkv * 4, "kv_append k"));
    CU_ASSERT(dev_get(gv, dv, nkv * 4, "kv_append v"));
    CU_ASSERT(dev_get(got_vis, dvis, sizeof n_vis, "kv_append n_vis"));
    CU_ASSERT(memcmp(gk, kc, nkv * 4) == 0 && memcmp(gv, vc, nkv * 4) == 0);
    CU_ASSERT(memcmp(got_vis, n_vis, sizeof n_vis) == 0);
    NO_OP_ALLOCS();
    reset();
}

static void test_kv_compact(void) {
    int dims[] = {80, 256, 300};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int NH = 4, D = dims[s], cap = 300;
        size_t nkv = (size_t)NH * cap * D;
        float *kc = rnd(nkv, 1, 0), *vc = rnd(nkv, 1, 0), *score = rnd((size_t)NH * cap, 1, 0);
        int32_t *pos = hbuf((size_t)NH * cap * 4), *keep = hbuf((size_t)NH * cap * 4), n_keep[4];
        for (int i = 0; i < NH * cap; i++) pos[i] = i, keep[i] = -1;
        for (int h = 0; h < NH; h++) {
            int held = cap / 2 + irand(cap / 2 + 1), k = 0;
            for (int j = 0; j < held; j++)
                if (h == 0 || (h != 1 && frand() < 0.2f)) keep[h * cap + k++] = j;   // head 0 keeps all, head 1 none
            n_keep[h] = k;
        }
        float *dk = dev_put(kc, nkv * 4), *dv = dev_put(vc, nkv * 4), *dsc = dev_put(score, (size_t)NH * cap * 4);
        int32_t *dpos = dev_put(pos, (size_t)NH * cap * 4), *dkeep = dev_put(keep, (size_t)NH * cap * 4);
        int32_t *dnk = dev_put(n_keep, sizeof n_keep);
        float *gk = hbuf(nkv * 4), *gv = hbuf(nkv * 4), *gs = hbuf((size_t)NH * cap * 4);
        int32_t *gp = hbuf((size_t)NH * cap * 4);
        MARK_ALLOCS();
        OK(A->kv_compact(C, dk, dv, dsc, dpos, dkeep, dnk, NH, D, cap));
        kn_kv_compact_ref(kc, vc, score, pos, keep, n_keep, NH, D, cap);
        CU_ASSERT(dev_get(gk, dk, nkv * 4, "kv_compact k") && memcmp(gk, kc, nkv * 4) == 0);
        CU_ASSERT(dev_get(gv, dv, nkv * 4, "kv_compact v") && memcmp(gv, vc, nkv * 4) == 0);
        CU_ASSERT(dev_get(gs, dsc, (size_t)NH * cap * 4, "kv_compact score") &&
                  memcmp(gs, score, (size_t)NH * cap * 4) == 0);
        CU_ASSERT(dev_get(gp, dpos, (size_t)NH * cap * 4, "kv_compact pos") &&
                  memcmp(gp, pos, (size_t)NH * cap * 4) == 0);
        NO_OP_ALLOCS();
        reset();
    }
}

/* kv_move: up and down, overlapping and not, D past the block size. */
static void test_kv_move(void) {
    struct { int D, cap, src, dst, rows; } cs[] = {
        {80, 300, 10, 11, 4},     // sinks up one row (overlapping)
        {80, 300, 7, 0, 250},     // the window back to row 0 (overlapping)
        {256, 70, 40, 0, 30},     // back to 0, disjoint
        {300, 50, 3, 9, 41},      // up, overlapping, D > 256
        {64, 16, 0, 0, 16},       // no-op
    };
    for (size_t s = 0; s < sizeof cs / sizeof cs[0]; s++) {
        int NH = 3, D = cs[s].D, cap = cs[s].cap;
        size_t nkv = (size_t)NH * cap * D;
        float *kc = rnd(nkv, 1, 0), *vc = rnd(nkv, 1, 0);
        float *dk = dev_put(kc, nkv * 4), *dv = dev_put(vc, nkv * 4), *gk = hbuf(nkv * 4), *gv = hbuf(nkv * 4);
        MARK_ALLOCS();
        OK(A->kv_move(C, dk, dv, NH, D, cap, cs[s].src, cs[s].dst, cs[s].rows));
        kn_kv_move_ref(kc, vc, NH, D, cap, cs[s].src, cs[s].dst, cs[s].rows);
        CU_ASSERT(dev_get(gk, dk, nkv * 4, "kv_move k") && memcmp(gk, kc, nkv * 4) == 0);
        CU_ASSERT(dev_get(gv, dv, nkv * 4, "kv_move v") && memcmp(gv, vc, nkv * 4) == 0);
        NO_OP_ALLOCS();
        reset();
    }
    float *d = dev_put((float[4]){0}, 16);
    CU_ASSERT_EQUAL(A->kv_move(C, d, d, 1, 1, 4, 2, 0, 3), KN_ERR_INVAL);   /* src + rows > cap */
    reset();
}

/* fill_rows: a score array's tail zeroed from a column on, rows past a block. */
static void test_fill_rows(void) {
    int rows = 300, cap = 517;
    size_t n = (size_t)rows * cap;
    float *x = rnd(n, 1, 0), *g = hbuf(n * 4);
    float *dx = dev_put(x, n * 4);
    MARK_ALLOCS();
    OK(A->fill_rows(C, dx, rows, (size_t)cap, 133, cap, 0.0f));
    kn_fill_rows_ref(x, rows, (size_t)cap, 133, cap, 0.0f);
    CU_ASSERT(dev_get(g, dx, n * 4, "fill_rows") && memcmp(g, x, n * 4) == 0);
    OK(A->fill_rows(C, dx, rows, (size_t)cap, 7, 7, 1.0f));   /* empty range: nothing */
    CU_ASSERT(dev_get(g, dx, n * 4, "fill_rows empty") && memcmp(g, x, n * 4) == 0);
    CU_ASSERT_EQUAL(A->fill_rows(C, dx, rows, (size_t)cap, 0, cap + 1, 0.0f), KN_ERR_INVAL);
    NO_OP_ALLOCS();
    reset();
}

static void test_key_norms(void) {
    int dims[] = {80, 256, 32};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int NH = 3, D = dims[s], cap = 1000;
        size_t nkv = (size_t)NH * cap * D, nn = (size_t)NH * cap;
        float *k = rnd(nkv, 2, 0), *norms = hbuf(nn * 4), *got = hbuf(nn * 4);
        int32_t n_held[3] = {cap, 1 + irand(cap), 0};
        for (size_t i = 0; i < nn; i++) norms[i] = -3.0f;
        float *dk = dev_put(k, nkv * 4), *dn = dev_guarded(nn * 4, norms);
        int32_t *dh = dev_put(n_held, sizeof n_held);
        MARK_ALLOCS();
        OK(A->key_norms(C, dn, dk, dh, NH, D, cap));
        kn_key_norms_ref(norms, k, n_held, NH, D, cap);
        CU_ASSERT(dev_get(got, dn, nn * 4, "key_norms"));
        CU_ASSERT(close_enough(got, norms, nn, 1e-6f, 1e-5f, "key_norms"));
        NO_OP_ALLOCS();
        reset();
    }
}

/* TOVA's head-mean of the last query: same order of adds as the CPU, so exact. */
static void test_attn_head_mean(void) {
    int Ts[] = {1, 5};
    for (size_t s = 0; s < sizeof Ts / sizeof Ts[0]; s++) {
        int NH = 7, T = Ts[s], cap = 700;
        size_t np = (size_t)NH * T * cap;
        float *probs = rnd(np, 0.5f, 0.5f), *out = rnd((size_t)cap, 1, 0), *got = hbuf((size_t)cap * 4);
        int32_t n_vis[35];
        for (int i = 0; i < NH * T; i++) n_vis[i] = 1 + irand(cap);
        n_vis[T - 1] = cap - 13;   /* head 0's last query: the slots scored */
        float *dp = dev_put(probs, np * 4), *dout = dev_guarded((size_t)cap * 4, out);
        int32_t *dvis = dev_put(n_vis, (size_t)NH * T * 4);
        MARK_ALLOCS();
        OK(A->attn_head_mean(C, dout, dp, dvis, T, NH, cap));
        kn_attn_head_mean_ref(out, probs, n_vis, T, NH, cap);
        CU_ASSERT(dev_get(got, dout, (size_t)cap * 4, "attn_head_mean") && memcmp(got, out, (size_t)cap * 4) == 0);
        NO_OP_ALLOCS();
        reset();
    }
}

static void test_attn_accum(void) {
    int Ts[] = {1, 8};
    for (size_t s = 0; s < sizeof Ts / sizeof Ts[0]; s++)
        for (int accumulate = 0; accumulate < 2; accumulate++) {
            int NH = 3, T = Ts[s], cap = 500;
            size_t np = (size_t)NH * T * cap, na = (size_t)NH * cap;
            float *probs = rnd(np, 0.5f, 0.5f), *acc = rnd(na, 1, 0), *got = hbuf(na * 4);
            int32_t n_vis[24];
            for (int i = 0; i < NH * T; i++) n_vis[i] = irand(cap + 1);
            n_vis[0] = cap;
            float *dp = dev_put(probs, np * 4), *da = dev_guarded(na * 4, acc);
            int32_t *dvis = dev_put(n_vis, (size_t)NH * T * 4);
            MARK_ALLOCS();
            OK(A->attn_accum(C, da, dp, dvis, T, NH, cap, accumulate));
            kn_attn_accum_ref(acc, probs, n_vis, T, NH, cap, accumulate);
            CU_ASSERT(dev_get(got, da, na * 4, "attn_accum"));
            CU_ASSERT(close_enough(got, acc, na, 1e-6f, 1e-6f, "attn_accum"));
            NO_OP_ALLOCS();
            reset();
        }
}

static void test_pool1d(void) {
    int ms[] = {1, 5, 1000}, ks[] = {1, 3, 5, 7, 31};
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (size_t b = 0; b < sizeof ks / sizeof ks[0]; b++)
            for (int use_max = 0; use_max < 2; use_max++)
                for (int with_len = 0; with_len < 2; with_len++) {
                    int rows = 4, m = ms[a], kernel = ks[b];
                    size_t stride = (size_t)m + 3, n = (size_t)rows * stride;
                    float *in = rnd(n, 1, 1), *out = hbuf(n * 4), *got = hbuf(n * 4);
                    int32_t len[4];
                    for (int r = 0; r < rows; r++) len[r] = r == 0 ? m : irand(m + 1);
                    for (size_t i = 0; i < n; i++) out[i] = -5.0f;
                    float *din = dev_put(in, n * 4), *dout = dev_guarded(n * 4, out);
                    int32_t *dlen = dev_put(len, sizeof len);
                    MARK_ALLOCS();
                    OK(A->pool1d(C, dout, din, rows, m, stride, with_len ? dlen : NULL, kernel, use_max));
                    kn_pool1d_ref(out, in, rows, m, stride, with_len ? len : NULL, kernel, use_max);
                    CU_ASSERT(dev_get(got, dout, n * 4, "pool1d"));
                    CU_ASSERT(close_enough(got, out, n, 0.0f, 1e-6f, "pool1d"));
                    NO_OP_ALLOCS();
                    reset();
                }
}

/* ------------------------------------------------------------ KIVI */

static void test_kivi(void) {
    struct { int rows, cols, extra_ld, group, bits; kn_kivi_axis axis; } cs[] = {
        {64, 80, 0, 32, 2, KN_KIVI_PER_CHANNEL}, {64, 80, 5, 32, 4, KN_KIVI_PER_CHANNEL},
        {32, 128, 0, 32, 8, KN_KIVI_PER_CHANNEL}, {64, 7, 0, 16, 2, KN_KIVI_PER_CHANNEL},
        {37, 128, 2, 32, 2, KN_KIVI_PER_TOKEN}, {37, 80, 0, 16, 4, KN_KIVI_PER_TOKEN},
        {5, 64, 0, 64, 8, KN_KIVI_PER_TOKEN}, {3, 256, 1, 128, 2, KN_KIVI_PER_TOKEN},
        {3, 7, 0, 7, 2, KN_KIVI_PER_TOKEN}, {5, 7, 1, 7, 4, KN_KIVI_PER_TOKEN},   // partial last byte
    };
    for (size_t s = 0; s < sizeof cs / sizeof cs[0]; s++) {
        int rows = cs[s].rows, cols = cs[s].cols, group = cs[s].group, bits = cs[s].bits;
        kn_kivi_axis axis = cs[s].axis;
        size_t ld = (size_t)cols + cs[s].extra_ld, nx = (size_t)rows * ld;
        size_t np = axis == KN_KIVI_PER_CHANNEL ? (size_t)(rows / group) * cols : (size_t)rows * (cols / group);
        size_t nb = kn_kivi_code_bytes(rows, cols, bits), ldo = (size_t)cols + 1, no = (size_t)rows * ldo;
        float *x = rnd(nx, 3, 0.5f);
        for (int i = 0; i < group; i++)   // one constant group: scale 0, every code 0
            x[axis == KN_KIVI_PER_CHANNEL ? (size_t)i * ld : (size_t)i] = 0.25f;
        uint8_t *codes = hbuf(nb), *gcodes = hbuf(nb);
        float *mn = hbuf(np * 4), *sc = hbuf(np * 4), *gmn = hbuf(np * 4), *gsc = hbuf(np * 4);
        float *out = hbuf(no * 4), *gout = hbuf(no * 4);
        for (size_t i = 0; i < no; i++) out[i] = -9.0f;   // the ld_out padding stays as it was
        float *dx = dev_put(x, nx * 4), *dmn = dev_guarded(np * 4, NULL), *dsc = dev_guarded(np * 4, NULL);
        uint8_t *dcodes = dev_guarded(nb, NULL);
        float *dout = dev_guarded(no * 4, out);
        MARK_ALLOCS();
        OK(A->kivi_quant(C, dcodes, dmn, dsc, dx, rows, cols, ld, group, bits, axis));
        OK(A->kivi_dequant(C, dout, ldo, dcodes, dmn, dsc, rows, cols, group, bits, axis));
        kn_kivi_quant_ref(codes, mn, sc, x, rows, cols, ld, group, bits, axis);
        kn_kivi_dequant_ref(out, ldo, codes, mn, sc, rows, cols, group, bits, axis);
        CU_ASSERT(dev_get(gcodes, dcodes, nb, "kivi codes") && memcmp(gcodes, codes, nb) == 0);
        CU_ASSERT(dev_get(gmn, dmn, np * 4, "kivi mn") && memcmp(gmn, mn, np * 4) == 0);
        CU_ASSERT(dev_get(gsc, dsc, np * 4, "kivi scale") && memcmp(gsc, sc, np * 4) == 0);
        CU_ASSERT(dev_get(gout, dout, no * 4, "kivi dequant") && memcmp(gout, out, no * 4) == 0);
        // and the quantization error is within half a step of each group
        int within = 1;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) {
                size_t pi = axis == KN_KIVI_PER_CHANNEL ? (size_t)(r / group) * cols + c
                                                        : (size_t)r * (cols / group) + c / group;
                within &= fabsf(out[(size_t)r * ldo + c] - x[(size_t)r * ld + c]) <= 0.5f * sc[pi] * 1.001f + 1e-6f;
            }
        CU_ASSERT(within);
        NO_OP_ALLOCS();
        reset();
    }
}

/* ------------------------------------------------------------ sampling */

static void test_argmax_softmax(void) {
    int Vs[] = {7, 50304};
    for (size_t s = 0; s < sizeof Vs / sizeof Vs[0]; s++) {
        int M = 3, V = Vs[s];
        size_t n = (size_t)M * V;
        float *x = rnd(n, 10, 0), *p = hbuf(n * 4), *gp = hbuf(n * 4);
        x[V - 1] = 50.0f, x[2] = 50.0f;                    // row 0: tie, the first index wins
        for (int i = 0; i < V; i++) x[2 * (size_t)V + i] = 1.5f;   // row 2: all equal -> 0
        int32_t idx[3], gidx[3];
        float *dx = dev_put(x, n * 4), *dp = dev_guarded(n * 4, NULL);
        int32_t *didx = dev_guarded(sizeof idx, NULL);
        MARK_ALLOCS();
        OK(A->argmax(C, didx, dx, M, V));
        kn_argmax_ref(idx, x, M, V);
        CU_ASSERT(dev_get(gidx, didx, sizeof idx, "argmax") && memcmp(gidx, idx, sizeof idx) == 0);
        CU_ASSERT_EQUAL(idx[0], 2);
        float temps[] = {0.0f, 0.7f, 1.0f, 1.5f};
        for (size_t t = 0; t < sizeof temps / sizeof temps[0]; t++) {
            OK(A->softmax(C, dp, dx, M, V, temps[t]));
            kn_softmax_ref(p, x, M, V, temps[t]);
            CU_ASSERT(dev_get(gp, dp, n * 4, "softmax"));
            CU_ASSERT(close_enough(gp, p, n, 1e-7f, 1e-5f, "softmax"));
        }
        NO_OP_ALLOCS();
        reset();
    }
}

/* ------------------------------------------------------------ CUDA graphs */

/* The decode step's shapes in small: x(1,K) -> fp32 matmul (cuBLAS) and
 * fp16 matmul (GEMV) into (1, 3·NH·D) rows, attention of the fp32 row's q
 * over a split-K cache with n_vis read from the device. The per-step
 * inputs (x, n_vis) come from pinned memory, the outputs go back to it. */
typedef struct graph_case {
    int K, NH, D, cap, N;
    float *dx, *dw, *db, *dq, *dq16, *dk, *dv, *dout;
    uint16_t *dw16;
    int32_t *dvis;
    void *pin;                 /* host_alloc: x(K), vis(NH), out(NH·D), q16(N) */
    float *px, *pout, *pq16;
    int32_t *pvis;
} graph_case;

static kn_status graph_case_ops(kn_cuda_ctx *c, const graph_case *g) {
    kn_status st;
    size_t q_stride = (size_t)g->N;
    if ((st = A->copy_h2d(c, g->dx, g->px, (size_t)g->K * 4)) != KN_OK) return st;
    if ((st = A->copy_h2d(c, g->dvis, g->pvis, (size_t)g->NH * 4)) != KN_OK) return st;
    if ((st = A->matmul(c, g->dq, g->dx, g->dw, KN_W_F32, g->db, 1, g->K, g->N)) != KN_OK) return st;
    if ((st = A->matmul(c, g->dq16, g->dx, g->dw16, KN_W_F16, g->db, 1, g->K, g->N)) != KN_OK) return st;
    if ((st = A->attention(c, g->dout, g->dq, q_stride, g->dk, g->dv, 1, g->NH, g->D, g->cap, g->dvis, NULL)) != KN_OK)
        return st;
    if ((st = A->copy_d2h_async(c, g->pout, g->dout, (size_t)g->NH * g->D * 4)) != KN_OK) return st;
    return A->copy_d2h_async(c, g->pq16, g->dq16, (size_t)g->N * 4);
}

/* Captures graph_case_ops; NULL (with the reason printed) on failure, the
 * capture closed in every case. */
static kn_cuda_graph *graph_case_capture(kn_cuda_ctx *c, const graph_case *g) {
    kn_cuda_graph *gr = NULL;
    if (A->graph_begin(c) != KN_OK) {
        printf("\n    graph_begin: %s\n", A->errmsg(c));
        return NULL;
    }
    kn_status st = graph_case_ops(c, g);
    if (st != KN_OK) printf("\n    op inside the capture: %s\n", A->errmsg(c));
    if (A->graph_end(c, &gr) != KN_OK) printf("\n    graph_end: %s\n", A->errmsg(c));
    if (st != KN_OK) {
        A->graph_free(c, gr);
        return NULL;
    }
    return gr;
}

static void test_graph(void) {
    graph_case g = {.K = 320, .NH = 4, .D = 64, .cap = 3000};
    g.N = 3 * g.NH * g.D;
    size_t nkv = (size_t)g.NH * g.cap * g.D, no = (size_t)g.NH * g.D;
    float *w = rnd((size_t)g.N * g.K, 0.1f, 0), *b = rnd((size_t)g.N, 1, 0);
    uint16_t *w16 = hbuf((size_t)g.N * g.K * 2);
    for (size_t i = 0; i < (size_t)g.N * g.K; i++) w16[i] = to16(w[i], KN_W_F16);
    float *k = rnd(nkv, 1, 0), *v = rnd(nkv, 1, 0);
    g.dw = dev_put(w, (size_t)g.N * g.K * 4);
    g.dw16 = dev_put(w16, (size_t)g.N * g.K * 2);
    g.db = dev_put(b, (size_t)g.N * 4);
    g.dk = dev_put(k, nkv * 4);
    g.dv = dev_put(v, nkv * 4);
    g.dx = dev_guarded((size_t)g.K * 4, NULL);
    g.dq = dev_guarded((size_t)g.N * 4, NULL);
    g.dq16 = dev_guarded((size_t)g.N * 4, NULL);
    g.dout = dev_guarded(no * 4, NULL);
    g.dvis = dev_guarded((size_t)g.NH * 4, NULL);
    size_t pin_bytes = ((size_t)g.K + g.NH + no + g.N) * 4;
    OK(A->host_alloc(C, &g.pin, pin_bytes));
    g.px = g.pin;
    g.pvis = (int32_t *)(g.px + g.K);
    g.pout = (float *)(g.pvis + g.NH);
    g.pq16 = g.pout + no;
    for (int i = 0; i < g.K; i++) g.px[i] = frand();
    for (int h = 0; h < g.NH; h++) g.pvis[h] = g.cap;
    MARK_ALLOCS();
    // eager once first (modules loaded, cuBLAS heuristics chosen), as the engine does
    OK(graph_case_ops(C, &g));
    OK(A->sync(C));
    kn_cuda_graph *gr = graph_case_capture(C, &g);
    CU_ASSERT_FATAL(gr != NULL);
    float *gout = hbuf(no * 4), *gq16 = hbuf((size_t)g.N * 4), *rq = hbuf((size_t)g.N * 4), *rout = hbuf(no * 4);
    for (int rep = 0; rep < 2; rep++) {
        // new per-step inputs in the pinned buffers, then replay
        for (int i = 0; i < g.K; i++) g.px[i] = frand() * (rep ? 2.0f : 0.5f);
        for (int h = 0; h < g.NH; h++) g.pvis[h] = rep == 0 ? 1 + irand(g.cap) : (h == 0 ? 1 : g.cap - h);
        OK(A->graph_launch(C, gr));
        OK(A->sync(C));
        memcpy(gout, g.pout, no * 4);
        memcpy(gq16, g.pq16, (size_t)g.N * 4);
        // the CPU references
        float *x = hbuf((size_t)g.K * 4);
        memcpy(x, g.px, (size_t)g.K * 4);
        kn_matmul_ref(rq, x, w, b, 1, g.K, g.N);
        kn_attention_ref(rout, rq, (size_t)g.N, k, v, 1, g.NH, g.D, g.cap, g.pvis, NULL);
        CU_ASSERT(close_enough(gout, rout, no, 2e-5f, 1e-4f, "graph attention vs ref"));
        float *r16 = hbuf((size_t)g.N * 4);
        kn_matmul_lp_ref(r16, x, w16, KN_W_F16, b, 1, g.K, g.N);
        CU_ASSERT(close_enough(gq16, r16, (size_t)g.N, 1e-5f + 1e-7f * g.K, 1e-5f, "graph gemv16 vs ref"));
        // the same ops eagerly on the same inputs: the same kernels, so the same bits
        OK(graph_case_ops(C, &g));
        OK(A->sync(C));
        int same = memcmp(gout, g.pout, no * 4) == 0 && memcmp(gq16, g.pq16, (size_t)g.N * 4) == 0;
        printf("\n    graph replay %d: %s eager", rep, same ? "bit-identical to" : "DIFFERS from");
        CU_ASSERT(close_enough(gout, g.pout, no, 1e-6f, 1e-6f, "graph vs eager attention"));
        CU_ASSERT(close_enough(gq16, g.pq16, (size_t)g.N, 0.0f, 0.0f, "graph vs eager gemv16"));
    }
    A->graph_free(C, gr);
    NO_OP_ALLOCS();

    // a call CUDA refuses while capturing fails, invalidates the capture, and leaves the context usable
    OK(A->graph_begin(C));
    CU_ASSERT_EQUAL(A->gelu(C, g.dq, (size_t)g.N), KN_OK);
    CU_ASSERT_EQUAL(A->sync(C), KN_ERR_CUDA);
    printf("\n    expected error: %s", A->errmsg(C));
    gr = NULL;
    CU_ASSERT_EQUAL(A->graph_end(C, &gr), KN_ERR_CUDA);
    printf("\n    expected error: %s\n", A->errmsg(C));
    CU_ASSERT(gr == NULL && strstr(A->errmsg(C), "cudaStreamEndCapture") != NULL);
    CU_ASSERT_EQUAL(A->gelu(C, g.dq, (size_t)g.N), KN_OK);
    CU_ASSERT_EQUAL(A->sync(C), KN_OK);

    // KV_CUDA_SYNC=1 synchronizes after eager launches only: a capture on such a context still works
    kn_cuda_ctx *C2 = NULL;
    char err[512];
    setenv("KV_CUDA_SYNC", "1", 1);
    kn_status st = A->ctx_init(&C2, A_device, (size_t)16 << 20, err, sizeof err);
    unsetenv("KV_CUDA_SYNC");
    CU_ASSERT_FATAL(st == KN_OK);
    for (int i = 0; i < g.K; i++) g.px[i] = frand();
    for (int h = 0; h < g.NH; h++) g.pvis[h] = 1 + irand(g.cap);
    OK(graph_case_ops(C2, &g));
    OK(A->sync(C2));
    memcpy(gout, g.pout, no * 4);
    gr = graph_case_capture(C2, &g);
    CU_ASSERT(gr != NULL);
    if (gr) {
        memset(g.pout, 0, no * 4);
        OK(A->graph_launch(C2, gr));
        OK(A->sync(C2));
        CU_ASSERT(close_enough(g.pout, gout, no, 1e-6f, 1e-6f, "graph under KV_CUDA_SYNC=1"));
    }
    A->graph_free(C2, gr);
    A->ctx_free(C2);
    A->host_free(C, g.pin);
    reset();
}

/* ------------------------------------------------------------ errors */

static void test_errors(void) {
    float *d = dev_guarded(64 * 4, NULL);
    CU_ASSERT_EQUAL(A->attention(C, d, d, 300, d, d, 1, 1, 300, 4, (const int32_t *)d, NULL), KN_ERR_UNSUPPORTED);
    CU_ASSERT(strstr(A->errmsg(C), "head_dim") != NULL);
    CU_ASSERT_EQUAL(A->matmul(C, d, d, d, KN_W_F32, NULL, 1, 0, 1), KN_ERR_INVAL);
    CU_ASSERT_EQUAL(A->kivi_quant(C, (uint8_t *)d, d, d, d, 4, 4, 4, 4, 3, KN_KIVI_PER_TOKEN), KN_ERR_INVAL);
    CU_ASSERT_EQUAL(A->pool1d(C, d, d, 1, 4, 4, NULL, 2, 0), KN_ERR_INVAL);
    // a failed CUDA call names itself and its place, and does not poison later launches
    void *huge = NULL;
    CU_ASSERT_EQUAL(A->mem_alloc(C, &huge, (size_t)1 << 60), KN_ERR_CUDA);
    printf("\n    expected error: %s\n", A->errmsg(C));
    CU_ASSERT(huge == NULL);
    CU_ASSERT(strstr(A->errmsg(C), "cudaMalloc") != NULL && strstr(A->errmsg(C), "ctx.cu:") != NULL);
    CU_ASSERT_EQUAL(A->gelu(C, d, 64), KN_OK);
    CU_ASSERT_EQUAL(A->sync(C), KN_OK);
    float got[64];
    CU_ASSERT(dev_get(got, d, sizeof got, "after error"));
    reset();
}

int main(void) {
    const char *req = getenv("KV_REQUIRE_GPU");
    int require = req && strcmp(req, "1") == 0;
    if (kn_cuda_device_count() <= 0) {
        if (require) {
            printf("FAIL test_cuda_ops: KV_REQUIRE_GPU=1 and no usable CUDA device: %s\n",
                   kn_cuda_unavailable_reason());
            return 1;
        }
        printf("SKIP test_cuda_ops: %s\n", kn_cuda_unavailable_reason());
        return 0;
    }
    A = kn_cuda_load();
    g_verbose = getenv("KV_TEST_VERBOSE") && getenv("KV_TEST_VERBOSE")[0] == '1';
    for (int i = 0; i < GUARD_BYTES; i += 4) memcpy(g_guard + i, &GUARD_VAL, 4);
    const char *gpu = getenv("KV_GPU");
    char err[512];
    A_device = gpu ? atoi(gpu) : 0;
    if (A->ctx_init(&C, A_device, (size_t)256 << 20, err, sizeof err) != KN_OK) {
        printf("FAIL test_cuda_ops: ctx_init: %s\n", err);
        return 1;
    }
    printf("test_cuda_ops: %s; %s\n", A->device_name(C), A->build_info);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("cuda_ops", NULL, NULL);
    CU_add_test(s, "matmul fp32 weights vs ref (cuBLAS, bias)", test_matmul_f32);
    CU_add_test(s, "matmul fp16/bf16 weights vs ref (GEMV, split GEMM)", test_matmul_lp);
    CU_add_test(s, "embedding gather (fp32/fp16/bf16, bad tokens)", test_embed);
    CU_add_test(s, "layernorm vs ref (large mean, in place)", test_layernorm);
    CU_add_test(s, "gelu (erf) and add2 vs ref", test_gelu_add2);
    CU_add_test(s, "rope table + partial rotate-half vs ref", test_rope);
    CU_add_test(s, "attention prefill/decode, split-K, probs vs ref", test_attention);
    CU_add_test(s, "kv append vs ref", test_kv_append);
    CU_add_test(s, "kv compaction in place vs ref", test_kv_compact);
    CU_add_test(s, "kv row moves (overlapping, both ways) vs ref", test_kv_move);
    CU_add_test(s, "fill_rows (score tails) vs ref", test_fill_rows);
    CU_add_test(s, "attention head mean of the last query (tova) vs ref", test_attn_head_mean);
    CU_add_test(s, "key L2 norms vs ref", test_key_norms);
    CU_add_test(s, "accumulated attention vs ref", test_attn_accum);
    CU_add_test(s, "pool1d avg/max vs ref", test_pool1d);
    CU_add_test(s, "KIVI quantize/dequantize bit-equal to ref", test_kivi);
    CU_add_test(s, "argmax and softmax(temperature) vs ref", test_argmax_softmax);
    CU_add_test(s, "CUDA graph: capture, replay with new inputs == eager, refused sync, KV_CUDA_SYNC=1", test_graph);
    CU_add_test(s, "errors: bad shapes, failed CUDA call", test_errors);
    int rc = tu_run();
    A->ctx_free(C);
    return rc;
}
