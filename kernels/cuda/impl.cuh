/* impl.cuh — what the .cu files of libkvcuda.so share: the context struct
 * behind kn_cuda_ctx, the check macros that turn a failed CUDA/cuBLAS call
 * or launch into KN_ERR_CUDA with "call: error (file:line)" in the
 * context's message (returning, never exiting), the op entry points the
 * table in ctx.cu points at, and small device helpers (warp/block
 * reductions, exact 16-bit loads).
 *
 * Every kn_cuda_<op> is extern "C" and hidden (the library is built with
 * -fvisibility=hidden); only kn_cuda_api_get is exported. Kernels are plain
 * and obviously correct first — one block per row or head, shared-memory
 * and warp-shuffle reductions — with a note where a faster version goes. */
#ifndef KERNELS_CUDA_IMPL_CUH
#define KERNELS_CUDA_IMPL_CUH

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kn_cuda.h"

struct kn_cuda_ctx {
    int device;
    int n_sm;                 /* multiprocessors: sizes split-K grids */
    int lp_split;             /* 16-bit-weight GEMM activation terms: 1 or 2 */
    int sync_each;            /* KV_CUDA_SYNC=1: synchronize after every launch (not while capturing) */
    cudaStream_t stream;      /* every op is enqueued here */
    cublasHandle_t blas;
    void *mem;                /* the one scratch allocation: workspace, then arena */
    void *workspace;          /* cuBLAS workspace (cublasSetWorkspace) */
    size_t workspace_bytes;
    void *arena;              /* op scratch; each op may use all of it */
    size_t arena_bytes;
    size_t n_alloc;           /* successful mem_alloc calls */
    char name[160];
    char err[512];
};

extern "C" {
/* Formats the context's message and returns st. */
kn_status kn_cuda_errf(kn_cuda_ctx *c, kn_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "name: cudaErrorX: text (file:line)"; clears a non-sticky error so the
 * next launch check does not report it again. call is the stringified call:
 * its name is the part before the first '('. */
kn_status kn_cuda_fail_rt(kn_cuda_ctx *c, const char *call, cudaError_t e, const char *file, int line);
kn_status kn_cuda_fail_blas(kn_cuda_ctx *c, const char *call, cublasStatus_t s, const char *file, int line);
/* After a launch: cudaGetLastError (and, under KV_CUDA_SYNC=1, a stream
 * sync unless the stream is capturing a graph). */
kn_status kn_cuda_launched(kn_cuda_ctx *c, const char *kernel, const char *file, int line);

/* ops (contracts in kn_cuda.h / kn.h) */
kn_status kn_cuda_matmul(kn_cuda_ctx *c, float *y, const float *x, const void *w, kn_wtype wt, const float *b,
                         int M, int K, int N);
kn_status kn_cuda_embed(kn_cuda_ctx *c, float *out, const int32_t *tok, int T, const void *table, kn_wtype wt,
                        int V, int C);
kn_status kn_cuda_layernorm(kn_cuda_ctx *c, float *out, const float *x, const float *w, const float *b, int M,
                            int C, float eps);
kn_status kn_cuda_gelu(kn_cuda_ctx *c, float *x, size_t n);
kn_status kn_cuda_fill_rows(kn_cuda_ctx *c, float *x, int rows, size_t stride, int from, int to, float v);
kn_status kn_cuda_add2(kn_cuda_ctx *c, float *y, const float *a, const float *b, size_t n);
kn_status kn_cuda_rope_table(kn_cuda_ctx *c, float *cos_t, float *sin_t, const float *inv_freq,
                             const int32_t *pos, int T, int R);
kn_status kn_cuda_rope(kn_cuda_ctx *c, float *x, int T, int NH, int D, size_t row_stride, int R,
                       const float *cos_t, const float *sin_t);
kn_status kn_cuda_attention(kn_cuda_ctx *c, float *out, const float *q, size_t q_stride, const float *k,
                            const float *v, int T, int NH, int D, int cap, const int32_t *n_vis, float *probs);
kn_status kn_cuda_kv_append(kn_cuda_ctx *c, float *k_cache, float *v_cache, const float *k_src,
                            const float *v_src, size_t src_stride, int T, int NH, int D, int cap,
                            const int32_t *base, int32_t *n_vis);
kn_status kn_cuda_kv_move(kn_cuda_ctx *c, float *k_cache, float *v_cache, int NH, int D, int cap, int src, int dst,
                          int rows);
kn_status kn_cuda_kv_compact(kn_cuda_ctx *c, float *k_cache, float *v_cache, float *score, int32_t *pos,
                             const int32_t *keep, const int32_t *n_keep, int NH, int D, int cap);
kn_status kn_cuda_key_norms(kn_cuda_ctx *c, float *norms, const float *k, const int32_t *n_held, int NH, int D,
                            int cap);
kn_status kn_cuda_attn_head_mean(kn_cuda_ctx *c, float *out, const float *probs, const int32_t *n_vis, int T,
                                 int NH, int cap);
kn_status kn_cuda_attn_accum(kn_cuda_ctx *c, float *acc, const float *probs, const int32_t *n_vis, int T,
                             int NH, int cap, int accumulate);
kn_status kn_cuda_pool1d(kn_cuda_ctx *c, float *out, const float *in, int rows, int m, size_t stride,
                         const int32_t *len, int kernel, int use_max);
kn_status kn_cuda_kivi_quant(kn_cuda_ctx *c, uint8_t *codes, float *mn, float *scale, const float *x, int rows,
                             int cols, size_t ld, int group, int bits, kn_kivi_axis axis);
kn_status kn_cuda_kivi_dequant(kn_cuda_ctx *c, float *out, size_t ld_out, const uint8_t *codes, const float *mn,
                               const float *scale, int rows, int cols, int group, int bits, kn_kivi_axis axis);
kn_status kn_cuda_argmax(kn_cuda_ctx *c, int32_t *idx, const float *logits, int M, int V);
kn_status kn_cuda_softmax(kn_cuda_ctx *c, float *probs, const float *logits, int M, int V, float temperature);
}

/* ---- checks: each returns from the calling kn_status function on failure */
#define KN_CU(c, call)                                                                    \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) return kn_cuda_fail_rt((c), #call, e_, __FILE__, __LINE__); \
    } while (0)
#define KN_BLAS(c, call)                                                                               \
    do {                                                                                               \
        cublasStatus_t s_ = (call);                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) return kn_cuda_fail_blas((c), #call, s_, __FILE__, __LINE__); \
    } while (0)
#define KN_LAUNCHED(c, kernel)                                                   \
    do {                                                                         \
        kn_status st_ = kn_cuda_launched((c), (kernel), __FILE__, __LINE__);     \
        if (st_ != KN_OK) return st_;                                            \
    } while (0)
#define KN_ARG(c, cond, ...)                                                 \
    do {                                                                     \
        if (!(cond)) return kn_cuda_errf((c), KN_ERR_INVAL, __VA_ARGS__);    \
    } while (0)

/* Blocks for a grid-stride loop over n items: enough to fill the device,
 * never more than the items need (n > 0). */
static inline unsigned kn_grid(const kn_cuda_ctx *c, size_t n, int threads) {
    size_t need = (n + (size_t)threads - 1) / (size_t)threads, most = (size_t)c->n_sm * 32;
    return (unsigned)(need < most ? need : most);
}

/* ---- device helpers */
static __device__ __forceinline__ float kn_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block; every thread gets it. blockDim.x a multiple of 32;
 * red: 32 floats of shared memory, reusable when this returns. */
static __device__ __forceinline__ float kn_block_sum(float v, float *red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kn_warp_sum(v);
    if (lane == 0) red[w] = v;
    __syncthreads();
    float r = lane < nw ? red[lane] : 0.0f;
    r = kn_warp_sum(r);
    __syncthreads();
    return r;
}

/* (value, index) "a beats b": larger value, then smaller index. */
static __device__ __forceinline__ void kn_argmax_merge(float *v, int *i, float ov, int oi) {
    if (ov > *v || (ov == *v && oi < *i)) {
        *v = ov;
        *i = oi;
    }
}

/* Exact fp16 / bf16 -> fp32 of the bits u. */
static __device__ __forceinline__ float kn_f16_bits(uint32_t u) { return __half2float(__ushort_as_half((unsigned short)u)); }
static __device__ __forceinline__ float kn_bf16_bits(uint32_t u) { return __uint_as_float(u << 16); }
static __device__ __forceinline__ float kn_ld16(const uint16_t *p, size_t i, int f16) {
    return f16 ? kn_f16_bits(p[i]) : kn_bf16_bits(p[i]);
}

#endif /* KERNELS_CUDA_IMPL_CUH */
