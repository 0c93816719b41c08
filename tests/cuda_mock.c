/* cuda_mock.c — the CUDA backend's table implemented with the CPU ops
 * (contract in cuda_mock.h). Each entry checks the injected fault counter,
 * then does what the device version does, on host memory: mem_alloc is
 * malloc (counted, like the real alloc_count), copies are memcpy, the
 * arena of ctx_init is one malloc used as the ops' scratch (the KN_LP_TILE
 * rows of kn_matmul_lp, the per-thread rows of kn_attention), so the mock
 * allocates nothing after setup either. When the caller's arena is too
 * small for the optimized op the reference version (no scratch) runs. */
#include "cuda_mock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kn_cuda_ctx {
    int device;
    float *arena;
    size_t arena_bytes;
    size_t n_alloc;
    char err[256];
};

static long g_fail_at = -1;   /* injected failure: the call with this index fails */
static long g_calls;

void cuda_mock_fail_after(long k) { g_fail_at = k < 0 ? -1 : g_calls + k; }
long cuda_mock_calls(void) { return g_calls; }

/* 1 when this call is to fail (message set). */
static int fault(kn_cuda_ctx *c, const char *what) {
    long i = g_calls++;
    if (g_fail_at < 0 || i < g_fail_at) return 0;
    snprintf(c->err, sizeof c->err, "mock: injected failure in %s (call %ld)", what, i);
    return 1;
}

#define MOCK_CALL(c, name)                                   \
    do {                                                     \
        if (fault((c), (name))) return KN_ERR_CUDA;          \
        (c)->err[0] = 0;                                     \
    } while (0)

static int mock_device_count(char *why, size_t n_why) {
    if (n_why) snprintf(why, n_why, "mock device");
    return 1;
}

static kn_status mock_ctx_init(kn_cuda_ctx **out, int device, size_t arena_bytes, char *err, size_t n_err) {
    *out = NULL;
    kn_cuda_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, n_err, "mock ctx_init: out of memory");
        return KN_ERR_CUDA;
    }
    if (device != 0) {
        snprintf(err, n_err, "device %d: this machine has 1 CUDA device(s) (mock)", device);
        free(c);
        return KN_ERR_INVAL;
    }
    if (fault(c, "ctx_init")) {
        snprintf(err, n_err, "%s", c->err);
        free(c);
        return KN_ERR_CUDA;
    }
    c->arena_bytes = arena_bytes;
    c->arena = malloc(arena_bytes ? arena_bytes : 1);
    if (!c->arena) {
        snprintf(err, n_err, "mock ctx_init: cannot allocate an arena of %zu bytes", arena_bytes);
        free(c);
        return KN_ERR_CUDA;
    }
    *out = c;
    return KN_OK;
}

static void mock_ctx_free(kn_cuda_ctx *c) {
    if (!c) return;
    free(c->arena);
    free(c);
}

static const char *mock_errmsg(const kn_cuda_ctx *c) { return c->err; }
static const char *mock_device_name(const kn_cuda_ctx *c) { (void)c; return "mock (CPU ops on host memory)"; }
static void *mock_stream(kn_cuda_ctx *c) { (void)c; return NULL; }
static kn_status mock_sync(kn_cuda_ctx *c) { MOCK_CALL(c, "sync"); return KN_OK; }
static void mock_set_lp_split(kn_cuda_ctx *c, int terms) { (void)c; (void)terms; }
static size_t mock_alloc_count(const kn_cuda_ctx *c) { return c->n_alloc; }

static kn_status mock_mem_alloc(kn_cuda_ctx *c, void **d_ptr, size_t bytes) {
    *d_ptr = NULL;
    MOCK_CALL(c, "mem_alloc");
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        snprintf(c->err, sizeof c->err, "mock mem_alloc: out of memory for %zu bytes", bytes);
        return KN_ERR_CUDA;
    }
    memset(p, 0xA5, bytes);   /* like cudaMalloc: not zeroed, and poisoned so a read of unset data shows */
    c->n_alloc++;
    *d_ptr = p;
    return KN_OK;
}

static void mock_mem_free(kn_cuda_ctx *c, void *p) { (void)c; free(p); }
static kn_status mock_host_alloc(kn_cuda_ctx *c, void **p, size_t bytes) { return mock_mem_alloc(c, p, bytes); }
static void mock_host_free(kn_cuda_ctx *c, void *p) { (void)c; free(p); }

static kn_status mock_copy(kn_cuda_ctx *c, void *dst, const void *src, size_t bytes, const char *name) {
    MOCK_CALL(c, name);
    if (bytes) memcpy(dst, src, bytes);
    return KN_OK;
}
static kn_status mock_h2d(kn_cuda_ctx *c, void *d, const void *s, size_t n) { return mock_copy(c, d, s, n, "copy_h2d"); }
static kn_status mock_d2h(kn_cuda_ctx *c, void *d, const void *s, size_t n) { return mock_copy(c, d, s, n, "copy_d2h"); }
static kn_status mock_d2d(kn_cuda_ctx *c, void *d, const void *s, size_t n) { return mock_copy(c, d, s, n, "copy_d2d"); }
static kn_status mock_mem_set(kn_cuda_ctx *c, void *d, int byte, size_t n) {
    MOCK_CALL(c, "mem_set");
    memset(d, byte, n);
    return KN_OK;
}

/* ---- the ops: the CPU versions of kn.h */

static kn_status mock_matmul(kn_cuda_ctx *c, float *y, const float *x, const void *w, kn_wtype wt, const float *b,
                             int M, int K, int N) {
    MOCK_CALL(c, "matmul");
    if (M <= 0 || K <= 0 || N <= 0) {
        snprintf(c->err, sizeof c->err, "matmul: bad shape M=%d K=%d N=%d", M, K, N);
        return KN_ERR_INVAL;
    }
    if (wt == KN_W_F32) kn_matmul(y, x, w, b, M, K, N);
    else if ((size_t)KN_LP_TILE * (size_t)K * sizeof(float) <= c->arena_bytes)
        kn_matmul_lp(y, x, w, wt, b, M, K, N, c->arena);
    else kn_matmul_lp_ref(y, x, w, wt, b, M, K, N);
    return KN_OK;
}

static kn_status mock_embed(kn_cuda_ctx *c, float *out, const int32_t *tok, int T, const void *table, kn_wtype wt,
                            int V, int C) {
    MOCK_CALL(c, "embed");
    kn_embed_ref(out, tok, T, table, wt, V, C);
    return KN_OK;
}

static kn_status mock_layernorm(kn_cuda_ctx *c, float *out, const float *x, const float *w, const float *b, int M,
                                int C, float eps) {
    MOCK_CALL(c, "layernorm");
    kn_layernorm(out, x, w, b, M, C, eps);
    return KN_OK;
}

static kn_status mock_gelu(kn_cuda_ctx *c, float *x, size_t n) {
    MOCK_CALL(c, "gelu");
    kn_gelu(x, n);
    return KN_OK;
}

static kn_status mock_add2(kn_cuda_ctx *c, float *y, const float *a, const float *b, size_t n) {
    MOCK_CALL(c, "add2");
    kn_add2(y, a, b, n);
    return KN_OK;
}

static kn_status mock_rope_table(kn_cuda_ctx *c, float *cos_t, float *sin_t, const float *inv_freq,
                                 const int32_t *pos, int T, int R) {
    MOCK_CALL(c, "rope_table");
    kn_rope_table(cos_t, sin_t, inv_freq, pos, T, R);
    return KN_OK;
}

static kn_status mock_rope(kn_cuda_ctx *c, float *x, int T, int NH, int D, size_t row_stride, int R,
                           const float *cos_t, const float *sin_t) {
    MOCK_CALL(c, "rope");
    kn_rope(x, T, NH, D, row_stride, R, cos_t, sin_t);
    return KN_OK;
}

static kn_status mock_attention(kn_cuda_ctx *c, float *out, const float *q, size_t q_stride, const float *k,
                                const float *v, int T, int NH, int D, int cap, const int32_t *n_vis, float *probs) {
    MOCK_CALL(c, "attention");
    if ((size_t)kn_get_threads() * (size_t)cap * sizeof(float) <= c->arena_bytes)
        kn_attention(out, q, q_stride, k, v, T, NH, D, cap, n_vis, c->arena, probs);
    else kn_attention_ref(out, q, q_stride, k, v, T, NH, D, cap, n_vis, probs);
    return KN_OK;
}

static kn_status mock_kv_append(kn_cuda_ctx *c, float *k_cache, float *v_cache, const float *k_src,
                                const float *v_src, size_t src_stride, int T, int NH, int D, int cap,
                                const int32_t *base, int32_t *n_vis) {
    MOCK_CALL(c, "kv_append");
    kn_kv_append_ref(k_cache, v_cache, k_src, v_src, src_stride, T, NH, D, cap, base, n_vis);
    return KN_OK;
}

static kn_status mock_kv_compact(kn_cuda_ctx *c, float *k_cache, float *v_cache, float *score, int32_t *pos,
                                 const int32_t *keep, const int32_t *n_keep, int NH, int D, int cap) {
    MOCK_CALL(c, "kv_compact");
    kn_kv_compact_ref(k_cache, v_cache, score, pos, keep, n_keep, NH, D, cap);
    return KN_OK;
}

static kn_status mock_key_norms(kn_cuda_ctx *c, float *norms, const float *k, const int32_t *n_held, int NH, int D,
                                int cap) {
    MOCK_CALL(c, "key_norms");
    kn_key_norms_ref(norms, k, n_held, NH, D, cap);
    return KN_OK;
}

static kn_status mock_attn_accum(kn_cuda_ctx *c, float *acc, const float *probs, const int32_t *n_vis, int T,
                                 int NH, int cap, int accumulate) {
    MOCK_CALL(c, "attn_accum");
    kn_attn_accum_ref(acc, probs, n_vis, T, NH, cap, accumulate);
    return KN_OK;
}

static kn_status mock_pool1d(kn_cuda_ctx *c, float *out, const float *in, int rows, int m, size_t stride,
                             const int32_t *len, int kernel, int use_max) {
    MOCK_CALL(c, "pool1d");
    kn_pool1d_ref(out, in, rows, m, stride, len, kernel, use_max);
    return KN_OK;
}

static kn_status mock_kivi_quant(kn_cuda_ctx *c, uint8_t *codes, float *mn, float *scale, const float *x, int rows,
                                 int cols, size_t ld, int group, int bits, kn_kivi_axis axis) {
    MOCK_CALL(c, "kivi_quant");
    kn_kivi_quant_ref(codes, mn, scale, x, rows, cols, ld, group, bits, axis);
    return KN_OK;
}

static kn_status mock_kivi_dequant(kn_cuda_ctx *c, float *out, size_t ld_out, const uint8_t *codes,
                                   const float *mn, const float *scale, int rows, int cols, int group, int bits,
                                   kn_kivi_axis axis) {
    MOCK_CALL(c, "kivi_dequant");
    kn_kivi_dequant_ref(out, ld_out, codes, mn, scale, rows, cols, group, bits, axis);
    return KN_OK;
}

static kn_status mock_argmax(kn_cuda_ctx *c, int32_t *idx, const float *logits, int M, int V) {
    MOCK_CALL(c, "argmax");
    kn_argmax_ref(idx, logits, M, V);
    return KN_OK;
}

static kn_status mock_softmax(kn_cuda_ctx *c, float *probs, const float *logits, int M, int V, float temperature) {
    MOCK_CALL(c, "softmax");
    kn_softmax_ref(probs, logits, M, V, temperature);
    return KN_OK;
}

const kn_cuda_api *cuda_mock_api(void) {
    static const kn_cuda_api api = {
        .abi = KN_CUDA_ABI,
        .size = sizeof(kn_cuda_api),
        .build_info = "mock: kernels/cpu ops on host memory (tests only)",
        .device_count = mock_device_count,
        .ctx_init = mock_ctx_init,
        .ctx_free = mock_ctx_free,
        .errmsg = mock_errmsg,
        .device_name = mock_device_name,
        .stream = mock_stream,
        .sync = mock_sync,
        .set_lp_split = mock_set_lp_split,
        .alloc_count = mock_alloc_count,
        .mem_alloc = mock_mem_alloc,
        .mem_free = mock_mem_free,
        .host_alloc = mock_host_alloc,
        .host_free = mock_host_free,
        .copy_h2d = mock_h2d,
        .copy_d2h = mock_d2h,
        .copy_d2d = mock_d2d,
        .mem_set = mock_mem_set,
        .matmul = mock_matmul,
        .embed = mock_embed,
        .layernorm = mock_layernorm,
        .gelu = mock_gelu,
        .add2 = mock_add2,
        .rope_table = mock_rope_table,
        .rope = mock_rope,
        .attention = mock_attention,
        .kv_append = mock_kv_append,
        .kv_compact = mock_kv_compact,
        .key_norms = mock_key_norms,
        .attn_accum = mock_attn_accum,
        .pool1d = mock_pool1d,
        .kivi_quant = mock_kivi_quant,
        .kivi_dequant = mock_kivi_dequant,
        .argmax = mock_argmax,
        .softmax = mock_softmax,
    };
    return &api;
}
