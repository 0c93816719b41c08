/* scores.cu — the reductions the KV policies score keys with, on the
 * device: key L2 norms per (head, slot) (knorm/l2 keep the lowest), the
 * attention each key received summed over a chunk's queries (h2o's
 * accumulated attention; snapkv/pyramidkv's window-query column sums, with
 * the window's probs from attention), and 1-D pooling of those sums
 * (snapkv's avg/max pool, odd kernel, stride 1, padding kernel/2).
 *
 * Sums run in the same order as the CPU references (kernels/cpu/kv_ops.c):
 * attn_accum adds queries in t order, pool1d adds the window left to
 * right, so those two agree with the CPU bit for bit; key norms reduce
 * across a warp (one warp per key), which differs in the last bits. */
#include "impl.cuh"

#include <math.h>

#define NORM_WARPS 8

/* grid (ceil(cap / NORM_WARPS), NH): warp w of block b owns slot b·8 + w. */
static __global__ void key_norms_kernel(float *norms, const float *k, const int32_t *n_held, int D, int cap) {
    const int h = blockIdx.y, j = blockIdx.x * NORM_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int n = n_held[h];
    if (j >= n || j >= cap) return;
    const float *kr = k + ((size_t)h * cap + j) * D;
    float ss = 0.0f;
    for (int d = lane; d < D; d += 32) ss += kr[d] * kr[d];
    ss = kn_warp_sum(ss);
    if (lane == 0) norms[(size_t)h * cap + j] = sqrtf(ss);
}

/* grid (ceil(cap / 256), NH): thread per (head, slot), queries in order. */
static __global__ void attn_accum_kernel(float *acc, const float *probs, const int32_t *n_vis, int T, int cap,
                                         int accumulate) {
    const int h = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cap) return;
    float *a = acc + (size_t)h * cap + j;
    float s = accumulate ? *a : 0.0f;   // added one query at a time, as the CPU policy does
    int any = 0;
    for (int t = 0; t < T; t++)
        if (j < n_vis[(size_t)h * T + t]) {
            s += probs[((size_t)h * T + t) * cap + j];
            any = 1;
        }
    if (any) *a = s;
}

/* grid (ceil(cap / 256)): thread per slot, heads in order (the CPU's sum). */
static __global__ void attn_head_mean_kernel(float *out, const float *probs, const int32_t *n_vis, int T, int NH,
                                             int cap) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int nv = n_vis[T - 1];
    if (j >= nv || j >= cap) return;
    float sum = 0.0f;
    for (int h = 0; h < NH; h++) sum += probs[((size_t)h * T + T - 1) * cap + j];
    out[j] = sum / (float)NH;
}

extern "C" kn_status kn_cuda_attn_head_mean(kn_cuda_ctx *c, float *out, const float *probs, const int32_t *n_vis,
                                            int T, int NH, int cap) {
    KN_ARG(c, T > 0 && NH > 0 && cap > 0, "attn_head_mean: bad shape T=%d NH=%d cap=%d", T, NH, cap);
    attn_head_mean_kernel<<<(unsigned)((cap + 255) / 256), 256, 0, c->stream>>>(out, probs, n_vis, T, NH, cap);
    KN_LAUNCHED(c, "attn_head_mean_kernel");
    return KN_OK;
}

/* grid (ceil(m / 256), rows) */
static __global__ void pool1d_kernel(float *out, const float *in, int m, size_t stride, const int32_t *len,
                                     int kernel, int use_max) {
    const int r = blockIdx.y, i = blockIdx.x * blockDim.x + threadIdx.x;
    int n = len ? len[r] : m;
    n = n > m ? m : n;
    if (i >= n) return;
    const float *s = in + (size_t)r * stride;
    const int pad = kernel / 2, a = i - pad < 0 ? 0 : i - pad, b = i + pad >= n ? n - 1 : i + pad;
    float v;
    if (use_max) {
        v = -INFINITY;
        for (int j = a; j <= b; j++) v = s[j] > v ? s[j] : v;
    } else {
        v = 0.0f;
        for (int j = a; j <= b; j++) v += s[j];
        v = v / (float)kernel;   // zero padding counts (count_include_pad)
    }
    out[(size_t)r * stride + i] = v;
}

extern "C" kn_status kn_cuda_key_norms(kn_cuda_ctx *c, float *norms, const float *k, const int32_t *n_held, int NH,
                                       int D, int cap) {
    KN_ARG(c, NH > 0 && NH <= 65535 && D > 0 && cap > 0, "key_norms: bad shape NH=%d D=%d cap=%d", NH, D, cap);
    const dim3 grid((unsigned)((cap + NORM_WARPS - 1) / NORM_WARPS), (unsigned)NH);
    key_norms_kernel<<<grid, NORM_WARPS * 32, 0, c->stream>>>(norms, k, n_held, D, cap);
    KN_LAUNCHED(c, "key_norms_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_attn_accum(kn_cuda_ctx *c, float *acc, const float *probs, const int32_t *n_vis, int T,
                                        int NH, int cap, int accumulate) {
    KN_ARG(c, T >= 0 && NH > 0 && NH <= 65535 && cap > 0, "attn_accum: bad shape T=%d NH=%d cap=%d", T, NH, cap);
    if (T == 0) return KN_OK;
    const dim3 grid((unsigned)((cap + 255) / 256), (unsigned)NH);
    attn_accum_kernel<<<grid, 256, 0, c->stream>>>(acc, probs, n_vis, T, cap, accumulate);
    KN_LAUNCHED(c, "attn_accum_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_pool1d(kn_cuda_ctx *c, float *out, const float *in, int rows, int m, size_t stride,
                                    const int32_t *len, int kernel, int use_max) {
    KN_ARG(c, rows >= 0 && rows <= 65535 && m >= 0 && stride >= (size_t)m && kernel >= 1 && kernel % 2 == 1,
           "pool1d: bad shape rows=%d m=%d stride=%zu kernel=%d (odd)", rows, m, stride, kernel);
    if (rows == 0 || m == 0) return KN_OK;
    const dim3 grid((unsigned)((m + 255) / 256), (unsigned)rows);
    pool1d_kernel<<<grid, 256, 0, c->stream>>>(out, in, m, stride, len, kernel, use_max);
    KN_LAUNCHED(c, "pool1d_kernel");
    return KN_OK;
}
