/* layernorm.cu — torch.nn.LayerNorm over the last dim on the device:
 * out(M, C) = (x - mean) / sqrt(var + eps) · w + b, biased variance.
 *
 * One block per row: a block-wide sum gives the mean, a second pass the
 * variance as the mean of (x - mean)² (two passes, not E[x²] - mean², so a
 * large mean does not cancel the variance away), then the output pass. The
 * row (≤ 20 KB for C = 5120) stays in L1/L2 across the three reads. The
 * CPU reference accumulates in double; fp32 block sums differ from it at
 * the 1e-6 relative level. 1/sqrtf rather than rsqrtf: IEEE-rounded, like
 * the CPU. In place (out == x) is allowed: each element is read by the
 * thread that writes it. Faster: one read with the row in registers. */
#include "impl.cuh"

#define LN_THREADS 256

static __global__ void __launch_bounds__(LN_THREADS)
    layernorm_kernel(float *out, const float *x, const float *w, const float *b, int C, float eps) {
    __shared__ float red[32];
    const float *xr = x + (size_t)blockIdx.x * C;
    float *o = out + (size_t)blockIdx.x * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += LN_THREADS) s += xr[i];
    const float mean = kn_block_sum(s, red) / (float)C;
    float v = 0.0f;
    for (int i = threadIdx.x; i < C; i += LN_THREADS) {
        const float d = xr[i] - mean;
        v += d * d;
    }
    const float var = kn_block_sum(v, red) / (float)C;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < C; i += LN_THREADS) o[i] = ((xr[i] - mean) * rstd) * w[i] + b[i];
}

extern "C" kn_status kn_cuda_layernorm(kn_cuda_ctx *c, float *out, const float *x, const float *w, const float *b,
                                       int M, int C, float eps) {
    KN_ARG(c, M >= 0 && C > 0, "layernorm: bad shape M=%d C=%d", M, C);
    if (M == 0) return KN_OK;
    layernorm_kernel<<<(unsigned)M, LN_THREADS, 0, c->stream>>>(out, x, w, b, C, eps);
    KN_LAUNCHED(c, "layernorm_kernel");
    return KN_OK;
}
