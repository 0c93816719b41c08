/* kn.h — the op interface shared by every backend.
 *
 * Each op exists as a naive CPU reference (`kn_<op>_ref`, plain loops, double
 * accumulation where cheap: the yardstick other versions are tested against),
 * an optimized CPU version (`kn_<op>`, OpenBLAS + OpenMP), and, when built
 * with CUDA, device versions in libkvcuda.so, reached through the table
 * declared in kn_cuda.h, with the same contract.
 * All tensors are fp32, row-major, host memory; shapes are in the comments
 * (M rows, K inner, N outputs, T tokens, NH heads, D head_dim, R rotary dims).
 * Ops never allocate; scratch is passed in by the caller. */
#ifndef KERNELS_KN_H
#define KERNELS_KN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {   /* the .cu files include this header through kn_cuda.h */
#endif

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

/* ---- Ops the policies and the sampler need (CPU references in
 * kernels/cpu/{embed,kv_ops,kivi,sample}.c; the CUDA versions in kn_cuda.h
 * follow the same contracts). */

/* out(T, C) = row tok[t] of table(V, C) (fp32 or 16-bit, converted exactly).
 * A token outside [0, V) gives a row of NaN (visible downstream, never a
 * read out of bounds). */
void kn_embed_ref(float *out, const int32_t *tok, int T, const void *table, kn_wtype wt, int V, int C);

/* The T new keys/values of one layer into the cache, after each head's
 * base[h] held slots: k_cache, v_cache(NH, cap, D); k_src, v_src(T rows
 * src_stride floats apart, head h at h·D). n_vis(NH·T) (may be NULL) gets
 * base[h] + t + 1. Slots at or past cap are not written. */
void kn_kv_append_ref(float *k_cache, float *v_cache, const float *k_src, const float *v_src, size_t src_stride,
                      int T, int NH, int D, int cap, const int32_t *base, int32_t *n_vis);
/* Compaction: for each head h, slot i = slot keep[h·cap + i] for
 * i < n_keep[h] (keep strictly ascending per head, so order is preserved),
 * in place, for K and V (NH, cap, D) and, when not NULL, score(NH, cap) and
 * pos(NH, cap). Entries with keep < i or >= cap are skipped. */
void kn_kv_compact_ref(float *k_cache, float *v_cache, float *score, int32_t *pos, const int32_t *keep,
                       const int32_t *n_keep, int NH, int D, int cap);
/* Rows [src, src + rows) of every head of K and V (NH, cap, D) to rows
 * [dst, dst + rows), as memmove: overlapping ranges are fine (the sliding
 * window of sink+recent policies on the device: sinks move up one row per
 * eviction, the window moves back to row 0 now and then). */
void kn_kv_move_ref(float *k_cache, float *v_cache, int NH, int D, int cap, int src, int dst, int rows);
/* x[r·stride + j] = v for r < rows, from <= j < to (a score array's stale
 * tail after a compaction). */
void kn_fill_rows_ref(float *x, int rows, size_t stride, int from, int to, float v);
/* norms(NH, cap)[h][j] = ||k[h][j]||₂ (fp32 sum of squares) for j < n_held[h];
 * other entries untouched. */
void kn_key_norms_ref(float *norms, const float *k, const int32_t *n_held, int NH, int D, int cap);
/* Accumulated attention: acc(NH, cap)[h][j] gets probs(NH, T, cap)[h][t][j]
 * of every query t with j < n_vis[h·T + t] added one by one in t order,
 * onto acc (accumulate = 1, h2o's acc += p as engine/policy_h2o.c adds it)
 * or onto 0 (accumulate = 0). Keys no query sees are untouched. */
void kn_attn_accum_ref(float *acc, const float *probs, const int32_t *n_vis, int T, int NH, int cap,
                       int accumulate);
/* TOVA's score: out(cap)[j] = (sum over heads h, in order, of
 * probs(NH, T, cap)[h][T-1][j]) / NH for j < n_vis[T - 1] (head 0's last
 * query); other entries untouched. */
void kn_attn_head_mean_ref(float *out, const float *probs, const int32_t *n_vis, int T, int NH, int cap);
/* 1-D pooling along each of `rows` rows (stride floats apart), odd kernel,
 * stride 1, padding kernel/2: avg divides by kernel (zero padding counts,
 * PyTorch's count_include_pad), max ignores the padding. Row r has len[r]
 * elements (len NULL: m each); out must not alias in. */
void kn_pool1d_ref(float *out, const float *in, int rows, int m, size_t stride, const int32_t *len, int kernel,
                   int use_max);

/* KIVI asymmetric min-max quantization of x(rows, cols) (rows ld floats
 * apart), groups of `group` elements:
 *   KN_KIVI_PER_CHANNEL  `group` consecutive rows of one column (keys);
 *                        mn, scale(rows/group, cols)
 *   KN_KIVI_PER_TOKEN    `group` consecutive columns of one row (values);
 *                        mn, scale(rows, cols/group)
 * scale = (max - min) / (2^bits - 1); code = clamp(rint((x - mn) / scale),
 * 0, 2^bits - 1) (0 when scale is 0; rint rounds half to even);
 * x̂ = code·scale + mn (no fused multiply-add). Codes of element
 * e = r·cols + c are packed LSB-first, bits 2/4/8, into
 * kn_kivi_code_bytes(rows, cols, bits) bytes. */
typedef enum kn_kivi_axis { KN_KIVI_PER_CHANNEL = 0, KN_KIVI_PER_TOKEN = 1 } kn_kivi_axis;
static inline size_t kn_kivi_code_bytes(int rows, int cols, int bits) {
    return ((size_t)rows * (size_t)cols * (size_t)bits + 7) / 8;
}
void kn_kivi_quant_ref(uint8_t *codes, float *mn, float *scale, const float *x, int rows, int cols, size_t ld,
                       int group, int bits, kn_kivi_axis axis);
void kn_kivi_dequant_ref(float *out, size_t ld_out, const uint8_t *codes, const float *mn, const float *scale,
                         int rows, int cols, int group, int bits, kn_kivi_axis axis);

/* idx(M) = the first index of the largest logit of each row of logits(M, V)
 * (eng_argmax's rule; NaN rows give an unspecified index). */
void kn_argmax_ref(int32_t *idx, const float *logits, int M, int V);
/* probs(M, V) = softmax(logits / temperature) with the max subtracted
 * (eng_sampler_probs without top-k/top-p); temperature 0: one-hot argmax. */
void kn_softmax_ref(float *probs, const float *logits, int M, int V, float temperature);

/* CUDA devices usable by this build (0 when built without CUDA, when
 * libkvcuda.so cannot be loaded, or when the runtime finds none). The first
 * call loads the library (kernels/cuda_loader.c). */
int kn_cuda_device_count(void);
/* Human-readable reason when kn_cuda_device_count() is 0. */
const char *kn_cuda_unavailable_reason(void);

#ifdef __cplusplus
}
#endif

#endif /* KERNELS_KN_H */
