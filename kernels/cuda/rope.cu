/* rope.cu — partial rotary embedding, rotate-half (NeoX) convention, on the
 * device: only the first R dims of each head rotate, dim i pairing with
 * i + R/2 (R = 8/16/20/32/64 for Pythia; 20 is not a power of two, so
 * nothing here assumes one). rope_table builds cos/sin(T, R/2) from the
 * positions exactly as kn_rope_table does (fp32 angle = (float)pos ·
 * inv_freq[j]; CUDA's accurate cosf/sinf, with full range reduction, not
 * fast math). rope rotates in place with one thread per (token, head, pair);
 * x rows are row_stride floats apart, so q and k are rotated inside the
 * qkv activation without a copy. */
#include "impl.cuh"

static __global__ void rope_table_kernel(float *cos_t, float *sin_t, const float *inv_freq, const int32_t *pos,
                                         int half, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int j = (int)(i % (size_t)half);
        const float a = (float)pos[i / (size_t)half] * inv_freq[j];
        cos_t[i] = cosf(a);
        sin_t[i] = sinf(a);
    }
}

/* x(T, NH, D) rows row_stride apart; i enumerates (t, head, j < R/2). */
static __global__ void rope_kernel(float *x, int NH, int D, size_t row_stride, int half, const float *cos_t,
                                   const float *sin_t, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int j = (int)(i % (size_t)half);
        const size_t th = i / (size_t)half;
        const int hd = (int)(th % (size_t)NH);
        const size_t t = th / (size_t)NH;
        float *v = x + t * row_stride + (size_t)hd * D;
        const float c = cos_t[t * half + j], s = sin_t[t * half + j];
        const float x1 = v[j], x2 = v[j + half];
        v[j] = x1 * c - x2 * s;
        v[j + half] = x2 * c + x1 * s;
    }
}

extern "C" kn_status kn_cuda_rope_table(kn_cuda_ctx *c, float *cos_t, float *sin_t, const float *inv_freq,
                                        const int32_t *pos, int T, int R) {
    KN_ARG(c, T >= 0 && R >= 2 && R % 2 == 0, "rope_table: bad shape T=%d R=%d", T, R);
    const size_t n = (size_t)T * (size_t)(R / 2);
    if (n == 0) return KN_OK;
    rope_table_kernel<<<kn_grid(c, n, 256), 256, 0, c->stream>>>(cos_t, sin_t, inv_freq, pos, R / 2, n);
    KN_LAUNCHED(c, "rope_table_kernel");
    return KN_OK;
}

extern "C" kn_status kn_cuda_rope(kn_cuda_ctx *c, float *x, int T, int NH, int D, size_t row_stride, int R,
                                  const float *cos_t, const float *sin_t) {
    KN_ARG(c, T >= 0 && NH > 0 && D > 0 && R >= 2 && R % 2 == 0 && R <= D && row_stride >= (size_t)NH * D,
           "rope: bad shape T=%d NH=%d D=%d R=%d row_stride=%zu", T, NH, D, R, row_stride);
    const size_t n = (size_t)T * NH * (size_t)(R / 2);
    if (n == 0) return KN_OK;
    rope_kernel<<<kn_grid(c, n, 256), 256, 0, c->stream>>>(x, NH, D, row_stride, R / 2, cos_t, sin_t, n);
    KN_LAUNCHED(c, "rope_kernel");
    return KN_OK;
}
