/* kn.h — the op interface shared by every backend.
 *
 * Each op exists as a naive CPU reference (`kn_<op>_ref`, plain loops, double
 * accumulation where cheap: the yardstick other versions are tested against),
 * an optimized CPU version (`kn_<op>`, OpenBLAS + OpenMP), and, when built
 * with CUDA, device versions declared in kn_cuda.h with the same contract.
 * All tensors are fp32, row-major, host memory; shapes are in the comments
 * (M rows, K inner, N outputs, T tokens, NH heads, D head_dim, R rotary dims).
 * Ops never allocate; scratch is passed in by the caller. */
#ifndef KERNELS_KN_H
#define KERNELS_KN_H

#include <stddef.h>
#include <stdint.h>

typedef enum kn_status {
    KN_OK = 0,
    KN_ERR_INVAL = -1,
    KN_ERR_CUDA = -2,
    KN_ERR_UNSUPPORTED = -3
} kn_status;

const char *kn_status_str(kn_status st);

/* Threads used by kn_* ops (OpenMP and OpenBLAS). n <= 0: all cores. */
void kn_set_threads(int n);
int kn_get_threads(void);

/* y(M,N) = x(M,K) · w(N,K)ᵀ + b(N).  b may be NULL. sgemv when M == 1. */
void kn_matmul(float *y, const float *x, const float *w, const float *b, int M, int K, int N);
void kn_matmul_ref(float *y, const float *x, const float *w, const float *b, int M, int K, int N);
/* Tests: 1 = every row of kn_matmul through sgemv, so results do not depend on batching. */
void kn_set_batch_invariant(int on);

/* Weights kept in a checkpoint's 16-bit dtype (matmul_lp.c). */
typedef enum kn_wtype { KN_W_F32 = 0, KN_W_F16 = 1, KN_W_BF16 = 2 } kn_wtype;
#define KN_LP_TILE 256
/* y(M,N) = x(M,K) · w(N,K)ᵀ + b(N) with w fp16/bf16 converted on the fly.
 * scratch: (KN_LP_TILE, K) floats, used when M > 8 (prefill tiles). */
void kn_matmul_lp(float *y, const float *x, const uint16_t *w, kn_wtype wt, const float *b, int M, int K,
                  int N, float *scratch);
void kn_matmul_lp_ref(float *y, const float *x, const uint16_t *w, kn_wtype wt, const float *b, int M, int K,
                      int N);
/* Exact conversions of n 16-bit values. */
void kn_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void kn_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
void kn_f16_or_bf16_to_f32(float *dst, const uint16_t *src, size_t n, int f16);
/* Tests: force the portable C paths (1) or allow CPU-specific ones (0). */
void kn_set_portable(int on);
/* The AVX2/F16C batch-1 path of kn_matmul_lp (M <= 8), when the CPU has it. */
int kn_gemv_lp_x86_available(void);
void kn_gemv_lp_x86(float *y, const float *x, const uint16_t *w, kn_wtype wt, const float *b, int M, int K,
                    int N);

/* out(M,C) = (x - mean) / sqrt(var + eps) * w + b, biased variance per row. */
void kn_layernorm(float *out, const float *x, const float *w, const float *b, int M, int C, float eps);
void kn_layernorm_ref(float *out, const float *x, const float *w, const float *b, int M, int C, float eps);

/* x(n) = 0.5·x·(1 + erf(x/√2)) in place (exact erf GELU, HF "gelu"). */
void kn_gelu(float *x, size_t n);
void kn_gelu_ref(float *x, size_t n);

/* inv_freq(R/2): 1 / base^(2j/R), computed in fp32 like HF. */
void kn_rope_inv_freq(float *inv_freq, int R, float base);
/* cos/sin(T, R/2) for the T positions pos(T): angle = (float)pos * inv_freq[j]. */
void kn_rope_table(float *cos_t, float *sin_t, const float *inv_freq, const int32_t *pos, int T, int R);
/* Rotate-half RoPE on the first R dims of each head, in place.
 * x: (T, NH, D) with rows `row_stride` floats apart; row t uses cos/sin
 * row t of tables shaped (T, R/2). */
void kn_rope(float *x, int T, int NH, int D, size_t row_stride, int R, const float *cos_t,
             const float *sin_t);
void kn_rope_ref(float *x, int T, int NH, int D, size_t row_stride, int R, const float *cos_t,
                 const float *sin_t);

/* Causal attention of T new queries over a per-head key/value cache.
 *   out(T, NH·D)         merged heads, head-major within a row
 *   q(T, NH·D)           rows q_stride floats apart, already rotated
 *   k, v(NH, cap, D)     cache of one layer; head h row j at (h·cap + j)·D
 *   n_vis(NH·T)          keys visible to query t of head h: n_vis[h·T + t]
 *                        (keys 0..n_vis-1; causal prefill passes base + t + 1)
 *   scratch(n_thr, cap)  one row per thread (n_thr >= kn_get_threads())
 *   probs(NH, T, cap)    optional (NULL): the softmax probabilities, for
 *                        policies that score keys by attention
 * scale = 1/√D; softmax in fp32 with max subtraction. */
void kn_attention(float *out, const float *q, size_t q_stride, const float *k, const float *v,
                  int T, int NH, int D, int cap, const int32_t *n_vis, float *scratch, float *probs);
void kn_attention_ref(float *out, const float *q, size_t q_stride, const float *k, const float *v,
                      int T, int NH, int D, int cap, const int32_t *n_vis, float *probs);

/* y(n) += a(n) + b(n)  (parallel residual: x = x + attn + mlp). b may be NULL. */
void kn_add2(float *y, const float *a, const float *b, size_t n);

/* CUDA devices usable by this build (0 when built without CUDA or none). */
int kn_cuda_device_count(void);
/* Human-readable reason when kn_cuda_device_count() is 0. */
const char *kn_cuda_unavailable_reason(void);

#endif /* KERNELS_KN_H */
