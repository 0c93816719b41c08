/* kn_cuda.h — the CUDA backend as a C table of function pointers.
 *
 * Why a table: CPU-only use must never need CUDA libraries at run time. The
 * device code lives in build/libkvcuda.so (the .cu files of kernels/cuda/,
 * linked against cudart, cuBLAS and cuBLASLt); the always-built
 * kernels/cuda_loader.c dlopen()s it on first use and fetches one symbol,
 * kn_cuda_api_get, which returns the const kn_cuda_api below (the vtable
 * idea of ggml-backend). A binary without the library, or a machine without
 * a driver, just sees kn_cuda_load() == NULL or kn_cuda_device_count() == 0
 * with a reason.
 *
 * Contract of every op: the same as the CPU op of the same name in kn.h,
 * with every tensor pointer a device pointer (fp32 activations, fp32
 * accumulation), enqueued asynchronously on the context's stream. Ops never
 * allocate: device buffers come from mem_alloc at setup time (one allocation
 * per lifetime class, none per token), and an op's scratch is the context's
 * arena, sized at ctx_init (ops run in stream order, so each may use all of
 * it). Every CUDA/cuBLAS call and every launch is checked; a failure returns
 * KN_ERR_CUDA and ctx errmsg names the call and where it was made, e.g.
 * "cublasGemmEx: CUBLAS_STATUS_NOT_SUPPORTED (kernels/cuda/matmul.cu:123)".
 * Bad arguments return KN_ERR_INVAL (KN_ERR_UNSUPPORTED for a shape the
 * kernels do not cover) with a message. A context is used by the host
 * thread that created it (ctx_init selects its device for that thread; the
 * ops do not select it again). Set KV_CUDA_SYNC=1 to synchronize after every launch,
 * so an asynchronous fault is reported by the op that caused it.
 *
 * Sampling: argmax and softmax-with-temperature run on the device; top-k /
 * top-p are applied on the host by engine/sampler.c after copy_d2h of the
 * (V) probability row (200 KB for Pythia), the same code as the CPU path.
 *
 * Dimension letters as in kn.h: M rows, K inner, N outputs, T tokens,
 * NH heads, D head_dim, R rotary dims, V vocab, C channels. */
#ifndef KERNELS_KN_CUDA_H
#define KERNELS_KN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "kn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever kn_cuda_api changes; the loader refuses any other.
 * 2: graph_begin/end/launch/free and copy_d2h_async. */
#define KN_CUDA_ABI 5

typedef struct kn_cuda_ctx kn_cuda_ctx;     /* device, stream, cuBLAS handle, arena, last error */
typedef struct kn_cuda_graph kn_cuda_graph; /* an instantiated capture (cudaGraphExec_t), replayable */

typedef struct kn_cuda_api {
    uint32_t abi;              /* KN_CUDA_ABI */
    uint32_t size;             /* sizeof(kn_cuda_api) */
    const char *build_info;    /* "CUDA runtime 13000, sm_80 sm_90 (+compute_90 PTX)" */

    /* ---- discovery and context */
    /* Devices the runtime sees; 0 with the reason in why (e.g.
     * "cudaGetDeviceCount: CUDA driver version is insufficient ..."). */
    int (*device_count)(char *why, size_t n_why);
    /* Selects `device`, creates a non-blocking stream and a cuBLAS handle,
     * and makes the context's one scratch allocation: cuBLAS's workspace
     * (so cuBLAS allocates nothing later) plus an arena of arena_bytes.
     * On failure *out is NULL and err says why. */
    kn_status (*ctx_init)(kn_cuda_ctx **out, int device, size_t arena_bytes, char *err, size_t n_err);
    void (*ctx_free)(kn_cuda_ctx *c);                 /* NULL is a no-op; waits for the stream */
    const char *(*errmsg)(const kn_cuda_ctx *c);      /* last error; borrowed, valid until the next call */
    const char *(*device_name)(const kn_cuda_ctx *c); /* "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" */
    void *(*stream)(kn_cuda_ctx *c);                  /* the cudaStream_t (NULL in the mock) */
    kn_status (*sync)(kn_cuda_ctx *c);                /* waits for every op enqueued so far */
    /* 16-bit-weight GEMMs (M > 8): 2 (default) splits each activation into
     * two 16-bit terms, near-fp32 accuracy; 1 rounds it once, one GEMM. */
    void (*set_lp_split)(kn_cuda_ctx *c, int terms);
    size_t (*alloc_count)(const kn_cuda_ctx *c);      /* successful mem_alloc calls so far */

    /* ---- memory (bytes; d_ = device pointer) */
    kn_status (*mem_alloc)(kn_cuda_ctx *c, void **d_ptr, size_t bytes);   /* cudaMalloc: setup time only */
    void (*mem_free)(kn_cuda_ctx *c, void *d_ptr);                         /* NULL is a no-op */
    kn_status (*host_alloc)(kn_cuda_ctx *c, void **ptr, size_t bytes);    /* pinned host memory */
    void (*host_free)(kn_cuda_ctx *c, void *ptr);
    /* Pageable src may be reused on return; pinned src only after sync. */
    kn_status (*copy_h2d)(kn_cuda_ctx *c, void *d_dst, const void *src, size_t bytes);
    /* Waits for the stream: dst holds the data on return. */
    kn_status (*copy_d2h)(kn_cuda_ctx *c, void *dst, const void *d_src, size_t bytes);
    /* Enqueues the copy and returns: dst must be pinned (host_alloc) and
     * holds the data after the next sync. Capturable (copy_d2h is not). */
    kn_status (*copy_d2h_async)(kn_cuda_ctx *c, void *dst, const void *d_src, size_t bytes);
    kn_status (*copy_d2d)(kn_cuda_ctx *c, void *d_dst, const void *d_src, size_t bytes);
    kn_status (*mem_set)(kn_cuda_ctx *c, void *d_dst, int byte, size_t bytes);

    /* ---- CUDA graphs: capture a sequence of ops once, replay it with one launch.
     * graph_begin puts the stream in capture mode (cudaStreamBeginCapture,
     * cudaStreamCaptureModeThreadLocal): the ops called until graph_end are
     * recorded, not run, and graph_end instantiates them (EndCapture +
     * cudaGraphInstantiate; on failure the capture is ended all the same,
     * nothing is leaked, *out is NULL and errmsg names the call and
     * file:line). graph_launch enqueues one replay on the stream; call sync
     * (or copy_d2h) to wait for it. What may be captured:
     *  - ops, copy_h2d, copy_d2h_async, copy_d2d and mem_set whose host
     *    arguments (pointers, shapes, scalars) are the same at every replay:
     *    a replay re-runs the launches exactly as recorded, so per-step values
     *    (token, position, held count) must reach the ops through device
     *    memory, uploaded inside the graph from pinned memory;
     *  - host<->device copies only from/to pinned memory (host_alloc) at
     *    addresses fixed for the graph's lifetime: the copy node reads or
     *    writes that memory when the replay runs, not when it was recorded;
     *  - never mem_alloc, host_alloc, mem_free, host_free, sync or copy_d2h
     *    (it syncs): CUDA refuses them while capturing, the op returns
     *    KN_ERR_CUDA and the capture is invalidated (graph_end then fails).
     * A failed op inside a capture leaves it open: call graph_end anyway to
     * close it, and free what it returns. KV_CUDA_SYNC=1 does not
     * synchronize while capturing (it would invalidate the capture); it
     * synchronizes after each graph_launch instead. cuBLAS is capturable
     * because ctx_init gave it its workspace (no allocation inside a
     * capture). The ops read the context's arena: replays run in stream
     * order with every other op, like eager calls. */
    kn_status (*graph_begin)(kn_cuda_ctx *c);
    kn_status (*graph_end)(kn_cuda_ctx *c, kn_cuda_graph **out);
    kn_status (*graph_launch)(kn_cuda_ctx *c, kn_cuda_graph *g);
    void (*graph_free)(kn_cuda_ctx *c, kn_cuda_graph *g);   /* NULL is a no-op; a running replay completes */

    /* ---- the ops (contracts in kn.h) */
    /* y(M,N) = x(M,K)·w(N,K)ᵀ + b(N), w fp32 or fp16/bf16 (uint16 bits), b may be NULL. */
    kn_status (*matmul)(kn_cuda_ctx *c, float *y, const float *x, const void *w, kn_wtype wt, const float *b,
                        int M, int K, int N);
    /* out(T,C) = table(V,C)[tok(T)]; out-of-range tokens give NaN rows. */
    kn_status (*embed)(kn_cuda_ctx *c, float *out, const int32_t *tok, int T, const void *table, kn_wtype wt,
                       int V, int C);
    kn_status (*layernorm)(kn_cuda_ctx *c, float *out, const float *x, const float *w, const float *b, int M,
                           int C, float eps);
    kn_status (*gelu)(kn_cuda_ctx *c, float *x, size_t n);
    kn_status (*add2)(kn_cuda_ctx *c, float *y, const float *a, const float *b, size_t n);
    /* kn_fill_rows_ref: x[r·stride + j] = v, r < rows (<= 65535), from <= j < to <= stride. */
    kn_status (*fill_rows)(kn_cuda_ctx *c, float *x, int rows, size_t stride, int from, int to, float v);
    /* cos/sin(T, R/2) from pos(T) and inv_freq(R/2), fp32 angle as kn_rope_table. */
    kn_status (*rope_table)(kn_cuda_ctx *c, float *cos_t, float *sin_t, const float *inv_freq,
                            const int32_t *pos, int T, int R);
    /* x(T, NH, D) rows row_stride floats apart, first R dims rotated in place. */
    kn_status (*rope)(kn_cuda_ctx *c, float *x, int T, int NH, int D, size_t row_stride, int R,
                      const float *cos_t, const float *sin_t);
    /* kn_attention: out(T, NH·D), q(T rows q_stride apart), k, v(NH, cap, D),
     * n_vis(NH·T), probs(NH, T, cap) or NULL. D <= 256. Split-K over the keys
     * (flash-decoding) when NH·T is too small to fill the device. */
    kn_status (*attention)(kn_cuda_ctx *c, float *out, const float *q, size_t q_stride, const float *k,
                           const float *v, int T, int NH, int D, int cap, const int32_t *n_vis, float *probs);
    /* kn_kv_append_ref; base(NH) and n_vis(NH·T) on the device. */
    kn_status (*kv_append)(kn_cuda_ctx *c, float *k_cache, float *v_cache, const float *k_src,
                           const float *v_src, size_t src_stride, int T, int NH, int D, int cap,
                           const int32_t *base, int32_t *n_vis);
    /* kn_kv_move_ref: rows [src, src+rows) -> [dst, dst+rows) of every head,
     * overlap-safe; KN_ERR_INVAL for a range outside [0, cap). */
    kn_status (*kv_move)(kn_cuda_ctx *c, float *k_cache, float *v_cache, int NH, int D, int cap, int src, int dst,
                         int rows);
    /* kn_kv_compact_ref; keep(NH, cap) and n_keep(NH) on the device. */
    kn_status (*kv_compact)(kn_cuda_ctx *c, float *k_cache, float *v_cache, float *score, int32_t *pos,
                            const int32_t *keep, const int32_t *n_keep, int NH, int D, int cap);
    kn_status (*key_norms)(kn_cuda_ctx *c, float *norms, const float *k, const int32_t *n_held, int NH, int D,
                           int cap);
    kn_status (*attn_accum)(kn_cuda_ctx *c, float *acc, const float *probs, const int32_t *n_vis, int T, int NH,
                            int cap, int accumulate);
    /* kn_attn_head_mean_ref (TOVA's score); probs, n_vis on the device. */
    kn_status (*attn_head_mean)(kn_cuda_ctx *c, float *out, const float *probs, const int32_t *n_vis, int T, int NH,
                                int cap);
    kn_status (*pool1d)(kn_cuda_ctx *c, float *out, const float *in, int rows, int m, size_t stride,
                        const int32_t *len, int kernel, int use_max);
    kn_status (*kivi_quant)(kn_cuda_ctx *c, uint8_t *codes, float *mn, float *scale, const float *x, int rows,
                            int cols, size_t ld, int group, int bits, kn_kivi_axis axis);
    kn_status (*kivi_dequant)(kn_cuda_ctx *c, float *out, size_t ld_out, const uint8_t *codes, const float *mn,
                              const float *scale, int rows, int cols, int group, int bits, kn_kivi_axis axis);
    kn_status (*argmax)(kn_cuda_ctx *c, int32_t *idx, const float *logits, int M, int V);
    kn_status (*softmax)(kn_cuda_ctx *c, float *probs, const float *logits, int M, int V, float temperature);
} kn_cuda_api;

/* Exported by libkvcuda.so (the only symbol it exports). */
typedef const kn_cuda_api *(*kn_cuda_api_get_fn)(void);
const kn_cuda_api *kn_cuda_api_get(void);

/* The loader (kernels/cuda_loader.c, always linked): the table, or NULL
 * with kn_cuda_unavailable_reason() saying why. Thread-safe; the library is
 * loaded once and never unloaded. Search order: $KV_CUDA_LIB (only that,
 * when set), then libkvcuda.so beside /proc/self/exe, then in its parent
 * directory (tests live in build/tests/), then the plain soname. */
const kn_cuda_api *kn_cuda_load(void);

#ifdef __cplusplus
}
#endif

#endif /* KERNELS_KN_CUDA_H */
