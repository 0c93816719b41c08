/* sample.cu — the sampling helpers on the device: argmax over each vocab
 * row (greedy decoding and speculative verification at temperature 0) and
 * softmax(logits / temperature) (temperature 0: one-hot argmax), the
 * contracts of kn_argmax_ref / kn_softmax_ref, which follow
 * engine/sampler.c. top-k / top-p stay on the host: the (V) probability row
 * is copied back (200 KB) and engine/sampler.c cuts and samples it exactly
 * as on the CPU path; a device radix-select would go here if profiles show
 * the copy.
 *
 * One block (512 threads) per row. Ties go to the smallest index, as
 * eng_argmax's strict '>' scan gives: each thread scans its indices upward
 * keeping the first maximum, and the block merge prefers the smaller index
 * on equal values. The softmax sum is a fp32 block reduction (the CPU sums
 * in double: ~1e-6 relative). */
#include "impl.cuh"

#include <math.h>

#define SAMPLE_THREADS 512

/* Block-wide argmax of (v, i); every thread gets the winner. */
static __device__ void block_argmax(float *v, int *i, float *sv, int *si) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, *v, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *i, o);
        kn_argmax_merge(v, i, ov, oi);
    }
    if (lane == 0) {
        sv[w] = *v;
        si[w] = *i;
    }
    __syncthreads();
    *v = sv[0];
    *i = si[0];
    for (int k = 1; k < nw; k++) kn_argmax_merge(v, i, sv[k], si[k]);
    __syncthreads();
}

/* The row's (max, first index of max); V > 0. */
static __device__ void row_argmax(const float *x, int V, float *mx, int *idx, float *sv, int *si) {
    float v = -INFINITY;
    int i = 0x7fffffff;
    if ((int)threadIdx.x < V) {
        v = x[threadIdx.x];
        i = threadIdx.x;
    }
    for (int j = threadIdx.x + SAMPLE_THREADS; j < V; j += SAMPLE_THREADS)
        if (x[j] > v) {
            v = x[j];
            i = j;
        }
    block_argmax(&v, &i, sv, si);
    *mx = v;
    *idx = i;
}

static __global__ void __launch_bounds__(SAMPLE_THREADS) argmax_kernel(int32_t *idx, const float *logits, int V) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float mx;
    int i;
    row_argmax(logits + (size_t)blockIdx.x * V, V, &mx, &i, sv, si);
    if (threadIdx.x == 0) idx[blockIdx.x] = i;
}

static __global__ void __launch_bounds__(SAMPLE_THREADS)
    softmax_kernel(float *probs, const float *logits, int V, float temperature) {
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ float red[32];
    const float *x = logits + (size_t)blockIdx.x * V;
    float *p = probs + (size_t)blockIdx.x * V;
    float mx;
    int am;
    row_argmax(x, V, &mx, &am, sv, si);
    if (temperature == 0.0f) {
        for (int j = threadIdx.x; j < V; j += SAMPLE_THREADS) p[j] = j == am ? 1.0f : 0.0f;
        return;
    }
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += SAMPLE_THREADS) {
        const float e = expf((x[j] - mx) / temperature);
        p[j] = e;
        s += e;
    }
    const float sum = kn_block_sum(s, red);
    for (int j = threadIdx.x; j < V; j += SAMPLE_THREADS) p[j] = p[j] / sum;   // own writes: no barrier needed
}

extern "C" kn_status kn_cuda_argmax(kn_cuda_ctx *c, int32_t *idx, const float *logits, int M, int V) {
    KN_ARG(c, M >= 0 && V > 0, "argmax: bad shape M=%d V=%d", M, V);
    if (M == 0) return KN_OK;
    argmax_kernel<<<(unsigned)M, SAMPLE_THREADS, 0, c->stream>>>(idx, logits, V);
    KN_LAUNCHED(c, "argmax_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_softmax(kn_cuda_ctx *c, float *probs, const float *logits, int M, int V,
                                     float temperature) {
    KN_ARG(c, M >= 0 && V > 0 && temperature >= 0.0f, "softmax: bad shape M=%d V=%d temperature=%g", M, V,
           (double)temperature);
    if (M == 0) return KN_OK;
    softmax_kernel<<<(unsigned)M, SAMPLE_THREADS, 0, c->stream>>>(probs, logits, V, temperature);
    KN_LAUNCHED(c, "softmax_kernel");
    return KN_OK;
}
